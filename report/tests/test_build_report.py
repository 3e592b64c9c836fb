"""build_report.py on a hand-made run folder: every template slot is filled from the files, the verdicts follow the
numbers, the figures and generations land in assets/ as one set, a failing build leaves the old report whole, and
missing inputs give one clear line. The tokenizer examples are checked against hand-verified GPT-2 ids."""
import json
import string
from pathlib import Path

import pytest

import build_report as br
import fileio
from handmade import log
import questions
import sections


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


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


def bpe_summary() -> dict:
    """The fields of bpe/train.py's summary.json (format llmhw-bpe-summary v2) that the report reads."""
    variant = lambda name, en, zh: {"name": name, "what": f"{name} variant", "english": en, "chinese": zh}  # noqa
    return {"vocab_size": 300, "pattern": "none", "train_seconds": 0.5, "corpus_bytes": 1000, "n_tokens": 400,
            "bytes_per_token": 2.5, "roundtrip_ok": True, "first_tokens": [[0, "\\x00"], [1, "\\x01"]],
            "last_tokens": [[298, "北京"], [299, "大学"]],
            "comparison": {"english": {"ours": 937, "gpt2": 185, "homework": 938, "chars": 953},
                           "chinese": {"ours": 118, "gpt2": 306, "homework": 113, "chars": 149}},
            "homework": {"published": {"ours": {"english": 938, "chinese": 113},
                                       "gpt2": {"english": 185, "chinese": 306}},
                         "alphabet": {"size": 153, "first_tokens": ["\\n", " ", "%"],
                                      "first_tokens_match_published": True},
                         "merges": {"homework": 871, "ours": 768, "same_leading_merges": 107, "shared_tokens": 742},
                         "missing_bytes": {"english": {"bytes": 4, "chars": {"j": 3, "z": 1}}},
                         "variants": [variant("homework", 938, 113), variant("ours", 937, 118)],
                         "effects": {"dropped_bytes": {"english": -4, "chinese": 0}},
                         "reproduces_published": True}}


def sweep_run(run: Path, name: str, rank: int, seed: int, evals: list[float]):
    train = [3.0 - 0.1 * i for i in range(20)]
    d = run / "sweep" / name
    write_jsonl(d / "log.jsonl", log(train, evals, every=5))
    write_json(d / "summary.json", {"lora_dim": rank, "seed": seed, "final_eval_loss": evals[-1],
                                    "final_train_loss": train[-1], "trainable_params": 1000 * (rank or 100),
                                    "total_params": 100000, "wall_seconds": 12.0, "train_examples": 48,
                                    "eval_examples": 16, "steps": 20, "steps_per_epoch": 5, "epochs": 4.0})
    write_json(d / "config.json", {"seed": seed, "lora_dim": rank, "max_examples": 64, "eval_ratio": 0.25,
                                   "data_seed": 0, "epochs": 4, "lr": 1e-3, "lr_warmup_ratio": 0.1,
                                   "batch_size": 8, "gradient_accumulation_steps": 1, "max_length": 128,
                                   "eval_interval": 5, "template": "homework", "lora_alpha": 32.0,
                                   "group_by_length": True, "weight_decay": 0.0})


# val nats per token of the count models and the GPT: the GPT lies between the 3-gram and the 4-gram
BASELINES = {"1-gram": 6.8, "2-gram": 5.5, "3-gram": 5.2, "4-gram": 5.0, "5-gram": 4.9, "model": 5.1}


def fake_run(run: Path, full_overfits: bool, corpus_file: Path):
    tiny_tokenizer_json(run / "bpe/tokenizer.json")
    write_json(run / "bpe/summary.json", bpe_summary())
    write_json(run / "corpus/split.json", {
        "data": {"records": 100}, "settings": {"data_seed": 0},
        "counts": {"train": 48, "eval": 16, "heldout": 4, "unused": 32},
        "pretrain": {"file": corpus_file.name, "records": 30, "left_out": {"empty": 1, "repeated": 1}}})
    write_json(run / "tokenizer/summary.json", {"vocab_size": 4096, "bytes_per_token": 3.6})
    write_json(run / "shards/meta.json", {"sources": [str(corpus_file)], "vocab_size": 4096, "val_fraction": 0.1,
                                          "train": {"tokens": 9000}, "val": {"tokens": 1000}})
    write_jsonl(run / "pretrain/log.jsonl", [
        {"step": 0, "loss": 8.3}, {"step": 10, "loss": 5.0}, {"step": 10, "val_loss": 5.2},
        {"step": 10, "hellaswag_acc_norm": 0.26, "hellaswag_n": 100},
        {"step": 10, "sample": "The cat sat on the mat and the dog sat on the rug."}])
    write_json(run / "pretrain/summary.json", {
        "final_val_loss": 5.2, "final_train_loss": 5.0, "steps": 10, "tokens": 40960, "wall_time_s": 123.4,
        "train_time_s": 100.0, "tokens_per_s": 409.6, "params": 4273664, "world_size": 1, "device": "cpu",
        "model_config": {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 256, "vocab_size": 4096},
        "train_config": {"optimizer": "muon", "lr": 0.004, "warmup_steps": 100, "min_lr_ratio": 0.1,
                         "total_batch_size": 2048}})
    full = [3.0, 2.6, 2.4, 2.5, 2.7] if full_overfits else [3.0, 2.8, 2.6, 2.5, 2.45]
    sweep_run(run, "r0", 0, 42, full)
    for rank, last in [(1, 2.62), (8, 2.61), (32, 2.60)]:
        sweep_run(run, f"r{rank}", rank, 42, [3.0, 2.8, 2.7, 2.65, last])
    sweep_run(run, "r8_seed1234", 8, 1234, [3.0, 2.8, 2.7, 2.65, 2.60])
    results = [{"instruction": f"Name a colour ({i}).", "input": "",
                "responses": {"base": "blue blue blue", "full finetune": "Red.", "LoRA r=8": "Green is a colour."},
                "details": {"base": {"tokens": 30, "stop": "max_new_tokens"},
                            "full finetune": {"tokens": 3 + i % 2, "stop": "eos"},
                            "LoRA r=8": {"tokens": 9 + i % 3, "stop": "eos"}}} for i in range(6)]
    write_json(run / "generations.json", {"results": results})
    # nats per token -> bits per byte: x * 1000 tokens / 3600 bytes / ln 2
    per_byte = lambda nats: nats * 1000 / 3600 / 0.6931471805599453  # noqa: E731
    write_json(run / "baselines.json", {
        "kind": "llmhw-ngram-baselines", "data": str(run / "shards"), "val_tokens": 1000, "val_bytes": 3600,
        "train_tokens": 9000, "vocab_size": 4096, "discount": 0.75,
        "baselines": {name: {"nats_per_token": x, "bits_per_byte": per_byte(x)} for name, x in BASELINES.items()}})
    write_jsonl(run / "pipeline.jsonl", [{"stage": "bpe", "command": "python bpe/train.py", "seconds": 1.0,
                                          "returncode": 0, "preset": "cpu", "load_avg": [0.5, 0.4, 0.3]}])


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "pretrain_text.txt"
    path.write_text("The cat sat on the mat.\n\nThe dog sat on the rug.\n")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus_file):
    """One report built from a run where full finetuning overfits: (run folder, output folder, README text)."""
    root = tmp_path_factory.mktemp("built")
    fake_run(root / "run", full_overfits=True, corpus_file=corpus_file)
    return root / "run", root / "out", br.build(root / "run", root / "out").read_text()


def test_every_slot_filled_from_the_files(built):
    run, out, text = built
    assert "$" not in text.replace("$$", "")          # no slot left: render() refuses missing ones too
    for name in ("pretrain_loss.png", "sweep_curves.png", "full_finetuning.png"):
        assert (out / "assets" / name).stat().st_size > 1000 and f"assets/{name}" in text
    assert len(json.loads((out / "assets/generations.json").read_text())["results"]) == 6
    assert json.loads((out / "assets/findings.json").read_text())["full_overfits"]["min_step"] == 10
    # numbers come from the files
    assert "| English | 953 | 937 | 185 | 938 | 185 |" in text and "| Chinese | 149 | 118 | 306 | 113 | 306 |" in text
    assert "153 byte values" in text and "871 merges" in text and "`j` ×3" in text
    assert "**48 train + 16 eval** records" in text and "| `pretrain_text.txt` |" in text
    assert "the run's 40,960 tokens are 455% of the training tokens" in text   # 40,960 seen / 9,000 in the shards
    assert ("| optimizer and schedule | Muon (blocks' matrices) + AdamW (the rest), peak lr 0.004 after 100 warm-up "
            "steps, cosine to 10%; 2,048 tokens a step |") in text
    assert "0.2600 ± 0.0439" in text and "`python bpe/train.py` (1 s)" in text
    assert "perplexity **181**" in text and "92% of the 13 words in its samples occur in its corpus" in text
    # the count baselines, orders 1-5 beside the GPT, against the best (the 5-gram, 4.9 nats): uniform = 12 bits
    # per token = 3.333 bits per byte at 1000 tokens / 3600 bytes
    assert "| model | val nats / token | val bits / byte | vs the 5-gram (nats) |" in text
    assert "| uniform over the 4,096 tokens | 8.318 | 3.333 | +3.418 |" in text
    assert "| 1-gram counts | 6.800 | 2.725 | +1.900 |" in text and "| 5-gram counts | 4.900 | 1.964 | +0.000 |" in text
    assert "| **this GPT** (exported, scored by transformers) | 5.100 | 2.044 | +0.200 |" in text
    assert ("**between the 3-gram and the 4-gram: 0.20 nats per token worse than the best count model, the "
            "5-gram**") in text and "interpolated Kneser-Ney, discount 0.75" in text
    assert "(checked from each run's config.json, summary.json and log.jsonl): **yes**" in text


def test_verdicts_in_the_report_follow_the_numbers(built, tmp_path, corpus_file):
    text = built[2]
    assert "**Full finetuning overfits**: **Reproduced**" in text and "**2.4000 at step 10**" in text
    assert "**LoRA's eval loss falls along with its train loss**: **Reproduced**" in text
    # ranks end at 2.62 / 2.61 / 2.60 (spread 0.02), r=8 with two seeds at 2.61 / 2.60 (0.01): ratio 2.0 -> alike
    assert "**Ranks look alike**: **Reproduced**" in text and "2.0× the seed spread" in text
    assert "**LoRA answers are longer**: **Reproduced**" in text
    assert "LoRA r=8 **10.0** vs full finetune **3.5**" in text
    run = tmp_path / "run"
    fake_run(run, full_overfits=False, corpus_file=corpus_file)
    values, _ = br.report_values(run)
    assert "**Full finetuning overfits**: **Not reproduced at this scale**" in values["findings"]


def test_render_refuses_missing_and_unused_slots():
    assert br.render("a $x b ${y}", {"x": 1, "y": "2"}) == "a 1 b 2"
    with pytest.raises(sections.ReportInputError, match=r"without values: \['y'\]"):
        br.render("a $x b ${y}", {"x": 1})
    with pytest.raises(sections.ReportInputError, match=r"values without slots: \['z'\]"):
        br.render("a $x", {"x": 1, "z": 2})


def test_template_slots_are_exactly_the_computed_values(built):
    values, _ = br.report_values(built[0])
    assert set(string.Template(br.TEMPLATE.read_text()).get_identifiers()) == set(values)


def test_failed_build_leaves_the_old_report_whole(built, tmp_path, corpus_file, monkeypatch):
    _, out, _ = built
    run = tmp_path / "run"
    fake_run(run, full_overfits=False, corpus_file=corpus_file)   # a report that would read differently
    before = {p.name: p.read_bytes() for p in [out / "README.md", *sorted((out / "assets").iterdir())]
              if p.name != fileio.LOCK}

    def boom(*a, **k):
        raise RuntimeError("killed while drawing")
    monkeypatch.setattr(br, "plot_sweep", boom)   # after the first figure is drawn
    with pytest.raises(RuntimeError):
        br.build(run, out)
    after = {p.name: p.read_bytes() for p in [out / "README.md", *sorted((out / "assets").iterdir())]
             if p.name != fileio.LOCK}
    assert after == before and sorted(p.name for p in out.iterdir()) == ["README.md", "assets"]


def test_missing_input_is_one_clear_error(tmp_path, corpus_file):
    run = tmp_path / "run"
    fake_run(run, full_overfits=True, corpus_file=corpus_file)
    (run / "pretrain/summary.json").unlink()
    with pytest.raises(sections.ReportInputError,
                       match=r"pretrain/summary.json \(written by pipeline stage 'pretrain'"):
        br.report_values(run)
    assert br.main(["--run_dir", str(run), "--out_dir", str(tmp_path / "out")]) == 2


def test_where_the_model_stands_among_the_count_models():
    def base(model):
        return {"baselines": {**{k: {"nats_per_token": v} for k, v in BASELINES.items() if k != "model"},
                              "model": {"nats_per_token": model}}}
    assert sections.against_counts(base(4.5)) == ("**better than every count model: 0.40 nats per token below the "
                                                  "best, the 5-gram**, so it uses what n-gram counts of the same text "
                                                  "cannot")
    assert sections.against_counts(base(6.0)).startswith("**between the 1-gram and the 2-gram: 1.10 nats")
    assert sections.against_counts(base(7.0)) == ("**worse than every count model** (2.10 nats per token above the "
                                                  "5-gram)")


def test_tokenizer_questions_computed_with_gpt2(tmp_path):
    gpt2 = questions.gpt2_encoding()
    assert gpt2.encode_ordinary(" SolidGoldMagikarp") == [43453] and gpt2.encode_ordinary("Hello world") == [15496, 995]
    tiny_tokenizer_json(tmp_path / "tokenizer.json")
    m = questions.FileTokenizer(tmp_path / "tokenizer.json").byte_of   # byte-level character -> byte
    assert sorted(m.values()) == list(range(256)) and len(m) == 256 and m["Ġ"] == ord(" ")
    # the same map as GPT-2's own files: encoder.json's single-byte tokens are these characters
    encoder = json.loads(fileio.find("gpt2/encoder.json").read_text())
    assert all(gpt2.decode_single_token_bytes(encoder[c]) == bytes([b]) for c, b in m.items())
    v = questions.examples(gpt2, gpt2)
    assert v["q_magikarp"] == "1 token: `␣SolidGoldMagikarp`" and v["q_eot_id"] == "[50256]"
    assert v["q_ord_bei"] == "21271"


def test_gpt2_files_changed_at_the_same_path_are_read_anew(tmp_path, monkeypatch):
    # tiktoken caches the files it reads keyed by their path, not their content; gpt2_encoding turns the cache off
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2/vocab.bpe").write_bytes(fileio.find("gpt2/vocab.bpe").read_bytes())
    (tmp_path / "gpt2/encoder.json").write_text("{}")
    with pytest.raises(AssertionError):   # tiktoken: the two files disagree
        questions.gpt2_encoding(tmp_path)
    (tmp_path / "gpt2/encoder.json").write_bytes(fileio.find("gpt2/encoder.json").read_bytes())
    assert questions.gpt2_encoding(tmp_path).encode_ordinary("Hello world") == [15496, 995]
    assert not (tmp_path / "cache").exists()


def test_length_finding_compares_answers_that_end_and_says_how_many_do():
    def result(stops, k):
        return {"instruction": f"Say {k}.", "responses": {n: "x" for n in stops},
                "details": {n: {"tokens": 96 if s == "max_new_tokens" else 10 + k * (n == "lora"), "stop": s}
                            for n, s in stops.items()}}
    stops = [{"base": "max_new_tokens", "full": "eos", "lora": "max_new_tokens"}] * 2
    stops += [{"base": "eos", "full": "eos", "lora": "eos"}] * 6
    gens = {"results": [result(st, k) for k, st in enumerate(stops)],
            "config": {"greedy": False, "temperature": 0.7, "top_k": 50, "top_p": 0.9, "seed": 42,
                       "max_new_tokens": 96, "template": "homework"}}
    lengths, ended = sections.answers(gens)
    assert {k: sum(v) for k, v in ended.items()} == {"base": 6, "full": 8, "lora": 6}
    v = sections.fd.lora_longer_verdict(lengths, lora="lora", full="full", base="base", ended=ended)
    text = sections.longer_finding(v)
    # 6 pairs where both ended: lora 12..17 vs full 10 -> mean difference 4.5, so longer; the cut 96s are left out
    assert "base **6/8**, full **8/8**, lora **6/8**" in text and "On the 6 instructions" in text
    assert "mean length lora **14.5** vs full **10.0** tokens" in text and "**Reproduced**" in text
    g = sections.generation_values(gens, {})
    assert g["ended_line"] == "base 6/8; full 8/8; lora 6/8"
    assert g["gen_settings"].startswith("sampling at temperature 0.7, top-k 50, top-p 0.9, seed 42; at most 96 new")
    with pytest.raises(KeyError):   # a generations.json without generate.py's details: build_report's one line
        sections.answers({"results": [{"responses": {"a": "x"}}]})


def test_corpus_story_says_how_training_reads_the_shards(built):
    run = built[0]
    summary = json.loads((run / "pretrain/summary.json").read_text())
    try:
        write_json(run / "pretrain/summary.json", {**summary, "train_config": {"data_order": "shuffle"}})
        story = sections.corpus_values(br.read_run(run))["corpus_story"]
    finally:
        write_json(run / "pretrain/summary.json", summary)
    assert "random order" in story and "the run's 40,960 tokens are 4.55 passes over the training tokens" in story


