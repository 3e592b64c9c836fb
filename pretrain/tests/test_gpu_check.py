"""gpu_check.sh, the one prepared GPU measurement, rehearsed on the CPU at toy sizes (GPU_CHECK_DRY=1).

A device is lent to few sessions, for minutes: the script must not rot in between. The rehearsal runs every command
of it (bench.py with compile, train.py with preset gpt2-124m and compile, the steady-state summary) and checks what
it wrote (at most 8 files, as a device run returns); the compiled training run is compared step by step with the same
run in eager mode.
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import train
from conftest import HERE


def run_script(env, *parts):
    return subprocess.run(["bash", str(HERE / "gpu_check.sh"), *parts], env=env, capture_output=True, text=True,
                          timeout=600)


def test_gpu_check_rehearsal_runs_every_part(shakespeare, tmp_path):
    out, train_out = tmp_path / "out", tmp_path / "train"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(out), "GPU_CHECK_DATA": str(shakespeare),
           "GPU_CHECK_TRAIN_OUT": str(train_out),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # this python
    r = run_script(env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    # a device run returns at most 8 files, at most 2 folders down: ours are fewer, and flat
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["gpu_check.txt", "bench.json", "bench64.json", "train.json", "train_log.jsonl",
                            "train_summary.json", "train_loss.png"]) and all((out / f).is_file() for f in files)
    text = (out / "gpu_check.txt").read_text()
    assert "dry run on the CPU" in text and "cpu: measured fp32 matmul peak" in text
    assert "ratio ours+compile / hf" in text and "train.py steady state" in text

    bench = json.loads((out / "bench.json").read_text())
    assert set(bench["models"]) == {"hf", "ours", "ours+compile"}
    for m in bench["models"].values():
        assert m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1
    bench_2b = json.loads((out / "bench64.json").read_text())
    assert set(bench_2b["models"]) == {"ours"} and bench_2b["config"]["batch_size"] == 4

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["train_config"]["compile"] and summary["preset"] == "gpt2-124m"
    compiled = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    compiled_steps = [row for row in compiled if "loss" in row]
    assert len(compiled_steps) == 12
    # steady state = the median over the steps after the first (which holds the compilation), run dtype's peak
    steady = json.loads((out / "train.json").read_text())
    assert steady["steps"] == [2, 12] and steady["dtype"] == "float32" and steady["peak"].startswith("cpu: measured")
    assert steady["tokens_per_s"] == statistics.median(row["tokens_per_s"] for row in compiled_steps[1:])

    # the same 12 steps without torch.compile: the compiled training loop computes the same thing
    eager_out = tmp_path / "eager"
    flags = ["--preset", "gpt2-124m", "--device", "cpu", "--n_layer", "2", "--n_head", "2", "--n_embd", "64",
             "--data", str(shakespeare), "--out_dir", str(eager_out), "--max_steps", "12", "--warmup_steps", "2",
             "--seq_len", "64", "--total_batch_size", "0", "--batch_size", "2", "--eval_interval", "0",
             "--val_steps", "1", "--hellaswag_limit", "0", "--sample_tokens", "0", "--no-compile"]
    train.main(flags)
    eager = [json.loads(line) for line in (eager_out / "log.jsonl").read_text().splitlines()]
    eager_losses = [row["loss"] for row in eager if "loss" in row]
    assert eager_losses == pytest.approx([row["loss"] for row in compiled_steps], abs=1e-4)
    assert eager_losses[-1] < eager_losses[0]

    # a part runs alone (appending to the same gpu_check.txt); an unknown part is refused before any work
    r = run_script(env, "nonsense")
    assert r.returncode == 2 and "unknown part 'nonsense'" in r.stderr
    (out / "bench.json").unlink()
    r = run_script({**env, "GPU_CHECK_DATA": str(tmp_path / "none")}, "train")
    assert r.returncode == 0 and "train: no prepared data" in r.stdout and not (out / "bench.json").exists()
    assert (out / "gpu_check.txt").read_text().startswith(text)
