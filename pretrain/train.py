"""GPT-2 pretraining, nanoGPT / build-nanogpt style, on one CPU, one GPU or many (torchrun).

    python pretrain/train.py                                   # preset tiny-cpu on CPU (gpt2-124m on a GPU)
    python pretrain/train.py --preset tiny-cpu --data DIR --out_dir OUT --max_steps 100
    torchrun --nproc_per_node=8 pretrain/train.py --preset gpt2-124m     # build-nanogpt's run, FineWeb-Edu 10B
    python pretrain/train.py --out_dir OUT --resume            # continue exactly where OUT/ckpt.pt stopped

Every field of GPTConfig (architecture) and TrainConfig below is a flag (--n_layer 6, --max_lr 1e-3, --compile /
--no-compile); a preset fills the defaults, flags override it. Without --data, the preset's data set is prepared
into pretrain/output/data/ on first use (prepare.py).

Outputs in --out_dir: log.jsonl (one JSON object per line: train lines {"step","loss","lr","grad_norm","dt_ms",
"tokens","tokens_per_s","mfu","epoch"}; eval lines {"step","val_loss"} and {"step","hellaswag_acc_norm",
"hellaswag_acc","hellaswag_n"}; sample lines {"step","sample"}; "step" of eval and sample lines = optimizer steps
done), loss.png, ckpt.pt (model, optimizer, step, data position, RNG states, configs; written atomically),
tokenizer/ (HF tokenizer files), hf/ (final HF export: config.json, model.safetensors, tokenizer files) and
summary.json. Train lines' mfu is against the GPU's datasheet bf16/TF32 peak, on CPU against this machine's measured
fp32 matmul peak (perf.py).

Distributed: `setup_ddp()` is the only place that knows; world size 1 takes the same path. Each step is
total_batch_size tokens = batch_size * seq_len * world_size * grad_accum_steps (asserted divisible); ranks read
disjoint windows (dataloader.py), so N processes match one process with N times the accumulation.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import hellaswag
import text_tokenizer
from dataloader import ShardLoader
from modeling_gpt2 import GPT, GPTConfig
from perf import mfu, peak_flops
from shards import DataError, read_meta

HERE = Path(__file__).resolve().parent
CKPT_FORMAT = 1


class ConfigError(ValueError):
    """A run setting that cannot work (e.g. a batch that does not divide); the message names it."""


@dataclass
class TrainConfig:
    """Everything about a run that is not architecture. Defaults: build-nanogpt's GPT-2 124M run."""
    data: str | None = None  # prepared data set (prepare.py --out_dir); None: the preset's, prepared on first use
    out_dir: str | None = None  # default pretrain/output/<preset>
    total_batch_size: int = 524288  # tokens per optimizer step (2**19, ~0.5M as GPT-3 small); 0: B*T*world_size
    batch_size: int = 64  # micro-batch rows per process
    seq_len: int = 1024
    max_lr: float = 6e-4
    min_lr_ratio: float = 0.1  # cosine decays to max_lr * min_lr_ratio
    warmup_steps: int = 715
    max_steps: int = 19073  # 10B tokens / 524288
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250  # val loss and samples every N steps (and at the end); 0: only at the end
    val_steps: int = 20  # val batches of total_batch_size tokens per evaluation (capped by the val split's size)
    hellaswag_interval: int = 250  # HellaSwag every N steps (a multiple of eval_interval) and at the end; 0: end only
    hellaswag_limit: int = -1  # examples per HellaSwag evaluation (-1: all, 0: none)
    sample_tokens: int = 32  # tokens per sample (0: no samples)
    num_samples: int = 2
    sample_temperature: float = 1.0
    sample_top_k: int = 50
    sample_prompt: str = "Hello, I'm a language model,"
    ckpt_interval: int = 0  # checkpoint every N steps (0: at evaluations); always at the end
    log_interval: int = 1  # train lines every N steps
    compile: bool = False
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 elsewhere
    device: str = "auto"
    seed: int = 1337
    resume: bool = False  # continue from out_dir/ckpt.pt (a fresh start if there is none)
    data_dir: str | None = None  # data directory for tokenizer files / HellaSwag / raw text (datadir.py)
    kill_at_step: int = 0  # testing: SIGKILL this process after this many steps (simulates a crash)


PRESETS = {
    # build-nanogpt's GPT-2 124M on FineWeb-Edu sample-10BT: 19,073 steps of 2**19 tokens, lr 6e-4, 715 warmup.
    "gpt2-124m": {
        "model": dict(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768),
        "train": dict(compile=True),
        "prepare": dict(hf_dataset="HuggingFaceFW/fineweb-edu", hf_config="sample-10BT", val_fraction=0.01),
        "data_name": "fineweb-edu-10BT",
    },
    # Tiny Shakespeare on an idle 2-core CPU in ~3-4 minutes: val loss 10.8 -> 5.9, samples with verse lines.
    "tiny-cpu": {
        "model": dict(block_size=128, vocab_size=50304, n_layer=4, n_head=4, n_embd=128),
        "train": dict(total_batch_size=0, batch_size=8, seq_len=128, max_lr=3e-3, warmup_steps=10,
                      max_steps=300, eval_interval=50, val_steps=8, hellaswag_interval=0, hellaswag_limit=200,
                      sample_tokens=48, sample_prompt="ROMEO:", sample_temperature=0.8),
        "prepare": dict(inputs=["tinyshakespeare.txt"], val_fraction=0.1),
        "data_name": "tinyshakespeare-gpt2",
    },
}


# ---------------------------------------------------------------------------- configuration
def parse_args(argv=None) -> tuple[str, GPTConfig, TrainConfig]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: gpt2-124m with CUDA, else tiny-cpu")
    for group, cls in (("model (GPTConfig)", GPTConfig), ("training (TrainConfig)", TrainConfig)):
        g = p.add_argument_group(group)
        for f in fields(cls):
            kind = type(f.default) if f.default is not None else str
            if kind is bool:
                g.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=None)
            else:
                g.add_argument(f"--{f.name}", type=kind, default=None, help=f"default {f.default}")
    args = vars(p.parse_args(argv))
    preset = args.pop("preset") or ("gpt2-124m" if torch.cuda.is_available() else "tiny-cpu")
    given = {k: v for k, v in args.items() if v is not None}
    model_fields = {f.name for f in fields(GPTConfig)}
    try:
        mc = GPTConfig(**{**PRESETS[preset]["model"], **{k: v for k, v in given.items() if k in model_fields}})
    except ValueError as e:
        p.error(str(e))
    tc = TrainConfig(**{**PRESETS[preset]["train"], **{k: v for k, v in given.items() if k not in model_fields}})
    if tc.out_dir is None:
        tc.out_dir = str(HERE / "output" / preset)
    for name in ("batch_size", "seq_len", "max_steps", "log_interval", "num_samples"):
        if getattr(tc, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(tc, name)}")
    for name in ("eval_interval", "hellaswag_interval", "ckpt_interval", "val_steps", "sample_tokens", "warmup_steps",
                 "sample_top_k"):
        if getattr(tc, name) < 0:
            p.error(f"--{name} must be >= 0, got {getattr(tc, name)}")
    if tc.dtype not in ("auto", "float32", "bfloat16"):
        p.error(f"--dtype must be auto, float32 or bfloat16, got {tc.dtype!r}")
    if tc.sample_temperature < 0 or tc.hellaswag_limit < -1 or tc.max_lr <= 0 or tc.grad_clip < 0:
        p.error("need --sample_temperature >= 0, --hellaswag_limit >= -1, --max_lr > 0, --grad_clip >= 0")
    if tc.total_batch_size < 0:
        p.error(f"--total_batch_size must be positive (or 0: one micro-batch per process), got {tc.total_batch_size}")
    if tc.seq_len > mc.block_size:
        p.error(f"--seq_len {tc.seq_len} exceeds the model's block_size {mc.block_size}")
    return preset, mc, tc


# ---------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    master: bool


def setup_ddp(device: str = "auto") -> Dist:
    """The one place that knows about processes: torchrun sets RANK/LOCAL_RANK/WORLD_SIZE; nccl on CUDA, gloo on
    CPU. A plain `python train.py` is world size 1 on the same code path."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, local_rank, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0),
                                                                       ("WORLD_SIZE", 1)))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if "RANK" in os.environ:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, local_rank, world, dev, rank == 0)


def print0(*args, **kwargs):
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum over ranks (gloo has no AVG); identity for one process."""
    if d.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ---------------------------------------------------------------------------- schedule, data, checkpoints
def get_lr(step: int, tc: TrainConfig) -> float:
    """Linear warmup to max_lr over warmup_steps, then cosine down to max_lr * min_lr_ratio at max_steps
    (build-nanogpt's schedule)."""
    min_lr = tc.max_lr * tc.min_lr_ratio
    if step < tc.warmup_steps:
        return tc.max_lr * (step + 1) / tc.warmup_steps
    if step >= tc.max_steps:
        return min_lr
    ratio = (step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (tc.max_lr - min_lr)


def ensure_data(preset: str, tc: TrainConfig, d: Dist) -> Path:
    """The data set to train on: --data, else the preset's, which rank 0 prepares on first use (the other ranks
    wait for its meta.json, before any process group exists, so no collective can time out)."""
    if tc.data:
        return Path(tc.data)
    path = HERE / "output" / "data" / PRESETS[preset]["data_name"]
    if not (path / "meta.json").is_file():
        if d.local_rank == 0:
            import prepare

            print0(f"preparing {path} (first use of preset {preset})")
            prepare.prepare(path, data_dir=tc.data_dir, **PRESETS[preset]["prepare"])
        while not (path / "meta.json").is_file():
            time.sleep(1)
    return path


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: Path):
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class RunLog:
    """log.jsonl writer (master only) that also keeps the records for the plot and the summary."""

    def __init__(self, path: Path, master: bool, keep_bytes: int | None):
        self.path, self.master, self.records = path, master, []
        if not master:
            return
        if keep_bytes is None:  # fresh run
            path.write_text("")
        else:  # resume: drop what the interrupted run logged after its checkpoint
            with open(path, "r+b") as f:
                f.truncate(keep_bytes)
        self.records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write(self, **record):
        if self.master:
            self.records.append(record)
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def size(self) -> int:
        return self.path.stat().st_size if self.master else 0

    def plot(self, out: Path):
        if not self.master:
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [(r["step"], r["loss"]) for r in self.records if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in self.records if "val_loss" in r]
        hs = [(r["step"], r["hellaswag_acc_norm"]) for r in self.records if "hellaswag_acc_norm" in r]
        fig, axes = plt.subplots(1, 2 if hs else 1, figsize=(11 if hs else 6, 4), squeeze=False)
        ax = axes[0, 0]
        if train:
            ax.plot(*zip(*train), label="train", lw=1)
        if val:
            ax.plot(*zip(*val), "o-", label="val")
        ax.set(xlabel="step", ylabel="loss", title="cross-entropy loss")
        ax.legend()
        if hs:
            axes[0, 1].plot(*zip(*hs), "o-", color="C2")
            axes[0, 1].set(xlabel="step", ylabel="acc_norm", title="HellaSwag acc_norm")
        fig.tight_layout()
        tmp = out.with_name(out.stem + ".tmp.png")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, out)


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def val_loss(model: GPT, loader: ShardLoader, steps: int, d: Dist, autocast) -> float:
    model.eval()
    loader.reset()
    total = torch.zeros((), device=d.device)
    for _ in range(steps):
        x, y = loader.next_batch()
        with autocast():
            total += model(x.to(d.device), y.to(d.device))[1].float()
    model.train()
    return (all_reduce_sum(total, d) / (steps * d.world_size)).item()


@torch.no_grad()
def hellaswag_eval(model: GPT, tok, examples, d: Dist, autocast) -> dict:
    model.eval()
    r = hellaswag.evaluate(lambda x: model(x)[0], tok, examples, model.config.block_size, d.device, d.rank,
                           d.world_size, autocast)
    model.train()
    counts = all_reduce_sum(torch.tensor([r["n"], r["correct"], r["correct_norm"]], device=d.device), d).tolist()
    return {"hellaswag_acc_norm": counts[2] / max(1, counts[0]), "hellaswag_acc": counts[1] / max(1, counts[0]),
            "hellaswag_n": int(counts[0])}


def samples(model: GPT, tok, tc: TrainConfig, d: Dist) -> list[str]:
    prompt = tok.encode(tc.sample_prompt) if tc.sample_prompt else [tok.eot_id or 0]
    idx = torch.tensor([prompt] * tc.num_samples, dtype=torch.long, device=d.device)
    gen = torch.Generator(device=d.device).manual_seed(tc.seed)  # own generator: sampling leaves training RNG alone
    out = model.generate(idx, tc.sample_tokens, temperature=tc.sample_temperature, top_k=tc.sample_top_k,
                         generator=gen)
    return [tok.decode(row.tolist()) for row in out]


# ---------------------------------------------------------------------------- training
def train(preset: str, mc: GPTConfig, tc: TrainConfig, d: Dist) -> dict:
    out = Path(tc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = ensure_data(preset, tc, d)
    meta = read_meta(data)
    if meta["vocab_size"] > mc.vocab_size:
        raise DataError(f"{data}: tokenizer vocab {meta['vocab_size']} exceeds the model's vocab_size "
                        f"{mc.vocab_size}")
    per_step = tc.batch_size * tc.seq_len * d.world_size
    tc.total_batch_size = tc.total_batch_size or per_step  # 0: one micro-batch per process, no accumulation
    if tc.total_batch_size % per_step:
        raise ConfigError(f"total_batch_size {tc.total_batch_size} is not divisible by batch_size * seq_len * "
                          f"world_size = {tc.batch_size} * {tc.seq_len} * {d.world_size} = {per_step}")
    accum = tc.total_batch_size // per_step
    tok = text_tokenizer.load(data / meta["tokenizer"]["dir"])
    if d.master:
        tok.write_hf_files(out / "tokenizer", model_max_length=mc.block_size)

    dtype = {"auto": torch.bfloat16 if d.device.type == "cuda" else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16}[tc.dtype]
    autocast = ((lambda: torch.autocast(d.device.type, dtype=dtype)) if dtype != torch.float32 else nullcontext)
    if d.device.type == "cuda":  # TF32 for the fp32 matmuls left outside autocast (CPU stays exact fp32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")

    torch.manual_seed(tc.seed)  # same seed on every rank: identical initial weights (DDP also broadcasts them)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    raw_model = GPT(mc).to(d.device)
    optimizer = raw_model.configure_optimizers(tc.weight_decay, tc.max_lr, device_type=d.device.type)
    train_loader = ShardLoader(data, "train", tc.batch_size, tc.seq_len, d.rank, d.world_size)
    val_loader = (ShardLoader(data, "val", tc.batch_size, tc.seq_len, d.rank, d.world_size)
                  if meta["val"]["shards"] else None)
    for loader in (train_loader, val_loader):
        if loader is not None and loader.skipped:
            print0(f"note: skipping shard(s) {loader.skipped}: shorter than one step of "
                   f"{tc.batch_size} x {tc.seq_len} x {d.world_size} tokens")
    # val_steps batches of total_batch_size tokens: each rank reads val_steps * accum windows, the same set of
    # windows for any world size (capped at one pass over the val split)
    n_val = min(tc.val_steps * accum, val_loader.batches_per_epoch()) if val_loader else 0

    ckpt_path, start, stats = out / "ckpt.pt", 0, {"tokens": 0, "train_time": 0.0, "wall_time": 0.0}
    keep_log = None
    if tc.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # RNG states must stay on CPU
        if ckpt.get("format") != CKPT_FORMAT:
            raise ConfigError(f"{ckpt_path}: checkpoint format {ckpt.get('format')!r}, expected {CKPT_FORMAT}")
        if ckpt["model_config"] != asdict(mc):
            diff = {k: (v, asdict(mc)[k]) for k, v in ckpt["model_config"].items() if asdict(mc).get(k) != v}
            raise ConfigError(f"{ckpt_path}: model config differs from this run's (checkpoint, now): {diff}")
        # exact resume needs the same tokens in the same order: same tokenizer, batch shape and process count
        now = {"batch_size": tc.batch_size, "seq_len": tc.seq_len, "total_batch_size": tc.total_batch_size,
               "world_size": d.world_size}
        then = {**{k: ckpt["train_config"].get(k) for k in now}, "world_size": ckpt.get("world_size", d.world_size)}
        if then != now:
            raise ConfigError(f"{ckpt_path}: --resume needs the checkpoint's batch settings: "
                              + ", ".join(f"{k} {then[k]} (now {now[k]})" for k in now if then[k] != now[k]))
        same_tok = ("kind", "vocab_size", "eot_id", "sha256")  # not where it came from ("spec", "dir")
        if any(ckpt["tokenizer"].get(k) != meta["tokenizer"].get(k) for k in same_tok):
            raise ConfigError(f"{ckpt_path}: the data {data} uses another tokenizer than the checkpoint's "
                              f"({meta['tokenizer'].get('spec')} vs {ckpt['tokenizer'].get('spec')})")
        if ckpt["step"] > tc.max_steps:
            raise ConfigError(f"{ckpt_path}: the checkpoint is at step {ckpt['step']}, past --max_steps "
                              f"{tc.max_steps}")
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        train_loader.load_state_dict(ckpt["data_position"])
        set_rng_state(ckpt["rng"])
        start, stats, keep_log = ckpt["step"], ckpt["stats"], ckpt["log_bytes"]
        print0(f"resumed from {ckpt_path} at step {start}")
    elif tc.resume:
        print0(f"--resume: no {ckpt_path} yet, starting fresh")
    log = RunLog(out / "log.jsonl", d.master, keep_log)

    model = torch.compile(raw_model) if tc.compile else raw_model
    if d.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    hs_examples = (hellaswag.load_examples(hellaswag.find_data(tc.data_dir), tc.hellaswag_limit)
                   if tc.hellaswag_limit != 0 else [])
    fused_loss = d.device.type == "cpu" and dtype == torch.float32  # LinearCrossEntropy: CPU fp32 only
    if d.world_size > 1 and d.device.type == "cpu":
        # the CPU peak is measured (perf.py): all ranks measure at once, so each measures its share of the cores
        # it trains on (measured one by one, 8 ranks on 2 cores reported MFU > 100%)
        dist.barrier()
    peak = peak_flops(d.device, dtype)
    flops_per_token = raw_model.flops_per_token(tc.seq_len)
    print0(f"preset {preset}: {raw_model.num_params():,} params, {d.world_size} process(es) on {d.device}, "
           f"{tc.total_batch_size:,} tokens/step = {tc.batch_size} x {tc.seq_len} x {d.world_size} x {accum} accum, "
           f"steps {start}..{tc.max_steps}, data {data} ({meta['train']['tokens']:,} train tokens)")

    def evaluate(step: int, last: bool = False):
        record = {}
        if val_loader is not None and n_val > 0:
            record["val_loss"] = val_loss(raw_model, val_loader, n_val, d, autocast)
            log.write(step=step, val_loss=record["val_loss"])
        if hs_examples and (last or (tc.hellaswag_interval > 0 and step % tc.hellaswag_interval == 0)):
            record.update(hellaswag_eval(raw_model, tok, hs_examples, d, autocast))
            log.write(step=step, **{k: v for k, v in record.items() if k.startswith("hellaswag")})
        if d.master and tc.sample_tokens > 0:
            for text in samples(raw_model, tok, tc, d):
                log.write(step=step, sample=text)
                print0(f"sample @ {step}: {text!r}")
        print0(f"eval @ {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items() if isinstance(v, float)))
        log.plot(out / "loss.png")
        if d.world_size > 1:  # the master sampled alone: start the next timed step together
            dist.barrier()
        return record

    def checkpoint(step: int):
        if d.master:
            atomic_torch_save({
                "format": CKPT_FORMAT, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "step": step, "data_position": train_loader.state_dict(), "rng": rng_state(),
                "model_config": asdict(mc), "train_config": asdict(tc), "preset": preset, "world_size": d.world_size,
                "tokenizer": meta["tokenizer"], "stats": stats, "log_bytes": log.size(),
            }, ckpt_path)
        if d.world_size > 1:
            dist.barrier()

    t_start, wall_before = time.perf_counter(), stats["wall_time"]  # wall time includes evaluations
    if start == 0 and tc.eval_interval > 0:
        evaluate(0)
    for step in range(start, tc.max_steps):
        t0 = time.perf_counter()
        loss_accum = torch.zeros((), device=d.device)
        for micro in range(accum):
            x, y = train_loader.next_batch()
            x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
            # DDP: all-reduce gradients only on the last micro-step
            with model.no_sync() if d.world_size > 1 and micro < accum - 1 else nullcontext():
                with autocast():
                    _, loss = model(x, y, fused_loss=fused_loss)
                loss = loss / accum  # the mean over the whole step, not a sum of micro-batch means
                loss_accum += loss.detach()
                loss.backward()
        loss_accum = all_reduce_sum(loss_accum, d) / d.world_size
        norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tc.grad_clip)
        lr = get_lr(step, tc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if d.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        stats = {"tokens": stats["tokens"] + tc.total_batch_size, "train_time": stats["train_time"] + dt,
                 "wall_time": wall_before + time.perf_counter() - t_start}
        tps = tc.total_batch_size / dt
        if step % tc.log_interval == 0 or step == tc.max_steps - 1:
            m = mfu(flops_per_token, tps / d.world_size, peak)
            log.write(step=step, loss=loss_accum.item(), lr=lr, grad_norm=norm.item(), dt_ms=dt * 1000,
                      tokens=stats["tokens"], tokens_per_s=tps, mfu=m, epoch=train_loader.epoch)
            print0(f"step {step:5d} | loss {loss_accum.item():.6f} | lr {lr:.2e} | norm {norm.item():.3f} | "
                   f"{dt * 1000:.0f} ms | {tps:.0f} tok/s" + (f" | mfu {m:.1%}" if m is not None else ""))
        done = step + 1
        last = done == tc.max_steps
        if (tc.eval_interval > 0 and done % tc.eval_interval == 0) or last:
            evaluate(done, last)
        if (tc.ckpt_interval > 0 and done % tc.ckpt_interval == 0) or last or (
                tc.ckpt_interval == 0 and tc.eval_interval > 0 and done % tc.eval_interval == 0):
            checkpoint(done)
        if tc.kill_at_step and done == tc.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
    stats["wall_time"] = wall_before + time.perf_counter() - t_start  # incl. the final evaluation
    return finish(raw_model, tok, tc, mc, d, log, stats, preset, out)


def finish(raw_model, tok, tc, mc, d: Dist, log: RunLog, stats, preset, out: Path) -> dict:
    """Final HF export (model + tokenizer files) and summary.json, by the master."""
    if not d.master:
        return {}
    hf_dir = raw_model.save_hf(out / "hf", eos_token_id=tok.eot_id,
                               extra_files=sorted((out / "tokenizer").iterdir()))
    last = {}
    for r in log.records:
        last.update({k: v for k, v in r.items() if k in ("val_loss", "hellaswag_acc_norm", "hellaswag_n", "loss")})
    summary = {
        "preset": preset, "steps": tc.max_steps, "tokens": stats["tokens"], "final_train_loss": last.get("loss"),
        "final_val_loss": last.get("val_loss"), "hellaswag_acc_norm": last.get("hellaswag_acc_norm"),
        "hellaswag_n": last.get("hellaswag_n"), "wall_time_s": stats["wall_time"],
        "train_time_s": stats["train_time"],
        "tokens_per_s": stats["tokens"] / max(stats["train_time"], 1e-9),
        "mfu": mfu(raw_model.flops_per_token(tc.seq_len), stats["tokens"] / max(stats["train_time"], 1e-9)
                   / d.world_size, peak_flops(d.device, torch.bfloat16 if d.device.type == "cuda" else torch.float32)),
        "params": raw_model.num_params(), "world_size": d.world_size, "device": str(d.device),
        "model_config": asdict(mc), "train_config": asdict(tc), "hf_dir": str(hf_dir),
    }
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    log.plot(out / "loss.png")
    print0(f"done: {json.dumps({k: summary[k] for k in ('final_val_loss', 'hellaswag_acc_norm', 'tokens_per_s')})}"
           f" -> {out}")
    return summary


def main(argv=None):
    preset, mc, tc = parse_args(argv)
    d = setup_ddp(tc.device)
    try:
        return train(preset, mc, tc, d)
    except (DataError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
