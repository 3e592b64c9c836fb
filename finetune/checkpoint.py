"""Training checkpoints, one layout for both trainers: step-numbered files, one pointer, the newest K kept.

One identical copy in pretrain/ and finetune/ (checked by tests/test_layout.py; canonical here).

    FOLDER/ckpt_000500.pt    torch.save of {"format": "<trainer's format string>", **state}
    FOLDER/latest            one line naming the newest complete checkpoint ("ckpt_000500.pt")

The checkpoint is written aside and renamed into place before the pointer moves, and old ones are deleted only
after: a kill at any instant leaves a loadable latest. Checkpoints hold tensors and plain Python values (RNG states
too), so they load with ``torch.load(weights_only=True)``, which never runs code from the file; a foreign, truncated
or other-format file is one line (``CheckpointError``). A format change is a new format string.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from fileio import atomic_write_text, save_torch

LATEST = "latest"
STEP_FILE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of ours; the message is one line naming the file and the fault."""


def step_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The step-numbered checkpoint files of a folder, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("ckpt_*.pt") if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file meant by ``path``: a folder (its ``latest``), the ``latest`` pointer, or a file."""
    p = Path(path)
    p = p / LATEST if p.is_dir() else p
    if p.name == LATEST and p.is_file():
        name = p.read_text(encoding="utf-8", errors="replace").strip()
        if not STEP_FILE.match(name) or not (p.parent / name).is_file():
            raise CheckpointError(f"{p}: not a pointer to a checkpoint here ({name[:40]!r})")
        p = p.parent / name
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint" + (f" (no '{LATEST}' pointer file)" if p.name == LATEST
                                                              else ""))
    return p


def latest(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint of ``folder``, or None when it has no pointer."""
    return resolve_checkpoint(folder) if (Path(folder) / LATEST).exists() else None


def load_checkpoint(path: str | os.PathLike, fmt: str, map_location="cpu") -> dict:
    """The checkpoint at ``path`` (folder, pointer or file), loaded safely and checked to be ``fmt``; its file is
    added as ``"path"``. Never torch's advice to drop weights_only: that would run the file's code."""
    p = resolve_checkpoint(path)
    try:
        with warnings.catch_warnings():  # a foreign pickle makes torch warn before it fails: our error says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        why = ("holds Python objects that a safe load does not run" if "Weights only load failed" in str(e)
               else f"truncated or not a PyTorch checkpoint ({p.stat().st_size} bytes)")
        raise CheckpointError(f"{p}: refused: {why}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{p}: not a checkpoint of this trainer (format {str(found)[:40]!r}, expected {fmt!r})")
    return {**ckpt, "path": str(p)}


def save_checkpoint(folder: str | os.PathLike, state: dict, fmt: str, keep: int = 2) -> Path:
    """Write ``ckpt_<step>.pt`` atomically, point ``latest`` at it, then delete all but the newest ``keep``."""
    folder = Path(folder)
    path = save_torch({"format": fmt, **state}, folder / f"ckpt_{state['step']:06d}.pt")
    atomic_write_text(folder / LATEST, path.name + "\n")  # only now does the new checkpoint count
    for old in step_checkpoints(folder)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def rng_state() -> dict:
    """Every RNG this process draws from (Python, numpy, torch CPU, this process's CUDA device) in types that
    torch.load(weights_only=True) accepts. Under torchrun each rank saves its own."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
