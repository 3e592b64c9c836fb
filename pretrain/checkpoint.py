"""The one home of the training checkpoint format: save (atomic, keep the last K), find, load safely, build the model.

A run folder holds step-numbered checkpoints ``ckpt_000500.pt`` (the last ``keep`` of them) and a pointer file
``latest`` whose one line names the newest. Anything that takes a checkpoint (``--resume``, hellaswag.py, sample.py,
the HF export) accepts the run folder, the ``latest`` pointer or any ``ckpt_NNNNNN.pt`` (``resolve_checkpoint``).

A checkpoint is ``torch.save`` of a dict (the fields are listed in README.md, "Outputs") holding only tensors and
plain Python values (dicts, lists, str, numbers, None): it is loaded with ``torch.load(weights_only=True)``, which
never runs code from the file. RNG states are stored in such types (numpy's state as a list of ints).
A foreign, empty, truncated or other-version file raises ``CheckpointError``: one line naming the file and the fault.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from fileio import atomic_write, atomic_write_text
from modeling_gpt2 import GPT, GPTConfig

FORMAT = "llmhw-pretrain-checkpoint"
FORMAT_VERSION = 2  # 1: the pickled ckpt.pt of earlier versions (not loadable safely)
LATEST = "latest"
REQUIRED = ("model", "model_config", "step", "optimizer", "data_position", "rng", "train_config", "tokenizer")
STEP_FILE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of ours; the message is one line naming the file and the fault."""


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:06d}.pt"


def step_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The step-numbered checkpoint files of a run folder, oldest step first."""
    run_dir = Path(run_dir)
    found = [(int(m.group(1)), p) for p in run_dir.glob("ckpt_*.pt") if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file meant by ``path``: a run folder (its ``latest``), the ``latest`` pointer, or a file."""
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


def _safe_load(p: Path, map_location) -> dict:
    """torch.load(weights_only=True) with each failure turned into one line."""
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
            first = str(e).strip().split(". ")[0][:120]
            raise CheckpointError(f"{p}: truncated or corrupt checkpoint ({size} bytes; {first})") from None
        raise CheckpointError(f"{p}: not a PyTorch checkpoint file ({size} bytes)") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict at ``path`` (folder, pointer or file), checked for format, version and fields."""
    p = resolve_checkpoint(path)
    ckpt = _safe_load(p, map_location)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a pretrain checkpoint (format {str(ckpt.get('format'))[:40]!r}, expected "
                              f"{FORMAT!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format_version {ckpt.get('format_version')!r}, this code reads "
                              f"{FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: checkpoint misses field(s) {', '.join(missing)}")
    ckpt["path"] = str(p)
    return ckpt


def model_from_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[GPT, dict]:
    """(our GPT with the checkpoint's weights on ``device``, the checkpoint dict)."""
    ckpt = load_checkpoint(path)
    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt['path']}: model_config or weights do not fit "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.to(device), ckpt


def load_model(path: str | os.PathLike, device="cpu") -> GPT:
    """Our GPT from a checkpoint (run folder with ``latest``, pointer, ckpt file), a local HF folder or a hub name."""
    p = Path(path)
    if p.is_file() or (p.is_dir() and (p / LATEST).is_file()):
        return model_from_checkpoint(p, device)[0]
    return GPT.from_pretrained(p if p.is_dir() else str(path)).to(device)


def tokenizer_dir(path: str | os.PathLike) -> Path:
    """The tokenizer folder that belongs to a checkpoint (the run's ``tokenizer/``), or to a HF folder (itself)."""
    p = Path(path)
    if p.is_dir() and not (p / LATEST).is_file():
        return p
    return resolve_checkpoint(p).parent / "tokenizer"


def save_checkpoint(run_dir: str | os.PathLike, state: dict, keep: int = 2) -> Path:
    """Write ``ckpt_<step>.pt`` atomically, point ``latest`` at it, then delete all but the newest ``keep``."""
    run_dir = Path(run_dir)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    path = run_dir / checkpoint_name(state["step"])
    with atomic_write(path) as f:
        torch.save(state, f)
    atomic_write_text(run_dir / LATEST, path.name + "\n")  # only now does the new checkpoint count
    for old in step_checkpoints(run_dir)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------- RNG states in weights_only types
def rng_state() -> dict:
    """Every RNG a training step draws from, as tensors / lists / numbers (torch.load weights_only accepts them)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
