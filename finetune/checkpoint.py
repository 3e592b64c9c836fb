"""Training checkpoints of train.py: step-numbered files, a latest pointer, the last K kept; safe to load.

    OUT/ckpt/step-00000040.pt    one checkpoint (format llmhw-finetune-ckpt v1, fields in finetune/README.md)
    OUT/ckpt/latest.json         {"format", "version", "step", "file"}: the newest complete checkpoint

Every file is written aside and renamed into place (fileio.atomic_write), the checkpoint before the pointer, and old
checkpoints are deleted only after the pointer names the new one: a kill at any instant leaves a loadable latest.
Checkpoints hold tensors and plain Python types only, so they load with ``torch.load(weights_only=True)`` (a file
from elsewhere can never run code); a truncated, empty or foreign file is one line naming it.
"""
from __future__ import annotations

import json
import pickle
import random
import zipfile
from pathlib import Path

import torch

from fileio import atomic_write, atomic_write_json

FORMAT, VERSION = "llmhw-finetune-ckpt", 1
POINTER = "latest.json"
FIELDS = ("step", "epoch", "batch_in_epoch", "tokens", "evals", "train_losses", "seconds", "run_id", "world_size",
          "train_config", "lora_config", "model", "optimizer", "rng")  # what train.py's Trainer.state() writes


class CheckpointError(ValueError):
    """A checkpoint or its pointer that cannot be used; the message is one line naming the file."""


def ckpt_dir(out: str | Path) -> Path:
    return Path(out) / "ckpt"


def rng_state() -> dict:
    """This process's random states as tensors and plain types (weights_only-loadable)."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))  # version 3 = the Mersenne Twister's state tuple
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(out: str | Path, state: dict, keep: int) -> Path:
    """Write ``state`` (must hold "step") as the newest checkpoint, point latest at it, keep the newest ``keep``."""
    folder = ckpt_dir(out)
    path = folder / f"step-{state['step']:08d}.pt"
    with atomic_write(path, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)
    atomic_write_json(folder / POINTER, {"format": FORMAT, "version": VERSION, "step": state["step"],
                                         "file": path.name})
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:  # zero-padded step numbers sort in step order
        old.unlink(missing_ok=True)
    return path


def latest(out: str | Path) -> Path | None:
    """The checkpoint the latest pointer names, or None when there is no pointer."""
    pointer = ckpt_dir(out) / POINTER
    if not pointer.is_file():
        return None
    try:
        meta = json.loads(pointer.read_text(encoding="utf-8"))
        name = meta["file"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{pointer}: not a checkpoint pointer (expected JSON with a 'file' field)") from None
    if meta.get("format") != FORMAT or Path(name).name != name:
        raise CheckpointError(f"{pointer}: format {meta.get('format')!r}, file {name!r}; not this trainer's pointer")
    return ckpt_dir(out) / name


def load(path: str | Path) -> dict:
    """A checkpoint's contents on the CPU; never unpickles code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, empty or foreign file: {first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')}; this code reads up to {VERSION}")
    missing = [k for k in FIELDS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


# ------------------------------------------------------------------------------------------------ the run folder

RUN_FILES = ("config.json", "log.jsonl", "summary.json", "ckpt", "adapter", "model", "curve.png")
MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# other kinds of outputs: a pretraining run, a shard folder, a tokenizer folder, a data partition
FOREIGN_FILES = MODEL_FILES + ("ckpt.pt", "meta.json", "tokenizer.json", "split.json", "hf")


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
        path = latest(out)
        if path is None:
            raise CheckpointError(f"--resume: {out} has no checkpoint ({ckpt_dir(out) / POINTER}); start without "
                                  "--resume")
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file is missing (named by {ckpt_dir(out) / POINTER})")
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
