"""gpu_check.sh, the one prepared GPU measurement, rehearsed on the CPU at toy sizes (GPU_CHECK_DRY=1).

A device is lent to few sessions, for minutes: the script must not rot in between. The rehearsal runs every command
of it (bench.py with compile, train.py with preset gpt2-124m and compile, the summary) and checks what it wrote;
the compiled training run is compared step by step with the same run in eager mode.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train
from conftest import HERE


def test_gpu_check_rehearsal_runs_every_part(shakespeare, tmp_path):
    out, train_out = tmp_path / "out", tmp_path / "train"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(out), "GPU_CHECK_DATA": str(shakespeare),
           "GPU_CHECK_TRAIN_OUT": str(train_out),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # this python
    r = subprocess.run(["bash", str(HERE / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "dry run on the CPU" in (out / "gpu.txt").read_text()

    bench = json.loads((out / "bench_124m.json").read_text())
    assert set(bench["models"]) == {"hf", "ours", "ours+compile"}
    for m in bench["models"].values():
        assert m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1
    assert "ratio ours+compile / hf" in (out / "bench_124m.txt").read_text()
    bench_2b = json.loads((out / "bench_124m_2b.json").read_text())
    assert set(bench_2b["models"]) == {"ours", "ours+compile"} and bench_2b["config"]["batch_size"] == 4

    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_config"]["compile"] and summary["preset"] == "gpt2-124m"
    assert "train.py steady state" in (out / "train.txt").read_text()
    assert (out / "loss.png").stat().st_size > 0
    compiled = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    compiled_losses = [row["loss"] for row in compiled if "loss" in row]
    assert len(compiled_losses) == 12

    # the same 12 steps without torch.compile: the compiled training loop computes the same thing
    eager_out = tmp_path / "eager"
    flags = ["--preset", "gpt2-124m", "--device", "cpu", "--n_layer", "2", "--n_head", "2", "--n_embd", "64",
             "--data", str(shakespeare), "--out_dir", str(eager_out), "--max_steps", "12", "--warmup_steps", "2",
             "--seq_len", "64", "--total_batch_size", "0", "--batch_size", "2", "--eval_interval", "0",
             "--val_steps", "1", "--hellaswag_limit", "0", "--sample_tokens", "0", "--no-compile"]
    train.main(flags)
    eager = [json.loads(line) for line in (eager_out / "log.jsonl").read_text().splitlines()]
    eager_losses = [row["loss"] for row in eager if "loss" in row]
    assert eager_losses == pytest.approx(compiled_losses, abs=1e-4)
    assert eager_losses[-1] < eager_losses[0]
