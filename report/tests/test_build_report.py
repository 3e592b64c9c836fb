"""build_report.py on a synthetic run directory: figures appear, numbers come from the files, the tokenizer
examples are computed (checked against hand-verified GPT-2 ids), and missing inputs give one clear error."""
import json
from pathlib import Path

import pytest

import build_report as br


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tiny_tokenizer_json(path: Path):
    """A byte-level BPE tokenizer.json made with HF tokenizers (stands in for bpe/train.py's export)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(["北京大学 hello world"] * 50, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


def fake_run(run: Path, full_overfits: bool):
    tiny_tokenizer_json(run / "bpe/tokenizer.json")
    (run / "bpe/summary.json").write_text(json.dumps({
        "vocab_size": 300, "pattern": "none", "train_seconds": 0.5, "corpus_bytes": 1000, "n_tokens": 400,
        "bytes_per_token": 2.5, "roundtrip_ok": True, "first_tokens": [[0, "\\x00"], [1, "\\x01"]],
        "last_tokens": [[298, "北京"], [299, "大学"]],
        "comparison": {"english": {"ours": 900, "gpt2": 180, "chars": 800},
                       "chinese": {"ours": 110, "gpt2": 300, "chars": 120}}}))
    write_jsonl(run / "pretrain/log.jsonl", [{"step": 0, "loss": 10.8}, {"step": 10, "loss": 6.0},
                                             {"step": 10, "val_loss": 6.2},
                                             {"step": 10, "hellaswag_acc_norm": 0.26, "hellaswag_n": 100},
                                             {"step": 10, "sample": "ROMEO: to be"}])
    (run / "pretrain/summary.json").write_text(json.dumps({  # the keys pretrain/train.py writes
        "final_val_loss": 6.2, "steps": 10, "wall_time_s": 123.4, "train_time_s": 100.0, "tokens_per_s": 1861.0,
        "model_config": {"n_layer": 4, "n_embd": 128, "block_size": 128}}))
    (run / "shards").mkdir()
    (run / "shards/meta.json").write_text(json.dumps({"sources": ["/data/tinyshakespeare.txt"]}))
    full = [3.0, 2.5, 2.7, 2.9] if full_overfits else [3.0, 2.8, 2.6, 2.5]
    for r, curve in {0: full, 4: [3.0, 2.9, 2.8, 2.7], 8: [3.0, 2.9, 2.8, 2.69]}.items():
        rows = [{"step": 10 * i, "train_loss": v, "lr": 1e-3} for i, v in enumerate(curve)]
        rows += [{"step": 10 * i, "eval_loss": v} for i, v in enumerate(curve)]
        write_jsonl(run / f"sweep/r{r}/log.jsonl", rows)
        (run / f"sweep/r{r}/summary.json").write_text(json.dumps({
            "lora_dim": r, "final_eval_loss": curve[-1], "trainable_params": 1000 * (r or 100),
            "total_params": 200000, "wall_seconds": 12.0, "peak_memory_mb": 300}))
    (run / "generations.json").write_text(json.dumps({"results": [
        {"instruction": "Name a color.", "responses": {"base": "blue?", "full": "Red.", "lora r=8": "Green."}}]}))
    write_jsonl(run / "pipeline.jsonl", [{"stage": "bpe", "command": "python bpe/train.py", "seconds": 1.0,
                                          "returncode": 0}])


def test_report_from_files(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    fake_run(run, full_overfits=True)
    text = br.build(run, out).read_text()
    assert (out / "pretrain_loss.png").stat().st_size > 1000 and (out / "sweep_curves.png").stat().st_size > 1000
    # numbers come from the files
    assert "| English | 800 | 900 | 180 | 938 | 185 |" in text
    assert "0.2600" in text and "`python bpe/train.py` (1 s)" in text
    assert "| wall_time_s | 123.4000 |" in text and "Pretraining GPT-2 (4 layers, 128 dims, T=128) on tinyshakespeare.txt" in text
    assert "one CPU-scale run" in text and "(CPU scale)" in text
    assert "it overfits" in text and "Green." in text
    # computed tokenizer facts, checked against hand-verified values (ord, and GPT-2 ids from the OpenAI files:
    # " SolidGoldMagikarp" is the single token 43453, "<|endoftext|>" is 50256)
    assert "`ord(\"北\")` = 21271" in text and "`ord(\"大\")` = 22823" in text and '= "大模型"' in text
    assert "1 token: `␣SolidGoldMagikarp`" in text
    assert "[50256]" in text
    assert br.TiktokenGPT2().encode(" SolidGoldMagikarp") == [43453]


def test_verdict_follows_the_numbers(tmp_path):
    run = tmp_path / "run"
    fake_run(run, full_overfits=False)
    logs, _ = br.load_sweep(run)
    v = br.sweep_verdict(logs)
    assert "does **not**" in v and "it overfits" not in v
    assert "ranks [4, 8] of [4, 8]" in v


def test_missing_input_is_one_clear_error(tmp_path):
    run = tmp_path / "run"
    fake_run(run, full_overfits=True)
    (run / "pretrain/summary.json").unlink()
    with pytest.raises(br.ReportInputError, match=r"pretrain/summary.json \(written by pipeline stage 'pretrain'"):
        br.build(run, tmp_path / "out")
    assert br.main(["--run_dir", str(run), "--out_dir", str(tmp_path / "out")]) == 2


def test_byte_level_map_is_a_bijection():
    m = br.bytes_to_unicode()
    assert sorted(m) == list(range(256)) and len(set(m.values())) == 256
    assert m[ord(" ")] == "Ġ"  # GPT-2's well-known space character


def test_gpu_run_is_labelled_gpu(tmp_path):
    run = tmp_path / "run"
    fake_run(run, full_overfits=True)
    write_jsonl(run / "pipeline.jsonl", [{"stage": "pretrain", "command": "torchrun ...", "seconds": 9.0,
                                          "returncode": 0, "preset": "gpu"}])
    (run / "shards/meta.json").write_text(json.dumps({"sources": ["HuggingFaceFW/fineweb-edu:sample-10BT:train"]}))
    text = br.build(run, tmp_path / "out").read_text()
    assert "one GPU-scale run" in text and "(GPU scale)" in text and "CPU scale" not in text
    assert "on HuggingFaceFW/fineweb-edu:sample-10BT:train" in text
