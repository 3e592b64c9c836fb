"""Checkpoints and exact resume: a run killed at step k and then --resume'd equals an uninterrupted run (log records
bitwise, final weights bitwise), for LoRA (with dropout: RNG states matter) and full finetuning."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import train
from runlog import read_log

HERE = Path(__file__).resolve().parents[1]


def base_flags(model_dir, out, *extra):
    # 36 train examples, 4 x 2 accumulation per step -> 4 steps per epoch; 2 epochs = 8 steps
    return ["--model_name_or_path", str(model_dir), "--out_dir", str(out), "--max_examples", "48",
            "--eval_ratio", "0.25", "--batch_size", "4", "--gradient_accumulation_steps", "2",
            "--eval_batch_size", "4", "--max_length", "96", "--epochs", "2", "--eval_interval", "3", "--lr", "1e-2",
            "--ckpt_interval", "3", "--group_by_length", "--device", "cpu", *extra]


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def logged_steps(path: Path) -> set[int]:
    """Steps of the complete train rows of a log.jsonl being written (a last line may be half-written)."""
    try:
        lines = path.read_text().split("\n")[:-1]
    except FileNotFoundError:
        return set()
    return {r["step"] for r in map(json.loads, lines) if "train_loss" in r}


def kill_when_logged(args, step: int) -> subprocess.Popen:
    """train.py in a subprocess, SIGKILLed from outside as soon as its log shows train step ``step`` (a crash)."""
    out = Path(args[args.index("--out_dir") + 1])
    # same thread count as this process, so results are bitwise those of an in-process run
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, str(HERE / "train.py"), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 600
    while proc.poll() is None and step not in logged_steps(out / "log.jsonl") and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc


@pytest.mark.parametrize("kind, extra, kill_at", [
    ("lora", ["--lora_dim", "4", "--lora_dropout", "0.1"], 5),   # resumes inside epoch 0 or 1, crosses epochs
    ("full", ["--lora_dim", "0", "--lr", "1e-3"], 7),            # resumes inside epoch 1
])
def test_kill_and_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path, capsys, kind, extra, kill_at):
    train.main(base_flags(tiny_model_dir, tmp_path / "whole", *extra))
    args = base_flags(tiny_model_dir, tmp_path / "cut", *extra)
    killed = kill_when_logged(args, kill_at)
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "cut" / "summary.json").exists()
    latest = checkpoint.latest(tmp_path / "cut" / "ckpt")
    resumed_from = checkpoint.load_checkpoint(latest, train.CKPT_FORMAT)["step"]
    # checkpoints every 3 steps: the last one before the kill (the run may have gone one step past the log line)
    assert resumed_from in (kill_at // 3 * 3, (kill_at + 1) // 3 * 3) and resumed_from < 8
    train.main([*args, "--resume"])
    assert f"[resume] {latest}: step {resumed_from}/8" in capsys.readouterr().out
    whole, cut = read_log(tmp_path / "whole" / "log.jsonl"), read_log(tmp_path / "cut" / "log.jsonl")
    assert [r["step"] for r in whole if "train_loss" in r] == list(range(1, 9))
    assert strip(cut) == strip(whole)  # same records in the same order, losses and lrs bitwise equal
    files = ("adapter", "lora_weights.safetensors") if kind == "lora" else ("model", "model.safetensors")
    a, b = load_file(tmp_path / "whole" / Path(*files)), load_file(tmp_path / "cut" / Path(*files))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    s_whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    s_cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    for key in ("final_eval_loss", "best_eval_loss", "final_train_loss", "steps", "tokens", "run_id"):
        assert (s_cut[key] == s_whole[key]) == (key != "run_id"), key


def test_checkpoints_are_step_numbered_the_last_k_kept_and_weights_only(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train.main(base_flags(tiny_model_dir, out, "--lora_dim", "2", "--ckpt_interval", "2", "--keep_checkpoints", "2"))
    names = sorted(p.name for p in (out / "ckpt").iterdir())
    assert names == ["ckpt_000006.pt", "ckpt_000008.pt", "latest"]  # saved at 2, 4, 6, 8; two kept
    assert (out / "ckpt" / "latest").read_text() == "ckpt_000008.pt\n"
    state = torch.load(out / "ckpt" / "ckpt_000008.pt", weights_only=True)  # no pickled code needed
    assert state["step"] == 8 and state["epoch"] == 2 and state["batch_in_epoch"] == 0
    assert state["train_config"]["lora_dim"] == 2 and set(state["rng"][0]) >= {"torch", "python"}
    assert all(k.endswith(("lora_right_weight", "lora_left_weight")) for k in state["model"])
    # resuming a finished run only redoes the finish: same results
    before = json.loads((out / "summary.json").read_text())
    train.main(base_flags(tiny_model_dir, out, "--lora_dim", "2", "--ckpt_interval", "2", "--resume"))
    after = json.loads((out / "summary.json").read_text())
    assert after["final_eval_loss"] == before["final_eval_loss"] and after["steps"] == 8
    assert len([r for r in read_log(out / "log.jsonl") if "train_loss" in r]) == 8


def test_resume_refuses_other_settings(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    train.main(base_flags(tiny_model_dir, out, "--lora_dim", "2", "--epochs", "1"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(base_flags(tiny_model_dir, out, "--lora_dim", "2", "--epochs", "1", "--lr", "2e-2", "--resume"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and err.startswith("error: ") and "was made with --lr 0.01 (now 0.02)" in err
