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
    return ["--model_name_or_path", str(model_dir), "--out_dir", str(out), "--max_examples", "10",
            "--eval_ratio", "0.2", "--max_length", "256", "--eval_batch_size", "1", "--epochs", "3",
            "--eval_interval", "1", "--lr", "1e-2", "--lora_dim", "2", "--lora_dropout", "0", "--device", "cpu",
            *extra]


def test_two_process_gloo_equals_one_process(tiny_model_dir, tmp_path):
    train.main(flags(tiny_model_dir, tmp_path / "one", "--batch_size", "4", "--gradient_accumulation_steps",
                     "2"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(HERE / "train.py"), *flags(tiny_model_dir, tmp_path / "two", "--batch_size", "4",
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


def launch_two_nodes(model_dir, out, port, *extra):
    """Two torchrun 'nodes' of one process each on this host, meeting at a c10d rendezvous (as on 2 machines)."""
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                               "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id",
                               f"ft{port}", str(HERE / "train.py"),
                               *flags(model_dir, out, "--batch_size", "4", "--ddp_timeout", "120", *extra)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    return "".join(o for o, _ in results)


def test_two_nodes_resume_decided_by_rank_0(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    launch_two_nodes(tiny_model_dir, out, free_port(), "--ckpt_interval", "1", "--keep_checkpoints", "3")
    whole = read_log(out / "log.jsonl")
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 3
    # as if the run had been killed after step 2: the pointer names step 2's checkpoint, later results are gone
    (out / "ckpt" / "ckpt_000003.pt").unlink()
    (out / "ckpt" / "latest").write_text("ckpt_000002.pt\n")
    (out / "summary.json").unlink()
    stdout = launch_two_nodes(tiny_model_dir, out, free_port(), "--ckpt_interval", "1", "--keep_checkpoints", "3",
                              "--resume")
    assert stdout.count("[resume]") == 1 and "step 2/3" in stdout  # rank 0 speaks for both
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    assert strip(read_log(out / "log.jsonl")) == strip(whole)
    assert json.loads((out / "summary.json").read_text())["final_eval_loss"] == s["final_eval_loss"]
