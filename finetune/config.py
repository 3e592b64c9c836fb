"""train.py's settings (TrainConfig: a --resume must match it; RunConfig: where and how a run goes), their flags
(flags.py), and the checks at start-up: every value, the run folder, whether a checkpoint may be resumed.
"""
import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import checkpoint
import lora
from data import DEFAULT_DATA, TEMPLATES, resolve_data_path
from ddp import DEFAULT_TIMEOUT_S, device_problem, fail_together, from_rank0, gather
from fileio import OutputError, claim_output_dir
from flags import add_flags, typed_flags
from runlog import LIVE_CHOICES, LiveLogError

HERE = Path(__file__).resolve().parent
RUN_KIND = "finetuning run"  # the run folder (fileio.claim_output_dir) holds these names (tb/, wandb/: --live)
RUN_FILES = ("config.json", "log.jsonl", "summary.json", "ckpt", "adapter", "model", "curve.png", "tb", "wandb")
USER_ERRORS = (ValueError, FileNotFoundError, OutputError, LiveLogError)  # one line, exit status 2


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
    lora_alpha: float = option(32.0, "LoRA alpha (PEFT's lora_alpha): scaling = lora_alpha / lora_dim")
    lora_module_name: str = option("h.", "adapt Linear/Conv1D modules whose name contains this")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch input")
    use_rslora: bool = option(False, "rsLoRA: scaling = lora_alpha / sqrt(lora_dim)")
    lora_load_path: str | None = option(None, "start from this adapter (ours or PEFT's)")
    # how long and how: the learning-rate schedule spans all the steps (train.get_lr)
    epochs: int = option(3, "passes over the training split (unless --max_steps)")
    max_steps: int | None = option(None, "stop after this many optimizer steps (the schedule spans them)")
    batch_size: int = option(8, "examples per micro-batch per rank")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-4, "peak learning rate")
    lr_warmup_ratio: float = option(0.1, "fraction of the steps with linear warmup")
    weight_decay: float = option(0.0, "AdamW weight decay (matrices only)")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)")
    group_by_length: bool = option(False, "batch examples of similar length together (about 2x fewer padded tokens)")


@dataclass
class RunConfig:
    """Where and how a run goes: may change on --resume."""
    out_dir: str | None = option(None, "run folder (default finetune/out/r<lora_dim>)")
    resume: bool = option(False, "continue from the run folder's latest checkpoint (exactly)")
    overwrite: bool = option(False, "replace an earlier run in --out_dir (its results stay until this run ends)")
    allow_new_data: bool = option(False, "--resume on data other than the checkpoint's: continue, not refuse")
    allow_other_base: bool = option(False, "--lora_load_path: use an adapter that records another base model")
    eval_batch_size: int = option(8, "examples per eval batch per rank")
    eval_interval: int = option(100, "evaluate every N steps (0 = only before and after training)")
    evals_per_epoch: int = option(0, "if > 0: evaluate this many times per epoch (sets --eval_interval)")
    ckpt_interval: int = option(500, "checkpoint every N steps (0 = only at the end); always at the end")
    keep_checkpoints: int = option(2, "keep the newest K step-numbered checkpoints in ckpt/")
    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    dtype: str = option("auto", "auto (bfloat16 autocast + TF32 on CUDA, float32 on CPU), float32 or bfloat16")
    live: str = option("none", f"live logging: {', '.join(LIVE_CHOICES)} (imported only when asked)")
    ddp_timeout: float = option(DEFAULT_TIMEOUT_S, "seconds a DDP collective may wait for the other ranks")


# (flags, test, what the value must be): every value setting, checked in this order
RULES = [
    (("max_length", "epochs", "batch_size", "gradient_accumulation_steps", "eval_batch_size", "keep_checkpoints",
      "lr", "lora_alpha", "ddp_timeout", "max_steps", "max_examples"), lambda v: v is None or v > 0, "must be > 0"),
    (("lora_dim", "weight_decay", "grad_clip", "eval_interval", "evals_per_epoch", "ckpt_interval"),
     lambda v: v >= 0, "must be >= 0"),
    (("lr_warmup_ratio",), lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    (("eval_ratio",), lambda v: 0 < v < 1, "must be in (0, 1)"),
    (("lora_dropout",), lambda v: 0 <= v < 1, "must be in [0, 1)"),
    (("template",), lambda v: v in TEMPLATES, f"must be one of {', '.join(sorted(TEMPLATES))}"),
    (("dtype",), lambda v: v in lora.DTYPES, f"must be one of {', '.join(lora.DTYPES)}"),
    (("live",), lambda v: v in LIVE_CHOICES, f"must be one of {', '.join(LIVE_CHOICES)}"),
]


def validate(tc: TrainConfig, rc: RunConfig) -> None:
    """Every setting that cannot work -> ValueError naming the flag and value."""
    values = {f.name: getattr(cfg, f.name) for cfg in (tc, rc) for f in fields(cfg)}
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name} must be a finite number, got {value}")
    for names, ok, what in RULES:
        for name in names:
            if not ok(values[name]):
                raise ValueError(f"--{name} {what}, got {values[name]!r}")
    if problem := device_problem(rc.device):
        raise ValueError(problem)
    if rc.resume and rc.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if tc.lora_load_path:  # a LoRA run of the adapter's rank (so not 0), on the base the adapter records
        rank = lora.check_adapter(tc.lora_load_path, tc.model_name_or_path, "--model_name_or_path",
                                  rc.allow_other_base)  # not an adapter folder: FileNotFoundError, one line
        if rank != tc.lora_dim:
            raise ValueError(f"--lora_load_path {tc.lora_load_path} holds a rank-{rank} adapter, but --lora_dim is "
                             f"{tc.lora_dim}; pass that rank")


def parse_args(argv=None) -> tuple[TrainConfig, RunConfig]:
    p = argparse.ArgumentParser(description="Finetune a causal LM on Alpaca: LoRA or full (finetune/README.md)")
    add_flags(p.add_argument_group("training (a --resume must match the checkpoint's)"), TrainConfig)
    add_flags(p.add_argument_group("run"), RunConfig)
    args = p.parse_args(argv)
    tc, rc = TrainConfig(**typed_flags(args, TrainConfig)), RunConfig(**typed_flags(args, RunConfig))
    rc.out_dir = rc.out_dir or str(HERE / "out" / f"r{tc.lora_dim}")
    try:
        validate(tc, rc)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))  # exit status 2, one line naming the flag
    return tc, rc


def check_resume(state: dict, tc: TrainConfig, rc: RunConfig, world_size: int, data_sha256: str) -> bool:
    """A resume continues the very run of the checkpoint: same settings, processes, examples; True: new data."""
    saved, skip = state["train_config"], {"data_dir"} | ({"data_path"} if rc.allow_new_data else set())
    diff = [f"--{k} {saved.get(k)} (now {v})" for k, v in vars(tc).items() if k not in skip and saved.get(k) != v]
    if state["world_size"] != world_size:
        diff.append(f"{state['world_size']} process(es) (now {world_size})")
    if diff:
        raise ValueError(f"--resume: {state['path']} was made with {', '.join(diff[:4])}; resume with the same "
                         "settings or start a new run")
    new_data = state["data_sha256"] != data_sha256
    if new_data and not rc.allow_new_data:
        raise ValueError(f"--resume: {state['path']} was trained on other data (the examples of --data_path "
                         f"{tc.data_path} changed since); pass --allow_new_data to continue on these, or start a new "
                         "run")
    return new_data


def claim_run_folder(tc, rc, ddp):
    """Rank 0 claims the run folder (fileio's rule) and picks the checkpoint to resume from; every rank follows.
    Returns (the claimed folder on rank 0, else None; the checkpoint or None)."""
    def folder_and_checkpoint():
        data = resolve_data_path(tc.data_path, tc.data_dir)
        inputs = [p for p in (tc.model_name_or_path, tc.lora_load_path, data) if p and Path(p).expanduser().exists()]
        out = claim_output_dir(rc.out_dir, RUN_KIND, RUN_FILES, overwrite=rc.overwrite, resume=rc.resume,
                               inputs=inputs)
        found = checkpoint.latest(out.path / "ckpt") if rc.resume else None
        if rc.resume and found is None:
            raise ValueError(f"--resume: {out.path} has no checkpoint (ckpt/latest); start without --resume")
        return out, found

    folder, found = fail_together(folder_and_checkpoint, ddp, USER_ERRORS, rank0_only=True) or (None, None)
    found = from_rank0(str(found) if found else None, ddp)
    if found is not None and not all(gather(Path(found).is_file(), ddp)):  # multi-node: every rank reads it
        raise ValueError(f"--resume: {found} is not visible on every node; --out_dir must be on a shared file "
                         "system for multi-node runs")
    return folder, found
