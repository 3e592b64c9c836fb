"""--live tensorboard and --live wandb for real (both packages are in requirements-test.txt): a tiny run's event file
and its offline W&B run, read back (livelogs.py), hold exactly what log.jsonl holds. (Off by default and a missing
wandb: test_train.py; a missing tensorboard here.)"""
import sys
from pathlib import Path

import pytest

import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # livelogs.py beside this file (importlib import mode)
from conftest import TINY_ARGS
from livelogs import assert_tensorboard_holds_the_log, assert_wandb_holds_the_log, wandb_offline


def run_args(data, out, *extra):
    return ["--data", str(data), "--out_dir", str(out), *TINY_ARGS, "--max_steps", "3", "--eval_interval", "2",
            "--hellaswag_limit", "0", "--sample_tokens", "0", "--val_steps", "1", *extra]


def test_tensorboard_event_file_holds_the_log(shakespeare, tmp_path):
    train.main(run_args(shakespeare, tmp_path, "--live", "tensorboard"))
    assert_tensorboard_holds_the_log(tmp_path, {"loss", "val_loss"})


def test_offline_wandb_run_holds_the_log(shakespeare, tmp_path, monkeypatch):
    wandb_offline(monkeypatch, tmp_path / "env")
    train.main(run_args(shakespeare, tmp_path / "run", "--live", "wandb"))
    assert_wandb_holds_the_log(tmp_path / "run", "val_loss")


def test_a_missing_tensorboard_is_one_line(shakespeare, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it now raises ImportError
    with pytest.raises(SystemExit):
        train.main(run_args(shakespeare, tmp_path, "--live", "tensorboard"))
    err = capsys.readouterr().err
    assert "error: --live tensorboard: the tensorboard package is not installed (pip install tensorboard)" in err
