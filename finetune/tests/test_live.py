"""--live tensorboard and --live wandb for real (both packages are in requirements-test.txt): a tiny run's event file
and its offline W&B run, read back (livelogs.py), hold exactly what log.jsonl holds; live logging is off by default
and a missing package is one line."""
import sys
from pathlib import Path

from conftest import user_error

import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # livelogs.py beside this file (importlib import mode)
from livelogs import assert_tensorboard_holds_the_log, assert_wandb_holds_the_log, wandb_offline


def run_args(model_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--out_dir", str(out), "--max_examples", "48",
            "--eval_ratio", "0.25", "--batch_size", "4", "--eval_batch_size", "4", "--max_length", "96",
            "--max_steps", "3", "--eval_interval", "2", "--lr", "1e-2", "--lora_dim", "2", *extra]


def test_tensorboard_event_file_holds_the_log(tiny_model_dir, tmp_path):
    train.main(run_args(tiny_model_dir, tmp_path, "--live", "tensorboard"))
    assert_tensorboard_holds_the_log(tmp_path, {"train_loss", "eval_loss"})


def test_offline_wandb_run_holds_the_log(tiny_model_dir, tmp_path, monkeypatch):
    wandb_offline(monkeypatch, tmp_path / "env")
    train.main(run_args(tiny_model_dir, tmp_path / "run", "--live", "wandb"))
    assert_wandb_holds_the_log(tmp_path / "run", "eval_loss")


def test_live_logging_is_off_by_default_and_a_missing_package_is_one_line(tiny_model_dir, tmp_path, monkeypatch):
    for name in ("wandb", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    train.main(run_args(tiny_model_dir, tmp_path / "off", "--max_steps", "1"))  # would fail if it imported one
    assert not (tmp_path / "off" / "tb").exists() and not (tmp_path / "off" / "wandb").exists()
    for live in ("wandb", "tensorboard"):
        assert user_error(train.main, run_args(tiny_model_dir, tmp_path / live, "--live", live)) == \
            f"error: --live {live}: the {live} package is not installed (pip install {live})"
