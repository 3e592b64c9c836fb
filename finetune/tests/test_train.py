"""train.py, sweep.py and generate.py end to end on a tiny random GPT-2 built locally, plus their bad inputs."""
import contextlib
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2, user_error

import data
import generate
import lora
import train
from ddp import setup_ddp

HERE = Path(__file__).resolve().parents[1]


def flags(model_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir)] + (["--out_dir", str(out)] if out else []) + [
            "--max_examples", "48",
            "--eval_ratio", "0.25", "--batch_size", "4", "--eval_batch_size", "4", "--max_length", "96",
            "--max_steps", "8", "--eval_interval", "4", "--lr", "1e-2", *extra]


def test_target_loss_equals_hf_loss_fast_and_generic(gpt2_tok):
    model = tiny_gpt2(n_embd=16)
    examples, _ = data.tokenize(data.check_records([
        {"instruction": "Add.", "input": "1 2", "output": "3"},
        {"instruction": "Write a long answer.", "output": "word " * 20}], "t"), gpt2_tok, "homework", 64)
    batch = data.collate(examples, gpt2_tok.eos_token_id)
    fast = train.TargetLoss(model)
    assert fast.fast
    s, n = fast(**batch)
    assert n == (batch["labels"][:, 1:] != -100).sum()
    hf = model(**batch).loss  # transformers' own shifted, -100-masked mean
    torch.testing.assert_close(s / n, hf, atol=1e-5, rtol=1e-5)
    fast.fast = False
    s2, _ = fast(**batch)
    torch.testing.assert_close(s2, s, atol=1e-4, rtol=1e-5)


def test_lr_schedule_warmup_then_cosine_to_zero():
    lr = lambda step, total, warmup: train.get_lr(step, 1.0, warmup, total)  # noqa: E731
    assert lr(0, 100, 10) == pytest.approx(0.1)
    assert lr(9, 100, 10) == pytest.approx(1.0)
    assert lr(10, 100, 10) == pytest.approx(1.0)
    assert lr(55, 100, 10) == pytest.approx(0.5)
    assert lr(100, 100, 10) == pytest.approx(0.0)
    assert lr(0, 5, 0) == pytest.approx(1.0)
    assert train.get_lr(55, 3e-4, 10, 100) == pytest.approx(1.5e-4)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r4"
    summary = train.main(flags(tiny_model_dir, out, "--lora_dim", "4"))
    return out, summary


def test_lora_run_loss_falls_and_files_appear(lora_run):
    out, summary = lora_run
    assert sorted(p.name for p in out.iterdir()) == [".llmhw-lock", ".llmhw-output", "adapter", "ckpt", "config.json",
                                                     "curve.png", "log.jsonl", "summary.json"]  # fileio's lock, marker
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [".llmhw-output", "adapter_config.json",
                                                                  "adapter_model.safetensors", "lora_config.json",
                                                                  "lora_weights.safetensors"]
    s = json.loads((out / "summary.json").read_text())
    for key in ("lora_dim", "final_eval_loss", "best_eval_loss", "trainable_params", "total_params", "wall_seconds",
                "peak_memory_mb", "steps"):
        assert key in s, key
    assert s["lora_dim"] == 4 and s["steps"] == 8 and s["peak_memory_mb"] > 0
    # 2 layers x (c_attn 16->48, c_proj 16->16, c_fc 16->64, c_proj 64->16), r=4: r * (in + out) each
    assert s["trainable_params"] == 2 * 4 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train_loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9)) and all("lr" in r for r in train_rows)
    assert [r["step"] for r in evals] == [0, 4, 8]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.01, evals  # the loss falls
    assert s["final_eval_loss"] == evals[-1]["eval_loss"] and s["best_eval_loss"] == min(r["eval_loss"] for r in evals)


def test_saved_adapter_reproduces_the_final_eval_loss(lora_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    out, summary = lora_run
    tc, rc = train.parse_args(flags(tiny_model_dir, out, "--lora_dim", "4"))
    info = setup_ddp("cpu")
    tok = data.load_tokenizer(str(tiny_model_dir))
    _, eval_ex, *_ = data.prepare_data(tc, rc, tok)
    for folder in ("ours", "peft"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if folder == "peft":
            (out / "adapter" / "lora_config.json").rename(out / "lora_config.json")  # leave PEFT's files only
        lora.load_adapter(model, out / "adapter")
        loss = train.evaluate(train.TargetLoss(model), eval_ex, rc.eval_batch_size, info, tok.pad_token_id,
                              contextlib.nullcontext)
        assert loss == pytest.approx(summary["final_eval_loss"], abs=1e-5), folder
    (out / "lora_config.json").rename(out / "adapter" / "lora_config.json")


def test_full_finetuning_saves_a_complete_hf_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    s = train.main(flags(tiny_model_dir, tmp_path / "r0", "--lora_dim", "0", "--max_steps", "4", "--lr", "3e-3"))
    assert s["trainable_params"] == s["total_params"] and s["final_eval_loss"] < s["initial_eval_loss"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "r0" / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "r0" / "model")
    assert tok("Hello world")["input_ids"] == [15496, 995]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(model.transformer.h[0].attn.c_attn.weight, base.transformer.h[0].attn.c_attn.weight)


@pytest.mark.parametrize("extra,message", [
    (["--data_path", "/no/such/file.json"], "/no/such/file.json"),
    (["--lora_module_name", "nothing_here"], "module filter 'nothing_here' matches no"),
    (["--eval_ratio", "0.01"], "the eval split is empty"),
    (["--batch_size", "64"], "examples, fewer than one batch (--batch_size 64 = 64)"),
    (["--model_name_or_path", "/no/such/model_dir"], "cannot load model '/no/such/model_dir'"),
    (["--model_name_or_path", "no-such-hub-model"], "--model_name_or_path pretrain/output/tiny-cpu/hf"),
])
def test_bad_inputs_clear_errors(tiny_model_dir, tmp_path, extra, message):
    assert message in user_error(train.main, flags(tiny_model_dir, tmp_path / "x", "--lora_dim", "4", *extra))


@pytest.mark.parametrize("extra", [["--lora_dim", "-1"], ["--lora_dim", "4", "--lora_dropout", "1.5"],
                                   ["--lora_dim", "0", "--lora_load_path", "x"], ["--max_steps", "0"]])
def test_bad_flags_are_usage_errors(tiny_model_dir, tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(flags(tiny_model_dir, tmp_path / "x", *extra))
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_generate_instructions_file_and_bad_file(tmp_path, tiny_model_dir):
    f = tmp_path / "ins.txt"
    f.write_text("Say hi.\n\nCount to three.\n")
    assert generate.read_instructions(str(f)) == [{"instruction": "Say hi.", "input": ""},
                                                  {"instruction": "Count to three.", "input": ""}]
    j = tmp_path / "ins.json"
    j.write_text(json.dumps([{"instruction": "A", "input": "b"}, "C"]))
    assert generate.read_instructions(str(j)) == [{"instruction": "A", "input": "b"}, {"instruction": "C", "input": ""}]
    j.write_text(json.dumps([{"nope": 1}]))
    with pytest.raises(ValueError, match="record 0 has no 'instruction'"):
        generate.read_instructions(str(j))
    assert "does not exist" in user_error(generate.main, ["--base", str(tiny_model_dir), "--instructions",
                                                           str(tmp_path / "missing.txt"), "--out",
                                                           str(tmp_path / "g.json")])


def test_resume_from_saved_adapter_starts_where_the_run_ended(lora_run, tiny_model_dir, tmp_path):
    out, summary = lora_run
    s = train.main(flags(tiny_model_dir, tmp_path / "resume", "--lora_dim", "4", "--lora_load_path",
                         str(out / "adapter"), "--max_steps", "1"))
    assert s["initial_eval_loss"] == pytest.approx(summary["final_eval_loss"], abs=1e-5) and s["lora_dim"] == 4


def test_max_length_clamped_to_the_model_context(gpt2_tok, tmp_path):
    short = tmp_path / "short"
    model = tiny_gpt2(n_embd=16)
    model.config.n_positions = 40
    model.transformer.wpe = torch.nn.Embedding(40, 16)
    model.save_pretrained(short)
    gpt2_tok.save_pretrained(short)
    train.main(flags(short, tmp_path / "o", "--lora_dim", "2", "--max_steps", "1"))  # --max_length 96 > 40
    assert json.loads((tmp_path / "o" / "config.json").read_text())["max_length"] == 40


def test_model_folder_without_tokenizer_uses_gpt2s(tmp_path, gpt2_tok):
    # transformers 5 loads such a folder as an empty tokenizer (every text -> []); we must fall back to GPT-2's
    bare = tmp_path / "bare"
    tiny_gpt2().save_pretrained(bare)
    tok = data.load_tokenizer(str(bare), vocab_size=50257)
    assert tok("Hello world")["input_ids"] == gpt2_tok("Hello world")["input_ids"] == [15496, 995]
    small = tmp_path / "small"
    tiny_gpt2(vocab_size=1000).save_pretrained(small)
    with pytest.raises(ValueError, match="too small for GPT-2's"):
        data.load_tokenizer(str(small), vocab_size=1000)
    s = train.main(flags(bare, tmp_path / "o", "--lora_dim", "2", "--max_steps", "1"))
    assert math.isfinite(s["final_eval_loss"])


def test_adapter_rank_must_match_lora_dim(lora_run, tiny_model_dir, tmp_path):
    out, _ = lora_run  # a rank-4 adapter
    with pytest.raises(SystemExit):
        train.main(flags(tiny_model_dir, tmp_path / "x", "--lora_dim", "8", "--lora_load_path", str(out / "adapter")))


def test_generate_checks_folders_first_and_names_same_rank_adapters_apart(lora_run, tiny_model_dir, tmp_path):
    out, _ = lora_run
    assert "no such model folder" in user_error(generate.main, ["--base", str(tiny_model_dir), "--full",
                                                                str(tmp_path / "nope"), "--out",
                                                                str(tmp_path / "g.json")])
    (tmp_path / "empty").mkdir()
    assert "not an adapter folder" in user_error(generate.main, ["--base", str(tiny_model_dir), "--lora",
                                                                 str(tmp_path / "empty"), "--out",
                                                                 str(tmp_path / "g.json")])
    import shutil
    shutil.copytree(out / "adapter", tmp_path / "copy")
    res = generate.main(["--base", str(tiny_model_dir), "--lora", str(out / "adapter"), "--lora",
                         str(tmp_path / "copy"), "--max_new_tokens", "2", "--greedy", "--out",
                         str(tmp_path / "g.json")])
    assert list(res["models"]) == ["original", "LoRA r=4", f"LoRA r=4 ({tmp_path / 'copy'})"]


def test_bf16_autocast_covers_the_forward_only(tiny_model_dir, tmp_path, monkeypatch):
    """--dtype bfloat16 (CPU autocast here; auto picks it on CUDA): the forward runs in bf16, the backward outside
    autocast, and the loss stays close to float32's (reference: the same run in float32)."""
    seen = {"forward": [], "backward": []}
    real_forward = train.TargetLoss.forward

    def forward(self, *a, **k):
        seen["forward"].append(torch.is_autocast_enabled("cpu"))
        s, n = real_forward(self, *a, **k)
        if s.requires_grad:
            s.register_hook(lambda g: seen["backward"].append(torch.is_autocast_enabled("cpu")) or g)
        return s, n
    monkeypatch.setattr(train.TargetLoss, "forward", forward)
    bf = train.main(flags(tiny_model_dir, tmp_path / "bf16", "--lora_dim", "2", "--max_steps", "2", "--dtype",
                          "bfloat16", "--device", "cpu"))
    assert all(seen["forward"]) and seen["backward"] and not any(seen["backward"])
    seen["forward"].clear()
    fp = train.main(flags(tiny_model_dir, tmp_path / "fp32", "--lora_dim", "2", "--max_steps", "2", "--device",
                          "cpu"))
    assert seen["forward"] and not any(seen["forward"])  # auto on CPU = float32: no autocast
    assert bf["final_train_loss"] == pytest.approx(fp["final_train_loss"], abs=0.05)
    assert bf["final_train_loss"] != fp["final_train_loss"]  # bf16 did run
