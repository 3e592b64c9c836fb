"""train.py's settings: TrainConfig (what is trained, on what, how), RunConfig (where and how a run goes), the command
line. Every flag becomes a field's flag (flags.py). All settings are checked here, once, before any work, by one
rules table (one line naming the flag and value); the trainer trusts them afterwards.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import lora
from data import DEFAULT_DATA, TEMPLATES
from ddp import DEFAULT_TIMEOUT_S, device_problem
from flags import add_flags, given
from models import DTYPES
from runlog import LIVE_CHOICES

HERE = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A setting that cannot work; the message names the flag and its value."""


def option(default, text):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """What is trained, on what, how: a --resume must give the same values (the checkpoint's are compared)."""
    model_name_or_path: str = option("gpt2", "HF causal-LM folder (e.g. pretrain's export) or hub name")
    data_path: str = option(DEFAULT_DATA, "Alpaca .json/.jsonl/.json.xz file, a data-directory name, or a HF dataset")
    data_dir: str | None = option(None, "data directory (default $LLMHW_DATA_DIR)")
    template: str = option("homework", f"prompt template: {sorted(TEMPLATES)}")
    max_length: int = option(512, "truncate examples to this many tokens (lowered to the model's context)")
    max_examples: int | None = option(None, "use a deterministic subset of N records (chosen by --data_seed)")
    eval_ratio: float = option(0.01, "fraction of the examples held out for evaluation")
    data_seed: int = option(42, "seed of the subset and the train/eval split: keep it fixed across compared runs")
    seed: int = option(42, "seed of the LoRA init, the shuffling of each epoch and dropout")
    # what is trained: LoRA adapters on the matching modules, or (lora_dim 0) every weight
    lora_dim: int = option(8, "LoRA rank; 0 = full finetuning")
    lora_scaling: float = option(32.0, "LoRA alpha: scaling = lora_scaling / lora_dim")
    lora_module_name: str = option("h.", "adapt Linear/Conv1D modules whose name contains this")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch input")
    use_rslora: bool = option(False, "rsLoRA: scaling = lora_scaling / sqrt(lora_dim)")
    lora_load_path: str | None = option(None, "start from this adapter (ours or PEFT's)")
    # how long and how: the learning-rate schedule spans all the steps (get_lr)
    epochs: int = option(3, "passes over the training split (unless --max_steps)")
    max_steps: int | None = option(None, "stop after this many optimizer steps (the schedule spans them)")
    train_batch_size: int = option(8, "examples per micro-batch per rank")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-4, "peak learning rate")
    lr_warmup_ratio: float = option(0.1, "fraction of the steps with linear warmup")
    weight_decay: float = option(0.0, "AdamW weight decay (matrices only)")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)")
    group_by_length: bool = option(False, "batch examples of similar length together (about 2x fewer padded tokens)")


@dataclass
class RunConfig:
    """Where and how a run goes: may change on --resume."""
    output_dir: str | None = option(None, "run folder (default finetune/out/r<lora_dim>)")
    resume: bool = option(False, "continue from the run folder's latest checkpoint (exactly)")
    overwrite: bool = option(False, "replace an earlier run in --output_dir (its results stay until this run ends)")
    allow_new_data: bool = option(False, "--resume on data other than the checkpoint's: continue on this data "
                                         "instead of refusing")
    allow_other_base: bool = option(False, "--lora_load_path: use an adapter that records another base model")
    # evaluations and checkpoints (they do not change what is trained)
    eval_batch_size: int = option(8, "examples per eval batch per rank")
    eval_interval: int = option(100, "evaluate every N steps (0 = only before and after training)")
    evals_per_epoch: int = option(0, "if > 0: evaluate this many times per epoch (sets --eval_interval)")
    ckpt_interval: int = option(500, "checkpoint every N steps (0 = only at the end); always at the end")
    keep_checkpoints: int = option(2, "keep the newest K step-numbered checkpoints in ckpt/")
    # hardware and logging
    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    dtype: str = option("auto", "auto (bfloat16 autocast + TF32 on CUDA, float32 on CPU), float32 or bfloat16")
    live: str = option("none", f"live logging: {', '.join(LIVE_CHOICES)} (imported only when asked)")
    ddp_timeout: float = option(DEFAULT_TIMEOUT_S, "seconds a DDP collective may wait for the other ranks")


# (flags, test, what the value must be): every value setting, checked in this order
RULES = [
    (("max_length", "epochs", "train_batch_size", "gradient_accumulation_steps", "eval_batch_size",
      "keep_checkpoints"), lambda v: v > 0, "must be > 0"),
    (("max_steps", "max_examples"), lambda v: v is None or v > 0, "must be > 0"),
    (("lr", "lora_scaling", "ddp_timeout"), lambda v: v > 0, "must be > 0"),
    (("lora_dim",), lambda v: v >= 0, "must be >= 0 (0 = full finetuning)"),
    (("weight_decay", "grad_clip", "eval_interval", "evals_per_epoch", "ckpt_interval"), lambda v: v >= 0,
     "must be >= 0"),
    (("lr_warmup_ratio",), lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    (("eval_ratio",), lambda v: 0 < v < 1, "must be in (0, 1)"),
    (("lora_dropout",), lambda v: 0 <= v < 1, "must be in [0, 1)"),
    (("template",), lambda v: v in TEMPLATES, f"must be one of {', '.join(sorted(TEMPLATES))}"),
    (("dtype",), lambda v: v in DTYPES, f"must be one of {', '.join(DTYPES)}"),
    (("live",), lambda v: v in LIVE_CHOICES, f"must be one of {', '.join(LIVE_CHOICES)}"),
]


def validate(tc: TrainConfig, rc: RunConfig) -> None:
    """Every setting that cannot work -> ConfigError naming the flag and value (adapter files are read here too)."""
    values = {f.name: getattr(cfg, f.name) for cfg in (tc, rc) for f in fields(cfg)}
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{name} must be a finite number, got {value}")
    for names, ok, what in RULES:
        for name in names:
            if not ok(values[name]):
                raise ConfigError(f"--{name} {what}, got {values[name]!r}")
    if device_problem(rc.device):
        raise ConfigError(device_problem(rc.device))
    if rc.resume and rc.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: choose one")
    if tc.lora_load_path:
        check_adapter(tc, rc)


def check_adapter(tc: TrainConfig, rc: RunConfig) -> None:
    """--lora_load_path: a LoRA run of the adapter's rank, on the base the adapter records (unless allowed)."""
    if tc.lora_dim == 0:
        raise ConfigError("--lora_load_path needs --lora_dim > 0 (0 means full finetuning)")
    rank = lora.adapter_rank(tc.lora_load_path)  # not an adapter folder: FileNotFoundError, one line
    if rank != tc.lora_dim:
        raise ConfigError(f"--lora_load_path {tc.lora_load_path} holds a rank-{rank} adapter, but --lora_dim is "
                          f"{tc.lora_dim}; pass that rank")
    lora.check_adapter_base(tc.lora_load_path, tc.model_name_or_path, "--model_name_or_path", rc.allow_other_base)


def parse_args(argv=None, doc: str | None = None) -> tuple[TrainConfig, RunConfig]:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p.add_argument_group("training (a --resume must match the checkpoint's)"), TrainConfig)
    add_flags(p.add_argument_group("run"), RunConfig)
    args = p.parse_args(argv)
    tc, rc = TrainConfig(**given(args, TrainConfig)), RunConfig(**given(args, RunConfig))
    rc.output_dir = rc.output_dir or str(HERE / "out" / f"r{tc.lora_dim}")
    try:
        validate(tc, rc)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    return tc, rc
