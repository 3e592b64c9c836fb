"""Loading a causal LM for finetuning or generation: its shape from the config alone, its weights, one-line errors.

Used by train.py (finetuning) and generate.py (responses); model code itself is transformers'.
"""
from __future__ import annotations

from pathlib import Path

import torch


def model_load_error(name: str, e: Exception) -> ValueError:
    """One line naming the model and the cause; for a hub name, how to go on without the hub."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    hint = ("" if Path(name).exists() else " (no local folder of that name; without the hub, pass a local HF model "
            "folder, e.g. --model_name_or_path pretrain/output/tiny-cpu/hf, which `python pretrain/train.py` writes)")
    return ValueError(f"cannot load model '{name}': {first}{hint}")


def model_shape(name: str) -> tuple[int | None, int | None]:
    """(positions, vocabulary size) of the model, read from its config alone (cheap, before any weights load)."""
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise model_load_error(name, e) from None
    return (getattr(conf, "n_positions", None) or getattr(conf, "max_position_embeddings", None),
            getattr(conf, "vocab_size", None))


def load_model(name: str, device: torch.device):
    """A float32 AutoModelForCausalLM on ``device`` (autocast, not the weights, decides the compute dtype)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except Exception as e:  # OSError, ValueError, safetensors' own error for a truncated or foreign weights file
        raise model_load_error(name, e) from None
    return model.to(device)
