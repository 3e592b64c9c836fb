"""Shared fixtures for pretrain/ tests: the folder on sys.path, a tiny random HF GPT-2, prepared Tiny Shakespeare
shards and one tiny training run (all session-scoped, so the suite stays within its ~3 minute budget)."""
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

# A model small enough for CPU tests that still uses the GPT-2 vocabulary (so real tokenizers and data work).
TINY_ARGS = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--vocab_size", "50304",
             "--seq_len", "32", "--batch_size", "4", "--total_batch_size", "256", "--warmup_steps", "2",
             "--lr", "1e-3", "--val_steps", "2", "--hellaswag_limit", "8", "--sample_tokens", "8",
             "--num_samples", "1", "--eval_interval", "3", "--hellaswag_interval", "0"]


@pytest.fixture(scope="session")
def hf_tiny_dir(tmp_path_factory):
    """A random GPT2LMHeadModel (GPT-2 vocab, 2 layers, 32 dims) saved with transformers into a folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)
    path = tmp_path_factory.mktemp("hf_tiny")
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def shakespeare(tmp_path_factory):
    """Tiny Shakespeare tokenized with GPT-2 BPE (prepare.py in-process, no workers)."""
    import prepare

    out = tmp_path_factory.mktemp("shakespeare")
    prepare.prepare(out, ["tinyshakespeare.txt"], workers=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, shakespeare):
    """One 6-step run of train.py (in-process) with evaluations and checkpoints at steps 0, 3, 6; its out_dir."""
    import train

    out = tmp_path_factory.mktemp("tiny_run")
    train.main(["--data", str(shakespeare), "--out_dir", str(out), "--max_steps", "6", *TINY_ARGS,
                "--ckpt_interval", "3"])
    return out


def load_checkpoint(path):
    """A pretraining checkpoint (run folder, pointer or file), loaded as every script loads it."""
    from checkpoint import load_checkpoint as load
    from config import CKPT_FORMAT

    return load(path, CKPT_FORMAT)


def user_error(main, argv, capsys) -> str:
    """What a script says about bad input: exit status 2 and one line on stderr, its last (returned; a progress
    bar may come before it)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert e.value.code == 2 and len(errors) == 1 and err.rstrip().endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


def kill_after_step(cmd, log_path, step, timeout=300):
    """Start ``cmd``, watch its log.jsonl until a train line of ``step`` appears, then SIGKILL it (a crash from
    outside: no flag in the code under test). Returns the exit status (-9 when the kill landed)."""
    import json
    import signal
    import subprocess
    import time

    def reached():
        lines = log_path.read_text().splitlines() if log_path.is_file() else []
        rows = [json.loads(line) for line in lines if line.endswith("}")]  # a line being written is skipped
        return any(r.get("step") == step and "loss" in r for r in rows)

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if reached():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    return proc.wait(timeout=60)
