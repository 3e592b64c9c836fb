"""train.py's settings and start-up decisions: TrainConfig, the presets, the command line, the run folder, the data.

Every GPTConfig / TrainConfig field is a flag (flags.py; ``--preset`` is read first, so ``--help`` shows the preset's
values), checked here once, before any work, in one line naming the flag. The run folder follows fileio's rule
(``RUN_NAMES``); a preset's data set is prepared on first use by a single process, never inside a process group.
"""
import argparse
import math
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

import prepare
from checkpoint import load_checkpoint
from ddp import DDP, DEFAULT_TIMEOUT_S, barrier, device_problem, from_rank0, gather, print0
from fileio import OutputError, claim_output_dir
from flags import add_flags, typed_flags
from modeling_gpt2 import GPTConfig
from runlog import LIVE_CHOICES, LiveLogError

HERE = Path(__file__).resolve().parent
CKPT_FORMAT = "llmhw-pretrain-checkpoint/4"  # what train.py's checkpoints hold: README.md, "Outputs"
RUN_KIND = "pretrain-run"
# every entry a run writes (glob patterns): tb/ and wandb/ are --live's, ".rank0-*" the token of check_shared
RUN_NAMES = ("ckpt_*.pt", "latest", "log.jsonl", "summary.json", "loss.png", "hellaswag.json", "tokenizer", "hf",
             "tb", "wandb", ".rank0-*")
VOCAB_MULTIPLE = 64  # the model's vocab = the data's rounded up (50257 -> 50304): faster matmuls on GPUs
CHOICES = {"data_order": ("sequential", "shuffle"), "dtype": ("auto", "float32", "bfloat16"),
           "optimizer": ("adamw", "muon"), "live": LIVE_CHOICES}


class ConfigError(ValueError):
    """A run setting that cannot work (e.g. a batch that does not divide); the message names it."""


# bad input or settings: one line ("error: ...") on every rank, exit status 2, never a traceback (ValueError covers
# ConfigError, prepare.DataError and checkpoint.CheckpointError)
USER_ERRORS = (ValueError, OutputError, FileNotFoundError, LiveLogError)


def option(default, text):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Everything about a run that is not architecture. Defaults: build-nanogpt's GPT-2 124M run."""
    data: str | None = option(None, "prepared shards (prepare.py --out_dir); default: the preset's, made on first use")
    out_dir: str | None = option(None, "run folder; default pretrain/output/<preset>")
    data_order: str = option("sequential", "sequential: the shards in file order (build-nanogpt); shuffle: random "
                                           "windows of the whole split, a new order each epoch (prepare.py)")
    total_batch_size: int = option(524288, "tokens per optimizer step; 0: batch_size*seq_len*world_size")
    batch_size: int = option(64, "micro-batch rows per process")
    seq_len: int = option(1024, "tokens per row (<= block_size)")
    lr: float = option(6e-4, "peak learning rate")
    min_lr_ratio: float = option(0.1, "cosine decays to lr * min_lr_ratio")
    warmup_steps: int = option(715, "linear warmup steps")
    max_steps: int = option(19073, "optimizer steps (10B tokens / 524288)")
    weight_decay: float = option(0.1, "AdamW weight decay of matrices")
    optimizer: str = option("adamw", "adamw; or muon: Muon on the blocks' weight matrices, AdamW on the embedding, "
                                     "biases and LayerNorms, one lr schedule (torch.optim.Muon, torch >= 2.9)")
    grad_clip: float = option(1.0, "clip the global gradient norm to this; 0: no clipping")
    eval_interval: int = option(250, "val loss and samples every N steps and at the end; 0: only at the end")
    val_steps: int = option(20, "val batches of total_batch_size tokens per evaluation; 0: no validation")
    hellaswag_interval: int = option(250, "HellaSwag every N steps and at the end; 0: at the end only")
    hellaswag_limit: int = option(-1, "HellaSwag examples per evaluation; -1: all, 0: none")
    sample_tokens: int = option(32, "tokens per sample; 0: no samples")
    num_samples: int = option(2, "samples per evaluation")
    sample_temperature: float = option(1.0, "sampling temperature")
    sample_top_k: int = option(50, "top-k of sampling; 0: no top-k")
    sample_prompt: str = option("Hello, I'm a language model,", "prompt of the samples")
    ckpt_interval: int = option(0, "checkpoint every N steps; 0: only at the end (always one at the end)")
    keep_checkpoints: int = option(2, "step-numbered checkpoints kept in out_dir (older ones are deleted)")
    log_interval: int = option(1, "a train line in log.jsonl every N steps")
    compile: bool = option(False, "torch.compile the model")
    dtype: str = option("auto", "auto (bfloat16 autocast on CUDA, float32 elsewhere), float32 or bfloat16")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    seed: int = option(1337, "seed of the initial weights and the samples")
    resume: bool = option(False, "continue the run in out_dir from its latest checkpoint (fresh start if none)")
    overwrite: bool = option(False, "start afresh in an out_dir that holds an earlier run (its files are replaced)")
    data_dir: str | None = option(None, "data directory (text, tokenizer files, HellaSwag); default $LLMHW_DATA_DIR")
    ddp_timeout: float = option(float(DEFAULT_TIMEOUT_S), "seconds a collective waits for the other ranks at most")
    live: str = option("none", f"live logging: {', '.join(LIVE_CHOICES)} (the package is imported only when asked)")
    allow_new_data: bool = option(False, "--resume on data other than the checkpoint's (same tokenizer): continue "
                                         "on the new data from its start instead of refusing")


PRESETS = {
    # build-nanogpt's GPT-2 124M on FineWeb-Edu sample-10BT: 19,073 steps of 2**19 tokens, lr 6e-4, 715 warmup;
    # a checkpoint (~1.5 GB with AdamW's state, written while the other ranks wait) every 5,000 steps and at the end.
    "gpt2-124m": {
        "model": dict(block_size=1024, n_layer=12, n_head=12, n_embd=768),
        "train": dict(compile=True, ckpt_interval=5000),
        "prepare": dict(hf_dataset="HuggingFaceFW/fineweb-edu", hf_config="sample-10BT", val_fraction=0.01),
        "data_name": "fineweb-edu-10BT",
    },
    # The CPU recipe chosen by measurement (scan.py, README.md "Choosing the CPU recipe"): the 96-wide model, Muon,
    # 2,048-token steps of shuffled windows; context 256 (the finetuning prompts need it). Its default run is 150
    # steps of Tiny Shakespeare with GPT-2's vocabulary; the CPU pipeline runs 1,500 steps on its own corpus.
    "tiny-cpu": {
        "model": dict(block_size=256, n_layer=4, n_head=3, n_embd=96),
        "train": dict(total_batch_size=2048, batch_size=8, seq_len=256, lr=6e-3, warmup_steps=50, optimizer="muon",
                      max_steps=150, data_order="shuffle", eval_interval=25, val_steps=4, ckpt_interval=100,
                      hellaswag_interval=0, hellaswag_limit=200, sample_tokens=48, sample_prompt="ROMEO:",
                      sample_temperature=0.8),
        "prepare": dict(inputs=["tinyshakespeare.txt"], val_fraction=0.1),
        "data_name": "tinyshakespeare-gpt2",
    },
}


def model_vocab(data_vocab: int) -> int:
    """The model's vocab_size for a data set's tokenizer: rounded up to a multiple of VOCAB_MULTIPLE."""
    return -(-data_vocab // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def parse_args(argv=None, doc: str | None = None) -> tuple[str, GPTConfig, TrainConfig, set[str]]:
    """(preset, model config, train config, names of the flags the user typed). The model's vocab_size is a
    placeholder unless typed: train.py sets it from the data."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", choices=sorted(PRESETS))
    preset = first.parse_known_args(argv)[0].preset or ("gpt2-124m" if torch.cuda.is_available() else "tiny-cpu")
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help=f"settings to start from (default here: {preset})")
    add_flags(p.add_argument_group("model (GPTConfig)"), GPTConfig, defaults={
        **PRESETS[preset]["model"], "vocab_size": f"the data's vocabulary rounded up to {VOCAB_MULTIPLE}"})
    add_flags(p.add_argument_group("training (TrainConfig)"), TrainConfig,
              defaults={"out_dir": f"pretrain/output/{preset}", **PRESETS[preset]["train"]})
    args = p.parse_args(argv)
    model_typed, train_typed = typed_flags(args, GPTConfig), typed_flags(args, TrainConfig)
    try:
        mc = GPTConfig(**{**PRESETS[preset]["model"], "vocab_size": 50304, **model_typed})
        tc = TrainConfig(**{"out_dir": str(HERE / "output" / preset), **PRESETS[preset]["train"], **train_typed})
        validate(tc, mc)
    except ValueError as e:  # ConfigError, and GPTConfig's own checks
        p.error(str(e))
    return preset, mc, tc, set(model_typed) | set(train_typed)


def validate(tc: TrainConfig, mc: GPTConfig) -> None:
    """Every setting that cannot work -> ConfigError naming the flag and value."""
    for f in fields(tc):
        value = getattr(tc, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name} must be a finite number, got {value}")
    rules = [
        (("batch_size", "seq_len", "max_steps", "log_interval", "num_samples", "keep_checkpoints"), lambda v: v > 0,
         "must be positive"),
        (("eval_interval", "hellaswag_interval", "ckpt_interval", "val_steps", "sample_tokens", "warmup_steps",
          "sample_top_k", "grad_clip", "weight_decay", "sample_temperature"), lambda v: v >= 0, "must be >= 0"),
        (("lr", "ddp_timeout"), lambda v: v > 0, "must be > 0"),
        (("min_lr_ratio",), lambda v: 0 <= v <= 1, "must be in [0, 1]"),
        (("hellaswag_limit",), lambda v: v >= -1, "must be >= -1 (-1: all)"),
        (("total_batch_size",), lambda v: v >= 0, "must be positive (or 0: one micro-batch per process)"),
    ] + [((name,), lambda v, c=choices: v in c, f"must be one of {', '.join(choices)}")
         for name, choices in CHOICES.items()]
    for names, ok, what in rules:
        for name in names:
            if not ok(getattr(tc, name)):
                raise ConfigError(f"--{name} {what}, got {getattr(tc, name)!r}")
    if device_problem(tc.device):
        raise ConfigError(device_problem(tc.device))
    if tc.seq_len > mc.block_size:
        raise ConfigError(f"--seq_len {tc.seq_len} exceeds the model's block_size {mc.block_size}")
    if tc.resume and tc.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: choose one")


def fit_micro_batch(total: int, B: int, T: int, world: int, batch_size_typed: bool) -> tuple[int, int, str | None]:
    """(micro-batch rows, accumulation steps, note) so that total = B * T * world * accum; total 0: one micro-batch
    per process. When world does not divide the preset's total / (B*T) (e.g. 16 GPUs for 2**19 tokens of 64 x 1024),
    B is halved until it fits, unless the user typed --batch_size: then the error names the flags that would work."""
    if total == 0:
        return B, 1, None
    b = B
    while total % (b * T * world) and b > 1 and not batch_size_typed:
        b //= 2
    if total % (b * T * world) == 0:
        note = None if b == B else (f"note: --batch_size {B} x seq_len {T} x {world} processes does not divide "
                                    f"total_batch_size {total}: using --batch_size {b}")
        return b, total // (b * T * world), note
    fits = [c for c in range(B, 0, -1) if total % (c * T * world) == 0]
    step = B * T * world
    hint = (f"set --batch_size {fits[0]}" if fits else
            f"set --total_batch_size to a multiple of {step} (e.g. {step * max(1, total // step)})")
    raise ConfigError(f"total_batch_size {total} is not divisible by batch_size * seq_len * world_size = "
                      f"{B} * {T} * {world} = {B * T * world}: {hint}")


def data_folder(preset: str, tc: TrainConfig, distributed: bool) -> Path:
    """--data, else the preset's data set, prepared by this one process on first use. Under torchrun an unprepared
    data set is one line naming the prepare.py command: preparing FineWeb-Edu takes hours, beyond any timeout."""
    if tc.data:
        return Path(tc.data)
    path = HERE / "output" / "data" / PRESETS[preset]["data_name"]
    if (path / "meta.json").is_file():
        return path
    args = []
    for key, value in PRESETS[preset]["prepare"].items():
        args += ["--input" if key == "inputs" else f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    command = " ".join(["python pretrain/prepare.py", *args, "--out_dir", str(path)])
    if distributed:
        raise ConfigError(f"{path} is not prepared: prepare it first, once, without torchrun ({command}), then "
                          "start this command again")
    print0(f"preparing {path} (first use of preset {preset}; the same as {command})")
    prepare.prepare(path, data_dir=tc.data_dir, **PRESETS[preset]["prepare"])
    return path


def check_shared(out: Path, ddp: DDP) -> None:
    """Every rank must see the files rank 0 writes into out_dir (a checkpoint on node 0 is read on all nodes)."""
    if not ddp.enabled:
        return
    token = out / f".rank0-{from_rank0(uuid.uuid4().hex, ddp)}"
    if ddp.master:
        token.write_text("rank 0 was here\n")
    barrier(ddp)
    blind = [r for r, seen in enumerate(gather(token.is_file(), ddp)) if not seen]  # every rank has looked
    if ddp.master:
        token.unlink()
    if blind:
        raise ConfigError(f"--out_dir {out} is not shared: rank(s) {blind} do not see the files rank 0 writes there "
                          "(use a folder on a shared file system)")


def plan_resume(folder, tc: TrainConfig) -> str | None:
    """(rank 0) The checkpoint to resume from, loaded now (a corrupt one stops every rank at once); None for a fresh
    run, whose --overwrite clears the earlier run only now that every input was checked."""
    if tc.resume and (folder.path / "latest").exists():
        return load_checkpoint(folder.path, CKPT_FORMAT)["path"]
    if tc.resume:
        print0(f"--resume: no checkpoint in {folder.path} yet, starting fresh")
    folder.clear()
    return None


def claim_run_folder(tc: TrainConfig, data: Path):
    """(rank 0) --out_dir checked by fileio's rule before anything is created (OutputDir.create makes it)."""
    return claim_output_dir(tc.out_dir, RUN_KIND, RUN_NAMES, overwrite=tc.overwrite, resume=tc.resume, inputs=[data])


def check_resume(ckpt: dict, mc: dict, tc: TrainConfig, world_size: int, meta: dict, data: Path) -> None:
    """An exact resume needs the checkpoint's model, tokenizer, batch shape, process count and optimizer, and an
    end not passed (a larger --max_steps extends the run)."""
    where = ckpt["path"]
    if ckpt["model_config"] != mc:
        diff = {k: (v, mc.get(k)) for k, v in ckpt["model_config"].items() if mc.get(k) != v}
        raise ConfigError(f"{where}: model config differs from this run's (checkpoint, now): {diff}")
    now = {"batch_size": tc.batch_size, "seq_len": tc.seq_len, "total_batch_size": tc.total_batch_size,
           "optimizer": tc.optimizer, "world_size": world_size}
    then = {**{k: ckpt["train_config"].get(k) for k in now}, "world_size": ckpt["world_size"]}
    if then != now:
        raise ConfigError(f"{where}: --resume needs the checkpoint's batch settings and optimizer: "
                          + ", ".join(f"{k} {then[k]} (now {now[k]})" for k in now if then[k] != now[k]))
    if any(ckpt["tokenizer"].get(k) != meta["tokenizer"].get(k) for k in ("kind", "vocab_size", "eot_id", "sha256")):
        raise ConfigError(f"{where}: the data {data} uses another tokenizer than the checkpoint's "
                          f"({meta['tokenizer'].get('spec')} vs {ckpt['tokenizer'].get('spec')})")
    if ckpt["step"] > tc.max_steps:
        raise ConfigError(f"{where}: the checkpoint is at step {ckpt['step']}, past --max_steps {tc.max_steps}")
