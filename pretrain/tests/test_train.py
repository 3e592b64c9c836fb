"""train.py: schedule, outputs and their schemas, HF export, exact resume after a kill, torchrun parity, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from conftest import HERE, TINY_ARGS, kill_after_step, load_checkpoint
from prepare import load_tokenizer


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def run_script(args, nproc=None, check=True):
    """train.py in a fresh process (python or torchrun), as a user runs it."""
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(29500 + os.getpid() % 1000), str(HERE / "train.py"), *args]
    else:
        cmd = [sys.executable, str(HERE / "train.py"), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_lr_schedule_endpoints():
    tc = train.TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    lrs = [train.get_lr(s, tc) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup, (step+1)/warmup
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55)  # cosine: half way = mean
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)  # floor after max_steps
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_run_outputs_and_schemas(tiny_run):
    log = read_log(tiny_run)
    train_lines = [r for r in log if "loss" in r]
    assert [r["step"] for r in train_lines] == list(range(1, 7))  # optimizer steps done
    for r in train_lines:
        assert {"step", "loss", "lr", "tokens_per_s", "mfu", "grad_norm", "tokens"} <= set(r)
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"]
    assert [r["step"] for r in log if "val_loss" in r] == [0, 3, 6]
    hs = [r for r in log if "hellaswag_acc_norm" in r]  # hellaswag_interval 0: only at the end
    assert [(r["step"], r["hellaswag_n"]) for r in hs] == [(6, 8)]
    assert [r["step"] for r in log if "sample" in r] == [0, 3, 6]
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens"] == 6 * 256 and summary["params"] > 0
    assert summary["final_val_loss"] == [r for r in log if "val_loss" in r][-1]["val_loss"]
    assert summary["hellaswag_acc_norm"] == hs[-1]["hellaswag_acc_norm"]
    assert (tiny_run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = load_checkpoint(tiny_run)  # the latest pointer; weights_only=True
    assert ckpt["step"] == 6 and {"model", "optimizer", "data_position", "rng", "model_config",
                                  "train_config"} <= set(ckpt)
    assert ckpt["model_config"]["vocab_size"] == 50304  # GPT-2's 50257 rounded up to a multiple of 64


def test_hf_export_loads_with_auto_classes(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from export import load_model

    tok = AutoTokenizer.from_pretrained(tiny_run / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tiny_run / "hf").eval()
    text = "ROMEO: what light through yonder window breaks?\n\n  It is the east <|endoftext|>"
    ids = tok(text, return_tensors="pt")["input_ids"]
    reference = load_tokenizer("gpt2")  # tiktoken on OpenAI's files
    assert ids[0].tolist() == reference.encode(text.removesuffix("<|endoftext|>")) + [50256]
    assert tok.eos_token_id == 50256
    ours = load_model(tiny_run).eval()
    with torch.no_grad():
        assert (ours(ids)[0] - hf(ids).logits).abs().max().item() <= 1e-5


def test_kill_and_resume_gives_the_same_losses(tiny_run, shakespeare, tmp_path):
    args = ["--data", str(shakespeare), "--out_dir", str(tmp_path), "--max_steps", "6", "--ckpt_interval", "2",
            *TINY_ARGS]
    # killed from outside as a crash would: SIGKILL as soon as its log shows step 5 (checkpoints at 2, 4, 6)
    status = kill_after_step([sys.executable, str(HERE / "train.py"), *args], tmp_path / "log.jsonl", 5)
    assert status == -signal.SIGKILL
    assert not (tmp_path / "summary.json").exists()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] in (4, 6)  # 6 only if the kill came late (a loaded machine)
    assert set(ckpt["optimizer"]) == {"adamw", "muon"}  # the preset's Muon for the matrices, AdamW for the rest
    run_script([*args, "--resume"])
    # the same records in the same order; losses, lrs, grad norms, val losses and samples bitwise equal
    timing = ("dt_ms", "tokens_per_s", "mfu")
    strip = lambda log: [{k: v for k, v in r.items() if k not in timing} for r in log]  # noqa: E731
    assert strip(read_log(tmp_path)) == strip(read_log(tiny_run))


def test_killed_adamw_run_resumes_bit_identically(shakespeare, tmp_path):
    """--optimizer adamw (tiny-cpu, and so the test above, uses Muon): its moments come back from the checkpoint."""
    args = ["--data", str(shakespeare), "--max_steps", "6", "--ckpt_interval", "2", *TINY_ARGS, "--optimizer",
            "adamw", "--eval_interval", "0", "--sample_tokens", "0", "--hellaswag_limit", "0"]
    run_script([*args, "--out_dir", str(tmp_path / "whole")])
    status = kill_after_step([sys.executable, str(HERE / "train.py"), *args, "--out_dir", str(tmp_path / "cut")],
                             tmp_path / "cut" / "log.jsonl", 5)
    assert status == -signal.SIGKILL
    assert set(load_checkpoint(tmp_path / "cut")["optimizer"]) == {"state", "param_groups"}  # one torch AdamW
    run_script([*args, "--out_dir", str(tmp_path / "cut"), "--resume"])
    timing = ("dt_ms", "tokens_per_s", "mfu")
    strip = lambda log: [{k: v for k, v in r.items() if k not in timing} for r in log]  # noqa: E731
    whole = strip(read_log(tmp_path / "whole"))
    assert strip(read_log(tmp_path / "cut")) == whole and len([r for r in whole if "loss" in r]) == 6


def test_two_process_gloo_equals_one_process(shakespeare, tmp_path):
    common = ["--data", str(shakespeare), "--max_steps", "3", *TINY_ARGS, "--eval_interval", "0",
              "--sample_tokens", "0"]
    run_script([*common, "--out_dir", str(tmp_path / "one")])  # 1 process: 2 accumulation steps of 4 x 32
    # 2 processes, one micro-step each (total_batch_size 0 = B*T*world = 256, as tiny-cpu uses it)
    r = run_script([*common, "--out_dir", str(tmp_path / "two"), "--total_batch_size", "0"], nproc=2)
    assert "2 process(es)" in r.stdout and "x 2 x 1 accum" in r.stdout
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    losses = lambda log, key: [r[key] for r in log if key in r]  # noqa: E731
    assert len(losses(one, "loss")) == 3
    for key in ("loss", "val_loss", "grad_norm"):
        assert losses(one, key) == pytest.approx(losses(two, key), abs=1e-5)
    assert losses(one, "hellaswag_acc_norm") == losses(two, "hellaswag_acc_norm")  # examples split over ranks
    assert losses(two, "hellaswag_n") == [8]


@pytest.mark.parametrize("flags, message", [
    (["--preset", "gpt3"], "invalid choice: 'gpt3'"),
    (["--seq_len", "64"], "--seq_len 64 exceeds the model's block_size 32"),
    (["--total_batch_size", "300"], "total_batch_size 300 is not divisible by batch_size * seq_len * world_size"),
    (["--n_head", "3"], "n_embd=32 is not divisible by n_head=3"),
    (["--log_interval", "0"], "--log_interval must be positive"),
    (["--num_samples", "0"], "--num_samples must be positive"),
    (["--dtype", "float16"], "--dtype must be one of auto, float32, bfloat16"),
    (["--optimizer", "sgd"], "--optimizer must be one of adamw, muon"),
])
def test_bad_settings_fail_with_one_clear_line(flags, message, shakespeare, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(shakespeare), "--out_dir", str(tmp_path), *TINY_ARGS, *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_or_corrupt_data_fails_clearly(shakespeare, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--data", str(tmp_path / "nothing"), "--out_dir", str(tmp_path / "o"), *TINY_ARGS])
    assert "meta.json is missing: prepare the data first" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(shakespeare / "tokenizer", broken / "tokenizer")
    for f in ("meta.json", "val_000000.bin"):
        (broken / f).write_bytes((shakespeare / f).read_bytes())
    (broken / "train_000000.bin").write_bytes((shakespeare / "train_000000.bin").read_bytes()[:5000])
    with pytest.raises(SystemExit):
        train.main(["--data", str(broken), "--out_dir", str(tmp_path / "o"), *TINY_ARGS])
    assert "train_000000.bin is corrupt" in capsys.readouterr().err


def test_resume_refuses_other_batch_tokenizer_or_an_earlier_end(tiny_run, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)  # finished at step 6 with B=4, T=32, total 256
    (out / "summary.json").unlink()
    for flags, message in ((["--batch_size", "8", "--total_batch_size", "512"], "batch_size 4 (now 8)"),
                           (["--max_steps", "4"], "the checkpoint is at step 6, past --max_steps 4"),
                           (["--optimizer", "adamw"], "optimizer muon (now adamw)")):
        with pytest.raises(SystemExit):
            train.main(["--data", str(shakespeare), "--out_dir", str(out), "--max_steps", "6", *TINY_ARGS, *flags,
                        "--resume"])
        assert message in capsys.readouterr().err
    other = tmp_path / "other"  # the same text under another tokenizer
    (tmp_path / "tok").mkdir()
    load_tokenizer("gpt2").write_files(tmp_path / "tok", hf=True, model_max_length=32)
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(tmp_path / "tok").backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    import prepare
    prepare.prepare(other, ["tinyshakespeare.txt"], tokenizer=str(tmp_path / "tokenizer.json"), workers=0)
    with pytest.raises(SystemExit):
        train.main(["--data", str(other), "--out_dir", str(out), "--max_steps", "6", *TINY_ARGS, "--resume"])
    assert "uses another tokenizer than the checkpoint's" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--grad_clip", "inf"], "--grad_clip must be a finite number, got inf"),
    (["--ddp_timeout", "0"], "--ddp_timeout must be > 0"),
    (["--keep_checkpoints", "0"], "--keep_checkpoints must be positive"),
    (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
    (["--live", "neptune"], "--live must be one of none, wandb, tensorboard"),
])
def test_non_finite_and_contradictory_settings_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--out_dir", "unused", *TINY_ARGS, *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_the_chosen_presets_values(capsys):
    for preset, steps, compile_ in (("gpt2-124m", 19073, True), ("tiny-cpu", 150, False)):
        with pytest.raises(SystemExit):
            train.main(["--preset", preset, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert f"(10B tokens / 524288) (default: {steps})" in text
        assert f"torch.compile the model (default: {compile_})" in text


def test_micro_batch_fits_the_world_size():
    from config import fit_micro_batch
    assert fit_micro_batch(524288, 64, 1024, 8, False)[:2] == (64, 1)  # build-nanogpt's 8 GPUs
    B, accum, note = fit_micro_batch(524288, 64, 1024, 16, False)  # 16 GPUs: 2**19 / (64*1024*16) = 1/2
    assert (B, accum) == (32, 1) and "using --batch_size 32" in note and B * 1024 * 16 * accum == 524288
    assert fit_micro_batch(524288, 64, 1024, 4, False)[:2] == (64, 2)
    with pytest.raises(train.ConfigError, match="set --batch_size 32"):  # the user's own choice is not changed
        fit_micro_batch(524288, 64, 1024, 16, True)
    with pytest.raises(train.ConfigError, match="set --total_batch_size to a multiple of 1572864"):
        fit_micro_batch(524288, 64, 1024, 24, False)  # 24 GPUs never divide 2**19
    assert fit_micro_batch(0, 8, 128, 3, True) == (8, 1, None)  # 0: one micro-batch per process


def test_mfu_is_never_above_one():
    from types import SimpleNamespace
    t = SimpleNamespace(flops_per_token=1e6, ddp=SimpleNamespace(world_size=2), peak=1e9)
    assert train.mfu_or_none(t, 1000.0) == pytest.approx(0.5)  # 1e6 * 1000 / 2 / 1e9
    assert train.mfu_or_none(t, 4000.0) is None and t.peak is None  # a "peak" below the achieved FLOP/s


def run_in(out, shakespeare, *flags, steps="2"):
    return train.main(["--data", str(shakespeare), "--out_dir", str(out), "--max_steps", steps, *TINY_ARGS,
                       "--eval_interval", "0", "--hellaswag_limit", "0", "--sample_tokens", "0", *flags])


def test_grad_clip_zero_means_off(shakespeare, tmp_path):
    run_in(tmp_path / "off", shakespeare, "--grad_clip", "0")
    run_in(tmp_path / "huge", shakespeare, "--grad_clip", "1e30")
    off, huge = ([r for r in read_log(tmp_path / name) if "loss" in r] for name in ("off", "huge"))
    assert [r["loss"] for r in off] == [r["loss"] for r in huge]  # bitwise: no clipping either way
    assert off[1]["loss"] != off[0]["loss"] and off[0]["grad_norm"] > 0  # and the model does learn


def test_an_earlier_run_is_refused_unless_resume_or_overwrite(tiny_run, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    before = (out / "log.jsonl").read_bytes()
    with pytest.raises(SystemExit):
        run_in(out, shakespeare)
    err = capsys.readouterr().err
    # the entries listed: the run's (hellaswag.json too when another test evaluated the shared run folder)
    assert "holds an earlier" in err and "(ckpt_000003.pt, ckpt_000006.pt, h" in err and "pass --resume" in err
    assert err.count("\n") == 1 and (out / "log.jsonl").read_bytes() == before  # nothing touched
    run_in(out, shakespeare, "--overwrite")
    assert [p.name for p in sorted(out.glob("ckpt_*.pt"))] == ["ckpt_000002.pt"]
    assert [r["step"] for r in read_log(out) if "loss" in r] == [1, 2]
    for bad_out, message in ((shakespeare, "holds (or is inside) the input"),
                             (shakespeare / "run", "holds (or is inside) the input"),
                             (tiny_run / "hf", "holds a gpt2-hf-export (its .llmhw-output says so)")):
        with pytest.raises(SystemExit):
            run_in(bad_out, shakespeare)
        assert message in capsys.readouterr().err
    assert not (shakespeare / "run").exists()  # refused before anything was created
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        run_in(tmp_path / "file", shakespeare)
    assert "is a file, but an output folder is needed here" in capsys.readouterr().err


def test_live_logging_is_off_by_default_and_a_missing_package_is_one_line(tiny_run, shakespeare, tmp_path,
                                                                            capsys, monkeypatch):
    for name in ("wandb", "torch.utils.tensorboard"):  # as in a fresh process (other tests may have imported them)
        monkeypatch.delitem(sys.modules, name, raising=False)
    run_in(tmp_path / "off", shakespeare)
    assert "wandb" not in sys.modules and "torch.utils.tensorboard" not in sys.modules  # --live none: not imported
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError, installed or not
    with pytest.raises(SystemExit):
        run_in(tmp_path / "w", shakespeare, "--live", "wandb")
    assert "error: --live wandb: the wandb package is not installed (pip install wandb)" in capsys.readouterr().err


def test_a_small_bpe_tokenizer_drives_the_model_the_export_and_hellaswag(tmp_path):
    """English text with a tokenizer.json of 300 tokens: vocab 320 (rounded up to 64), HF export with it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import prepare
    from export import load_model

    text = "The quick brown fox jumps over the lazy dog. A stitch in time saves nine.\n" * 300
    (tmp_path / "english.txt").write_text(text)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    prepare.main(["--input", str(tmp_path / "english.txt"), "--tokenizer", str(tmp_path / "tokenizer.json"),
                  "--out_dir", str(tmp_path / "data"), "--workers", "0"])
    out = tmp_path / "run"
    train.main(["--data", str(tmp_path / "data"), "--out_dir", str(out), "--max_steps", "2",
                *[a for a in TINY_ARGS if a not in ("--vocab_size", "50304")], "--hellaswag_limit", "4",
                "--sample_prompt", "The quick"])
    assert load_checkpoint(out)["model_config"]["vocab_size"] == 320
    assert [r["hellaswag_n"] for r in read_log(out) if "hellaswag_n" in r] == [4]
    assert [r["sample"][:9] for r in read_log(out) if "sample" in r][0] == "The quick"
    hf_tok = AutoTokenizer.from_pretrained(out / "hf")
    ids = hf_tok("The lazy fox saves time", return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == tok.encode("The lazy fox saves time").ids
    hf = AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    with torch.no_grad():
        assert (load_model(out)(ids)[0] - hf(ids).logits).abs().max().item() <= 1e-5


def test_torchrun_without_prepared_data_stops_at_start_up(tmp_path, monkeypatch):
    import config
    monkeypatch.setattr(config, "HERE", tmp_path)  # no prepared data set of the preset there
    with pytest.raises(train.ConfigError, match="is not prepared: prepare it first, once, without torchrun "
                       r"\(python pretrain/prepare.py --input tinyshakespeare.txt --val_fraction 0.1 --out_dir "):
        config.data_folder("tiny-cpu", train.TrainConfig(), distributed=True)
    assert config.data_folder("tiny-cpu", train.TrainConfig(data="D"), distributed=True) == Path("D")
    assert not (tmp_path / "output").exists()  # nothing prepared, nothing hidden left behind


def test_torchrun_without_prepared_data_ends_both_ranks_in_one_line(tmp_path):
    """2 gloo ranks, --ddp_timeout 1 s, far shorter than any preparation: nothing is prepared inside the process
    group (no rank waits on another's preparation), both ranks stop at once naming the prepare.py command."""
    code = tmp_path / "pretrain"  # a copy of the code whose preset data folder (code/output/data) is empty
    code.mkdir()
    for f in HERE.glob("*.py"):
        shutil.copy(f, code / f.name)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + (os.getpid() + 7) % 1000), str(code / "train.py"), "--preset", "tiny-cpu", "--ddp_timeout",
           "1", "--out_dir", str(tmp_path / "run")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert r.stderr.count("is not prepared: prepare it first, once, without torchrun (python pretrain/prepare.py "
                          "--input tinyshakespeare.txt --val_fraction 0.1 --out_dir") == 2, r.stderr[-3000:]
    assert 'train.py", line' not in r.stderr and "collective" not in r.stderr  # no rank's traceback, no timeout
    assert not (code / "output").exists() and not (tmp_path / "run").exists()  # nothing hidden, nothing empty


def test_compile_under_torchrun_equals_one_process(shakespeare, tmp_path):
    common = ["--data", str(shakespeare), "--max_steps", "3", *TINY_ARGS, "--eval_interval", "0", "--val_steps", "1",
              "--sample_tokens", "0", "--hellaswag_limit", "0"]
    run_script([*common, "--out_dir", str(tmp_path / "one")])  # 1 eager process: 2 accumulation steps of 4 x 32
    r = run_script([*common, "--out_dir", str(tmp_path / "two"), "--total_batch_size", "0", "--compile"], nproc=2)
    assert "2 process(es)" in r.stdout
    two = read_log(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["train_config"]["compile"]
    for key in ("loss", "val_loss", "grad_norm"):
        one_values, two_values = ([row[key] for row in log if key in row] for log in (read_log(tmp_path / "one"), two))
        assert len(one_values) >= 1 and one_values == pytest.approx(two_values, abs=1e-4), key
