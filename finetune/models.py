"""Loading a causal LM for finetuning or generation: its shape from the config alone, its weights, one-line errors;
where it runs (``--device``) and in which precision (``--dtype``, the same autocast for training and generation).

Used by train.py (finetuning), generate.py (responses) and merge.py; model code itself is transformers'.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

DTYPES = ("auto", "float32", "bfloat16")


def pick_device(spec: str) -> torch.device:
    """--device as a torch.device (auto: CUDA when there is one); the spec was checked with ddp.device_problem."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if spec == "auto" else torch.device(spec)


def autocast_for(dtype: str, device: torch.device):
    """A context factory for forward passes: bf16 autocast (``auto`` on CUDA, or asked), else nothing. On CUDA it
    also turns TF32 on for the fp32 matmuls left outside autocast (the CPU stays exact fp32)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def model_load_error(name: str, e: Exception) -> ValueError:
    """One line naming the model and the cause; for a hub name, how to go on without the hub."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # torch's own text advises turning the safe loader off: never quoted
    if "Weights only load failed" in first or "Unpickl" in type(e).__name__:
        first = ("its weights file holds Python objects, not only tensors: refused, since loading it could run code "
                 "(save the model as model.safetensors)")
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
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it: one line is ours
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except Exception as e:  # OSError, ValueError, safetensors' own error for a truncated or foreign weights file
        raise model_load_error(name, e) from None
    return model.to(device)
