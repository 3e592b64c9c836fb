"""Training checkpoints, one layout for every trainer: step-numbered files, one pointer, the last K kept, safe loads.

One identical copy of this file lives in pretrain/ and finetune/ (they share no code; a test checks the copies stay
identical; the canonical copy is pretrain/checkpoint.py).

    FOLDER/ckpt_000500.pt    one checkpoint: torch.save of {"format", "format_version", **state}
    FOLDER/latest            one line naming the newest complete checkpoint file ("ckpt_000500.pt")

FOLDER is the run folder (pretrain/train.py) or the run's ``ckpt/`` (finetune/train.py). Anything that takes a
checkpoint accepts FOLDER (its ``latest``), the ``latest`` pointer or any step file (``resolve_checkpoint``).

Every file is written aside and renamed into place (fileio.save_torch / atomic_write_text), the checkpoint before
the pointer, and old checkpoints are deleted only after the pointer names the new one: a kill at any instant leaves
a loadable latest (the temp file of a killed write is removed by the next start: fileio.claim_output_dir); a full
disk is one line naming the disk and the MiB free, torch's own "unexpected pos" failure included.
Checkpoints hold tensors and plain Python values only (dicts, lists, str, numbers, None; RNG states too), so they
load with ``torch.load(weights_only=True)``, which never runs code from the file. Each trainer names its ``Kind``
(format name, version, required fields); a foreign, empty, truncated or other-version file raises
``CheckpointError``: one line naming the file and the fault.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fileio import atomic_write_text, save_torch

LATEST = "latest"
STEP_FILE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of ours; the message is one line naming the file and the fault."""


@dataclass(frozen=True)
class Kind:
    """What one trainer's checkpoints are: the format name and version written into them, the fields they hold."""
    format: str
    version: int
    required: tuple[str, ...]


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:06d}.pt"


def step_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The step-numbered checkpoint files of a folder, oldest step first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("ckpt_*.pt") if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file meant by ``path``: a folder (its ``latest``), the ``latest`` pointer, or a file."""
    p = Path(path)
    if p.is_dir():
        if not (p / LATEST).is_file():
            raise CheckpointError(f"{p}: no checkpoint here (no '{LATEST}' pointer file)")
        p = p / LATEST
    if p.name == LATEST and p.is_file():
        name = p.read_text(encoding="utf-8", errors="replace").strip()
        if not STEP_FILE.match(name):
            raise CheckpointError(f"{p}: not a checkpoint pointer (expected one line 'ckpt_NNNNNN.pt', "
                                  f"got {name[:40]!r})")
        target = p.parent / name
        if not target.is_file():
            raise CheckpointError(f"{p}: points to {name}, which is missing")
        return target
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    return p


def latest(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint of ``folder``, or None when it has no pointer (a bad pointer is an error)."""
    return resolve_checkpoint(folder) if (Path(folder) / LATEST).exists() else None


def _safe_load(p: Path, map_location) -> dict:
    """torch.load(weights_only=True) with each failure turned into one line (never torch's advice to drop
    weights_only: that would run the file's code)."""
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p}: empty file, not a checkpoint")
    with open(p, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # torch.save's zip container
    try:
        with warnings.catch_warnings():  # a foreign pickle makes torch warn before it fails: the error says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        if "Weights only load failed" in str(e):
            raise CheckpointError(f"{p}: refused: holds Python objects that a safe load does not run (an older "
                                  "or foreign checkpoint format)") from None
        if zipped:
            first = str(e).strip().split(". ")[0].splitlines()[0][:120]
            raise CheckpointError(f"{p}: truncated or corrupt checkpoint ({size} bytes; {first})") from None
        raise CheckpointError(f"{p}: not a PyTorch checkpoint file ({size} bytes)") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def load_checkpoint(path: str | os.PathLike, kind: Kind, map_location="cpu") -> dict:
    """The checkpoint dict at ``path`` (folder, pointer or file), checked for format, version and fields; its
    file is added as ``"path"``."""
    p = resolve_checkpoint(path)
    ckpt = _safe_load(p, map_location)
    if ckpt.get("format") != kind.format:
        raise CheckpointError(f"{p}: not a checkpoint of this trainer (format {str(ckpt.get('format'))[:40]!r}, "
                              f"expected {kind.format!r})")
    if ckpt.get("format_version") != kind.version:
        raise CheckpointError(f"{p}: checkpoint format_version {ckpt.get('format_version')!r}, this code reads "
                              f"{kind.version}")
    missing = [k for k in kind.required if k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: checkpoint misses field(s) {', '.join(missing)}")
    ckpt["path"] = str(p)
    return ckpt


def save_checkpoint(folder: str | os.PathLike, state: dict, kind: Kind, keep: int = 2) -> Path:
    """Write ``ckpt_<step>.pt`` atomically, point ``latest`` at it, then delete all but the newest ``keep``."""
    folder = Path(folder)
    path = save_torch({"format": kind.format, "format_version": kind.version, **state},
                      folder / checkpoint_name(state["step"]))
    atomic_write_text(folder / LATEST, path.name + "\n")  # only now does the new checkpoint count
    for old in step_checkpoints(folder)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------- RNG states in weights_only types
def rng_state() -> dict:
    """Every RNG this process draws from (Python, numpy, torch CPU, this process's CUDA device), as tensors /
    lists / numbers, which torch.load(weights_only=True) accepts. Under torchrun each rank saves its own."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # the current device only: one per rank
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
