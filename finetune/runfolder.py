"""train.py's run folder: what its checkpoints hold, which folder it may write, and whether a resume may continue.

    OUT/ckpt/ckpt_00000040.pt + OUT/ckpt/latest     checkpoints in checkpoint.py's layout (the last K kept)

The layout, atomic saves and safe loads are checkpoint.py's (the copy shared with pretrain/); this file says what a
finetuning checkpoint holds (``KIND``) and the run-folder rules: never into or around an input, never over another
kind of output, an earlier run only with --resume or --overwrite, a resume only with the same settings.
"""
from __future__ import annotations

import json
from pathlib import Path

from checkpoint import CheckpointError, Kind, latest

# what train.py's Trainer.state() writes (format_version 1 had another layout: ckpt/step-N.pt + latest.json)
KIND = Kind("llmhw-finetune-ckpt", 2, ("step", "epoch", "batch_in_epoch", "tokens", "evals", "train_losses",
                                       "seconds", "run_id", "world_size", "train_config", "lora_config", "model",
                                       "optimizer", "rng"))
RUN_FILES = ("config.json", "log.jsonl", "summary.json", "ckpt", "adapter", "model", "curve.png")
MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# other kinds of outputs: a pretraining run, a shard folder, a tokenizer folder, a data partition
FOREIGN_FILES = MODEL_FILES + ("ckpt.pt", "meta.json", "tokenizer.json", "split.json", "hf")


def ckpt_dir(out: str | Path) -> Path:
    return Path(out) / "ckpt"


def refuse_overlap(out: Path, flag: str, given: str | None) -> None:
    """A run folder must be neither an input, nor inside one, nor around one (it would write over it)."""
    if not given or not Path(given).expanduser().exists():
        return  # a hub name, or nothing
    path = Path(given).expanduser().resolve()
    if out == path or path in out.parents or out in path.parents:
        raise ValueError(f"--output_dir {out} overlaps {flag} {path}: a run never writes into or around its "
                         "inputs; choose another --output_dir")


def plan_resume(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); refuses a folder holding another run unless told."""
    foreign = [f for f in FOREIGN_FILES if (out / f).exists()]
    if (out / "config.json").is_file() and not foreign:
        try:  # ours say so (older ones have no format but a lora_dim); a HF model folder's do not
            config = json.loads((out / "config.json").read_text(encoding="utf-8"))
            ours = config.get("format") == "llmhw-finetune-config" or "lora_dim" in config
        except (ValueError, UnicodeDecodeError, AttributeError):
            ours = False
        foreign += [] if ours else ["config.json"]
    if foreign:
        raise ValueError(f"--output_dir {out} holds another kind of output ({', '.join(foreign)}); a finetuning "
                         "run never writes there, even with --overwrite: choose another --output_dir")
    if resume:
        path = latest(ckpt_dir(out))
        if path is None:
            raise CheckpointError(f"--resume: {out} has no checkpoint ({ckpt_dir(out)}/latest); start without "
                                  "--resume")
        return path
    found = [f for f in RUN_FILES if (out / f).exists()]
    if found and not overwrite:
        raise ValueError(f"--output_dir {out} holds an earlier run ({', '.join(found)}); pass --resume to continue "
                         "it or --overwrite to replace it")
    if found:  # its checkpoints must not be resumed into this run later; its results stay until this run ends
        import shutil
        shutil.rmtree(ckpt_dir(out), ignore_errors=True)
    return None


def check_resumable(state: dict, train_config: dict, world_size: int, path: Path) -> None:
    """A resume continues the very run of the checkpoint: same training settings, same number of processes."""
    saved = state.get("train_config", {})
    diff = [f"--{k} {saved.get(k)} (now {v})" for k, v in train_config.items()
            if k != "data_dir" and saved.get(k) != v]
    if state.get("world_size") != world_size:
        diff.append(f"{state.get('world_size')} process(es) (now {world_size})")
    if diff:
        raise CheckpointError(f"--resume: {path} was made with {', '.join(diff[:4])}; resume with the same "
                              "settings or start a new run")
