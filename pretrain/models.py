"""Loading our GPT for evaluation, sampling and export: from a training checkpoint, a HF folder or a hub name.

Used by hellaswag.py, sample.py and export.py (train.py builds its model itself). The checkpoint layout and the safe
loading are checkpoint.py's; this file names what a pretraining checkpoint holds (``KIND``).
"""
from __future__ import annotations

import os
from pathlib import Path

from checkpoint import LATEST, CheckpointError, Kind, load_checkpoint, resolve_checkpoint
from modeling_gpt2 import GPT, GPTConfig

# format_version 1 was the pickled ckpt.pt of earlier versions (not loadable safely); the fields: README "Outputs"
KIND = Kind("llmhw-pretrain-checkpoint", 2, ("model", "model_config", "step", "optimizer", "data_position", "rng",
                                             "train_config", "tokenizer"))


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint file, a ``latest`` pointer or a run folder holding one (else: a HF folder or a hub name)."""
    p = Path(path)
    return p.is_file() or (p.is_dir() and (p / LATEST).is_file())


def model_from_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[GPT, dict]:
    """(our GPT with the checkpoint's weights on ``device``, the checkpoint dict)."""
    ckpt = load_checkpoint(path, KIND)
    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt['path']}: model_config or weights do not fit "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.to(device), ckpt


def load_model(path: str | os.PathLike, device="cpu") -> GPT:
    """Our GPT from a checkpoint (run folder with ``latest``, pointer, ckpt file), a local HF folder or a hub name."""
    if is_checkpoint(path):
        return model_from_checkpoint(path, device)[0]
    p = Path(path)
    return GPT.from_pretrained(p if p.is_dir() else str(path)).to(device)


def tokenizer_dir(path: str | os.PathLike) -> Path:
    """The tokenizer folder that belongs to a checkpoint (the run's ``tokenizer/``), or to a HF folder (itself)."""
    p = Path(path)
    if p.is_dir() and not (p / LATEST).is_file():
        return p
    return resolve_checkpoint(p).parent / "tokenizer"
