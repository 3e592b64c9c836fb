"""train.py's run folder: what its checkpoints hold, which folder it may write, and whether a resume may continue.

    OUT/ckpt/ckpt_00000040.pt + OUT/ckpt/latest     checkpoints in checkpoint.py's layout (the last K kept)

The layout, atomic saves and safe loads are checkpoint.py's (the copy shared with pretrain/); the folder rule is
fileio.claim_output_dir's (the copy shared by every folder): never into or around an input, never over anything but
an earlier finetuning run, that one only with --resume or --overwrite. This file says what a finetuning checkpoint
holds (``KIND``), which names a run writes (``RUN_FILES``), and that a resume continues the very same run.
Order: ``claim`` at start-up creates and deletes nothing; ``start_fresh`` runs only once the data and the model
were checked, so a refused run leaves an earlier run whole and no empty folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from checkpoint import CheckpointError, Kind, latest
from fileio import OutputDir, OutputError, claim_output_dir

# what train.py's Trainer.state() writes (format_version 1 had another layout: ckpt/step-N.pt + latest.json);
# "data_sha256" (the examples trained on) is optional: checkpoints written before it resume without the data check
KIND = Kind("llmhw-finetune-ckpt", 2, ("step", "epoch", "batch_in_epoch", "tokens", "evals", "train_losses",
                                       "seconds", "run_id", "world_size", "train_config", "lora_config", "model",
                                       "optimizer", "rng"))
OUTPUT_KIND = "finetuning run"
# every top-level name a run writes (tb/ and wandb/: --live logging)
RUN_FILES = ("config.json", "log.jsonl", "summary.json", "ckpt", "adapter", "model", "curve.png", "tb", "wandb")


def ckpt_dir(out: str | Path) -> Path:
    return Path(out) / "ckpt"


def claim(output_dir: str, resume: bool, overwrite: bool, inputs: list) -> tuple[OutputDir, Path | None]:
    """The run folder (fileio's rule) and the checkpoint to resume from (None: a fresh run). Removes only the
    temporaries of killed writes (checkpoints, adapter or model swaps); creates and deletes nothing else."""
    out = claim_output_dir(output_dir, OUTPUT_KIND, RUN_FILES, overwrite=overwrite, resume=resume, inputs=inputs,
                           flag="--output_dir")
    refuse_foreign_config(out.path)
    if not resume:
        return out, None
    path = latest(ckpt_dir(out.path))
    if path is None:
        raise CheckpointError(f"--resume: {out.path} has no checkpoint ({ckpt_dir(out.path)}/latest); start "
                              "without --resume")
    return out, path


def refuse_foreign_config(folder: Path) -> None:
    """A config.json is one of our names, but a HF model folder has one too: ours say what they are."""
    path = folder / "config.json"
    if not path.is_file():
        return
    try:  # ours say so (older ones have no format but a lora_dim)
        config = json.loads(path.read_text(encoding="utf-8"))
        ours = config.get("format") == "llmhw-finetune-config" or "lora_dim" in config
    except (ValueError, UnicodeDecodeError, AttributeError):
        ours = False
    if not ours:
        raise OutputError(f"--output_dir {folder}: holds a config.json that is not a finetuning run's (a model "
                          "folder?); choose an empty or new folder (nothing was deleted)")


def start_fresh(out: OutputDir) -> None:
    """A fresh run, its inputs checked: the folder made, and an earlier run's checkpoints deleted (they must never be
    resumed into this run). The earlier results (adapter/ or model/, summary.json, curve.png) stay until this run
    replaces them at its end."""
    out.create()
    shutil.rmtree(ckpt_dir(out.path), ignore_errors=True)


def check_resumable(state: dict, train_config: dict, world_size: int, path: Path, data_sha256: str,
                    allow_new_data: bool) -> bool:
    """A resume continues the very run of the checkpoint: same training settings, same number of processes, the
    same examples (unless ``allow_new_data``). Returns whether the data differ (then allowed)."""
    saved = state.get("train_config", {})
    skip = {"data_dir"} | ({"data_path"} if allow_new_data else set())
    diff = [f"--{k} {saved.get(k)} (now {v})" for k, v in train_config.items() if k not in skip and saved.get(k) != v]
    if state.get("world_size") != world_size:
        diff.append(f"{state.get('world_size')} process(es) (now {world_size})")
    if diff:
        raise CheckpointError(f"--resume: {path} was made with {', '.join(diff[:4])}; resume with the same "
                              "settings or start a new run")
    new_data = state.get("data_sha256") not in (None, data_sha256)
    if new_data and not allow_new_data:
        raise CheckpointError(f"--resume: {path} was trained on other data (the examples of --data_path "
                              f"{train_config['data_path']} changed since); pass --allow_new_data to continue on "
                              "these, or start a new run")
    return new_data
