"""Training checkpoints, one layout for both trainers (identical copy in pretrain/ and finetune/; canonical here):

    FOLDER/ckpt_000500.pt    torch.save of {"format": "<trainer's format string>", **state}
    FOLDER/latest            one line naming the newest complete checkpoint ("ckpt_000500.pt")

Written aside and renamed into place before ``latest`` names it, old ones deleted after: a kill at any instant leaves
a loadable latest. Loaded with ``weights_only=True`` (tensors and plain values; no code from the file runs).
"""
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from fileio import atomic_write, atomic_write_text

LATEST = "latest"
STEP_FILE = re.compile(r"ckpt_(\d+)\.pt")


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of ours; the message is one line naming the file and the fault."""


def step_checkpoints(folder) -> list[Path]:
    """The step-numbered checkpoint files of a folder, oldest first."""
    found = [p for p in Path(folder).glob("ckpt_*.pt") if STEP_FILE.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(STEP_FILE.fullmatch(p.name)[1]))


def resolve_checkpoint(path) -> Path:
    """The checkpoint file meant by ``path``: a folder (its ``latest``), the ``latest`` pointer, or a file."""
    p = Path(path) / LATEST if Path(path).is_dir() else Path(path)
    if p.name == LATEST and p.is_file():
        name = p.read_text(encoding="utf-8", errors="replace").strip()
        if not STEP_FILE.fullmatch(name) or not (p.parent / name).is_file():
            raise CheckpointError(f"{p}: not a pointer to a checkpoint here ({name[:40]!r})")
        p = p.parent / name
    if not p.is_file():
        hint = f" (no '{LATEST}' pointer file)" if p.name == LATEST else ""
        raise CheckpointError(f"{p}: no such checkpoint{hint}")
    return p


def latest(folder) -> Path | None:
    """The newest checkpoint of ``folder``, or None when it has no pointer."""
    return resolve_checkpoint(folder) if (Path(folder) / LATEST).exists() else None


def load_checkpoint(path, fmt: str, map_location="cpu") -> dict:
    """The checkpoint at ``path`` (folder, pointer or file), loaded safely and checked to be ``fmt``; its file is
    added as ``"path"``. Never torch's advice to drop weights_only: that would run the file's code."""
    p = resolve_checkpoint(path)
    try:
        with warnings.catch_warnings(action="ignore"):  # a foreign pickle makes torch warn before it fails
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        why = ("holds Python objects that a safe load does not run" if "Weights only load failed" in str(e)
               else f"truncated or not a PyTorch checkpoint ({p.stat().st_size} bytes)")
        raise CheckpointError(f"{p}: refused: {why}") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if found != fmt:
        raise CheckpointError(f"{p}: not a checkpoint of this trainer (format {str(found)[:40]!r}, expected {fmt!r})")
    return {**ckpt, "path": str(p)}


def save_checkpoint(folder, state: dict, fmt: str, keep: int = 2) -> Path:
    """Write ``ckpt_<step>.pt`` atomically, point ``latest`` at it, then delete all but the newest ``keep``."""
    path = Path(folder) / f"ckpt_{state['step']:06d}.pt"
    with atomic_write(path) as f:
        torch.save({"format": fmt, **state}, f)
    atomic_write_text(path.parent / LATEST, path.name + "\n")  # only now does the new checkpoint count
    for old in step_checkpoints(folder)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def rng_state() -> dict:
    """Every RNG this process draws from (Python, numpy, torch CPU, this process's CUDA device) in types that
    torch.load(weights_only=True) accepts. Under torchrun each rank saves its own."""
    kind, keys, *rest = np.random.get_state()  # rest: pos, has_gauss, cached_gaussian (Python numbers)
    state = {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), *rest], "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]  # tuples (lists in checkpoints of earlier versions)
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
