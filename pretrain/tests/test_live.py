"""--live tensorboard and --live wandb for real (both packages are in requirements-test.txt): a tiny run's event file
and its offline W&B run, read back (livelogs.py), hold exactly what log.jsonl holds. (Off by default and a missing
wandb: test_train.py; a missing tensorboard here.)"""
import sys
from pathlib import Path

import pytest

import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # livelogs.py beside this file (importlib import mode)
from conftest import TINY_ARGS
from livelogs import expected_tensorboard, expected_wandb, log_rows, read_wandb_run, tensorboard_scalars, wandb_offline


def run_args(data, out, *extra):
    return ["--data", str(data), "--out_dir", str(out), *TINY_ARGS, "--max_steps", "3", "--eval_interval", "2",
            "--hellaswag_limit", "0", "--sample_tokens", "0", "--val_steps", "1", *extra]


def test_tensorboard_event_file_holds_the_log(shakespeare, tmp_path):
    train.main(run_args(shakespeare, tmp_path, "--live", "tensorboard"))
    got = tensorboard_scalars(tmp_path / "tb")
    assert got == expected_tensorboard(log_rows(tmp_path)) and {"loss", "val_loss"} <= set(got)


def test_offline_wandb_run_holds_the_log(shakespeare, tmp_path, monkeypatch):
    wandb_offline(monkeypatch, tmp_path / "env")
    train.main(run_args(shakespeare, tmp_path / "run", "--live", "wandb"))
    history = read_wandb_run(tmp_path / "run")
    assert history == expected_wandb(log_rows(tmp_path / "run")) and any("val_loss" in h for h in history)


def test_a_missing_tensorboard_is_one_line(shakespeare, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it now raises ImportError
    with pytest.raises(SystemExit):
        train.main(run_args(shakespeare, tmp_path, "--live", "tensorboard"))
    err = capsys.readouterr().err
    assert "error: --live tensorboard: the tensorboard package is not installed (pip install tensorboard)" in err
