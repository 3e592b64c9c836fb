"""DDP on CPU (gloo, torchrun): 2 processes train exactly what 1 process trains with the same global batch."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from runlog import read_log

HERE = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flags(model_dir, out, *extra):
    # 10 records -> 8 train, 2 eval; one optimizer step per epoch holds the whole train split, so the global
    # batch is the same set of examples whether 1 process takes 8 or 2 processes take 4 each
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(out), "--max_examples", "10",
            "--eval_ratio", "0.2", "--max_length", "256", "--eval_batch_size", "1", "--epochs", "3",
            "--eval_interval", "1", "--lr", "1e-2", "--lora_dim", "2", "--lora_dropout", "0", "--device", "cpu",
            *extra]


def test_two_process_gloo_equals_one_process(tiny_model_dir, tmp_path):
    train.main(flags(tiny_model_dir, tmp_path / "one", "--train_batch_size", "4", "--gradient_accumulation_steps",
                     "2"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(HERE / "train.py"), *flags(tiny_model_dir, tmp_path / "two", "--train_batch_size", "4",
                                          "--ddp_timeout", "120")]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 3 and math.isfinite(s["final_eval_loss"])
    one, two = read_log(tmp_path / "one" / "log.jsonl"), read_log(tmp_path / "two" / "log.jsonl")
    for key in ("train_loss", "eval_loss", "lr", "tokens"):
        a, b = [r[key] for r in one if key in r], [r[key] for r in two if key in r]
        assert len(a) == (3 if key != "eval_loss" else 4) and a == pytest.approx(b, abs=1e-5), key
    w1 = load_file(tmp_path / "one" / "adapter" / "lora_weights.safetensors")
    w2 = load_file(tmp_path / "two" / "adapter" / "lora_weights.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in w2.items() if "left" in k)  # it did train
