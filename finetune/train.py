"""Finetune a causal LM on Stanford Alpaca: LoRA (`--lora_dim R`, R > 0) or full finetuning (`--lora_dim 0`).

    python finetune/train.py --lora_dim 8                       # hub `gpt2` (online) on alpaca/alpaca_data.json.xz
    python finetune/train.py --model_name_or_path runs/cpu/pretrain/hf --lora_dim 8 --max_examples 2000 --max_steps 60
    torchrun --nproc_per_node=8 finetune/train.py --lora_dim 8  # DDP, one rank per GPU

Writes to --output_dir (default finetune/out/r<R>):
  config.json    every setting of this run
  log.jsonl      {"step", "train_loss", "lr", "tokens", "seconds"} per optimizer step, {"step", "eval_loss",
                 "seconds"} per evaluation (step 0 = before training; seconds since the start of the run)
  curve.png      train and eval loss
  adapter/       LoRA: our lora_config.json + lora_weights.safetensors and PEFT's adapter_config.json +
                 adapter_model.safetensors
  model/         full finetuning: a Hugging Face model folder with its tokenizer
  summary.json   lora_dim, final/best eval loss, trainable/total params, wall seconds, peak memory MB, steps, ...

Loss: token-level mean cross entropy over target tokens (prompt and padding are -100), exact over gradient
accumulation and DDP ranks (target tokens are counted before the step). Logits are computed only at target positions
(for GPT-2-like models), which skips most of the vocabulary projection: prompt and padding tokens need no logits.
Optimizer: AdamW (0.9, 0.95), linear warmup then cosine decay to 0, gradient clipping at 1.0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import data as alpaca
import lora
from ddp import DDP, all_reduce_sum, cleanup_ddp, print0, setup_ddp
from fileio import atomic_dir, atomic_write_json
from models import load_model, model_shape
from plots import plot_curves, read_log

HERE = Path(__file__).resolve().parent
# Models whose forward is `lm_head(backbone(x).last_hidden_state)` with nothing in between (no logit scaling or
# soft-capping), so logits may be computed on the target positions only.
PLAIN_HEAD_MODELS = {"GPT2LMHeadModel", "GPTNeoForCausalLM", "GPTNeoXForCausalLM", "LlamaForCausalLM",
                     "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}


@dataclass
class TrainConfig:
    """Every flag of train.py (argparse is generated from these fields; `help` is in each field's metadata)."""
    model_name_or_path: str = field(default="gpt2", metadata={"help": "HF causal-LM folder (e.g. pretrain's export) "
                                                                      "or hub name"})
    data_path: str = field(default=alpaca.DEFAULT_DATA, metadata={"help": "Alpaca .json/.jsonl/.json.xz file, a "
                                                                          "data-directory name, or a HF dataset"})
    data_dir: str | None = field(default=None, metadata={"help": "data directory (default $LLMHW_DATA_DIR)"})
    template: str = field(default="homework", metadata={"help": f"prompt template: {sorted(alpaca.TEMPLATES)}"})
    max_length: int = field(default=512, metadata={"help": "truncate examples to this many tokens"})
    max_examples: int | None = field(default=None, metadata={"help": "use a deterministic subset of N records"})
    lora_dim: int = field(default=8, metadata={"help": "LoRA rank; 0 = full finetuning"})
    lora_scaling: float = field(default=32.0, metadata={"help": "LoRA alpha: scaling = lora_scaling / lora_dim"})
    lora_module_name: str = field(default="h.", metadata={"help": "adapt Linear/Conv1D modules whose name contains this"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch input"})
    use_rslora: bool = field(default=False, metadata={"help": "rsLoRA: scaling = lora_scaling / sqrt(lora_dim)"})
    lora_load_path: str | None = field(default=None, metadata={"help": "start from this adapter (ours or PEFT's)"})
    epochs: int = field(default=3, metadata={"help": "passes over the training split (unless --max_steps)"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    train_batch_size: int = field(default=8, metadata={"help": "examples per micro-batch per rank"})
    eval_batch_size: int = field(default=8, metadata={"help": "examples per eval batch per rank"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    lr_warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps with linear warmup"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (matrices only)"})
    group_by_length: bool = field(default=False, metadata={"help": "batch examples of similar length together "
                                                                   "(about 2x fewer padded tokens on Alpaca)"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm (0 = off)"})
    seed: int = field(default=42, metadata={"help": "seed for data split, subset, shuffling and LoRA init"})
    eval_ratio: float = field(default=0.01, metadata={"help": "fraction of examples held out for evaluation"})
    eval_interval: int = field(default=100, metadata={"help": "evaluate every N steps (0 = only first and last)"})
    output_dir: str | None = field(default=None, metadata={"help": "default finetune/out/r<lora_dim>"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast on CUDA"})

    def validate(self) -> "TrainConfig":
        positive = ["max_length", "epochs", "train_batch_size", "eval_batch_size", "gradient_accumulation_steps"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_steps", "max_examples"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        if self.lora_dim < 0:
            raise ValueError(f"--lora_dim must be >= 0 (0 = full finetuning), got {self.lora_dim}")
        if self.lora_dim == 0 and self.lora_load_path:
            raise ValueError("--lora_load_path needs --lora_dim > 0 (0 means full finetuning)")
        if self.lora_load_path:  # the run is named and logged by its rank: it must be the adapter's
            rank = lora.adapter_rank(self.lora_load_path)
            if rank != self.lora_dim:
                raise ValueError(f"--lora_load_path {self.lora_load_path} holds a rank-{rank} adapter, but "
                                 f"--lora_dim is {self.lora_dim}; pass --lora_dim {rank}")
        if self.lora_dim > 0:
            lora.LoRAConfig(self.lora_dim, self.lora_scaling, self.lora_module_name, self.lora_dropout).validate()
        if self.template not in alpaca.TEMPLATES:
            raise ValueError(f"--template must be one of {sorted(alpaca.TEMPLATES)}, got {self.template!r}")
        if not 0 <= self.lr_warmup_ratio <= 1:
            raise ValueError(f"--lr_warmup_ratio must be in [0, 1], got {self.lr_warmup_ratio}")
        if not 0 < self.eval_ratio < 1:
            raise ValueError(f"--eval_ratio must be in (0, 1), got {self.eval_ratio}")
        if self.lr <= 0 or self.eval_interval < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--lr must be > 0 and --eval_interval, --weight_decay, --grad_clip >= 0")
        if self.output_dir is None:
            self.output_dir = str(HERE / "out" / f"r{self.lora_dim}")
        return self


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        if f.type == "bool":
            p.add_argument(f"--{f.name}", action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(f.type.split(" ")[0], str)
            p.add_argument(f"--{f.name}", type=kind, default=f.default, help=f.metadata["help"])
    try:
        return TrainConfig(**vars(p.parse_args(argv))).validate()
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))


class TargetLoss(nn.Module):
    """(sum of target-token cross entropies, number of target tokens) of a causal LM batch.

    Wraps the model so that DDP sees one forward (its gradient hooks need the wrapped module's forward).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
        self.fast = type(model).__name__ in PLAIN_HEAD_MODELS and isinstance(backbone, nn.Module) \
            and model.get_output_embeddings() is not None

    def forward(self, input_ids, attention_mask, labels):
        y = labels[:, 1:]                           # (B, T-1): position t predicts token t+1
        keep = y != alpaca.IGNORE_INDEX
        if self.fast:
            backbone = getattr(self.model, self.model.base_model_prefix)
            h = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, C)
            logits = self.model.get_output_embeddings()(h[:, :-1][keep])                      # (N, V)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]
        return F.cross_entropy(logits.float(), y[keep], reduction="sum"), keep.sum()


def lr_at(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"  # Linux: KiB


def prepare_data(cfg: TrainConfig, tokenizer, info: DDP):
    """Tokenized (train, eval) examples; checks both splits hold at least one batch per rank."""
    records, source = alpaca.load_records(cfg.data_path, cfg.data_dir)
    train_idx, eval_idx = alpaca.split_indices(len(records), cfg.eval_ratio, cfg.seed, cfg.max_examples)
    out = []
    for name, idx, bs, flag in (("train", train_idx, cfg.train_batch_size, "--train_batch_size"),
                                ("eval", eval_idx, cfg.eval_batch_size, "--eval_batch_size")):
        examples, dropped = alpaca.tokenize([records[i] for i in idx], tokenizer, cfg.template, cfg.max_length)
        if dropped:
            print0(f"[data] {name}: dropped {dropped} examples whose prompt fills --max_length {cfg.max_length}")
        alpaca.check_split(name, len(examples), bs, info.world_size, flag)
        out.append(examples)
    print0(f"[data] {source}: {len(records)} records -> train {len(out[0])}, eval {len(out[1])} examples")
    return out[0], out[1], source


@torch.no_grad()
def evaluate(loss_fn: TargetLoss, examples, cfg: TrainConfig, info: DDP, pad_id: int, amp) -> float:
    loss_fn.eval()
    total = torch.zeros(2, dtype=torch.float64, device=info.device)  # (sum of losses, tokens)
    for batch in alpaca.eval_batches(examples, cfg.eval_batch_size, info.rank, info.world_size, pad_id):
        with amp():
            s, n = loss_fn(**{k: v.to(info.device) for k, v in batch.items()})
        total += torch.stack([s.double(), n.double()])
    all_reduce_sum(total, info)
    loss_fn.train()
    return (total[0] / total[1]).item()


def main(argv=None) -> dict:
    t_start = time.time()
    cfg = parse_args(argv)
    try:
        info = setup_ddp(cfg.device)  # inside: a device that does not exist is a one-line error too
        return run(cfg, info, t_start)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        cleanup_ddp()


def run(cfg: TrainConfig, info: DDP, t_start: float) -> dict:
    from tqdm import tqdm
    from torch.nn.parallel import DistributedDataParallel as DDP

    out = Path(cfg.output_dir)
    if info.master:  # an earlier run's summary must not outlive this run's start (a sweep reads it as "done")
        (out / "summary.json").unlink(missing_ok=True)
    torch.manual_seed(cfg.seed)
    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(info.device)
    context, vocab_size = model_shape(cfg.model_name_or_path)
    if context is not None and cfg.max_length > context:
        print0(f"[data] --max_length {cfg.max_length} exceeds the model's {context} positions; using {context}")
        cfg.max_length = context
    tokenizer = alpaca.load_tokenizer(cfg.model_name_or_path, cfg.data_dir, vocab_size)
    train_ex, eval_ex, source = prepare_data(cfg, tokenizer, info)  # before the model: bad data fails fast
    model = load_model(cfg.model_name_or_path, info.device)
    model.config.use_cache = False
    lora_cfg = None
    if cfg.lora_dim > 0:
        if cfg.lora_load_path:
            model, lora_cfg = lora.load_adapter(model, cfg.lora_load_path)
            print0(f"[lora] loaded adapter {cfg.lora_load_path} (rank {lora_cfg.lora_dim}; its settings replace "
                   "the --lora_* flags)")
        else:
            lora.convert_linear_layer_to_lora(model, cfg.lora_module_name, cfg.lora_dim, cfg.lora_scaling,
                                              cfg.lora_dropout, cfg.use_rslora)
            lora_cfg = lora.lora_config_of(model, cfg.lora_module_name)
        lora.only_optimize_lora_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    print0(f"[model] {cfg.model_name_or_path}: {total_params:,} parameters, {trainable:,} trainable "
           f"({100 * trainable / total_params:.3f}%)" + (f", LoRA on {len(lora_cfg.target_modules)} modules"
                                                        if lora_cfg else ", full finetuning"))

    loss_fn = TargetLoss(model).train()
    ddp_loss = DDP(loss_fn, device_ids=[info.device.index] if info.device.type == "cuda" else None) \
        if info.enabled else loss_fn
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.95))
    per_epoch = (len(train_ex) // info.world_size // cfg.train_batch_size) // cfg.gradient_accumulation_steps
    if per_epoch == 0:
        raise ValueError(f"the train split ({len(train_ex)} examples) is smaller than one optimizer step "
                         f"({cfg.train_batch_size} x {cfg.gradient_accumulation_steps} accumulation"
                         f" x {info.world_size} ranks)")
    total_steps = cfg.max_steps or cfg.epochs * per_epoch
    warmup = math.ceil(cfg.lr_warmup_ratio * total_steps)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.bf16 and info.device.type == "cuda" \
        else (lambda: torch.autocast(info.device.type, enabled=False))
    pad_id = tokenizer.pad_token_id

    if info.master:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {**dataclasses.asdict(cfg), "world_size": info.world_size,
                                                "data_source": source, "argv": sys.argv})
    log_f = open(out / "log.jsonl", "w", encoding="utf-8") if info.master else None

    def log(row: dict) -> None:
        if log_f:
            log_f.write(json.dumps({**row, "seconds": round(time.time() - t_start, 3)}) + "\n")
            log_f.flush()

    evals = [evaluate(loss_fn, eval_ex, cfg, info, pad_id, amp)]
    log({"step": 0, "eval_loss": evals[-1]})
    print0(f"[eval] step 0: eval loss {evals[-1]:.4f}")
    step, epoch, tokens_seen = 0, 0, 0
    t_train = time.time()
    bar = tqdm(total=total_steps, desc=f"r={cfg.lora_dim}" if cfg.lora_dim else "full", disable=not info.master,
               dynamic_ncols=True)
    while step < total_steps:
        batches = alpaca.train_batches(train_ex, cfg.train_batch_size, epoch, cfg.seed, info.rank, info.world_size,
                                       pad_id, cfg.group_by_length)
        for _ in range(per_epoch):
            if step >= total_steps:
                break
            micro = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
            # Target tokens of the whole step on all ranks, so each micro-batch loss is a share of the exact mean.
            n_tok = all_reduce_sum(torch.tensor(float(sum((b["labels"][:, 1:] != -100).sum() for b in micro)),
                                                device=info.device), info).item()
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_at(step, total_steps, warmup)
            loss_sum = 0.0
            for i, batch in enumerate(micro):
                sync = i == len(micro) - 1 or not info.enabled
                ctx = ddp_loss.no_sync() if not sync else torch.enable_grad()
                with ctx, amp():
                    s, _ = ddp_loss(**{k: v.to(info.device) for k, v in batch.items()})
                    # DDP averages gradients over ranks; multiply back so the result is the global token mean.
                    (s * (info.world_size / n_tok)).backward()
                loss_sum += s.item()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(n_tok)
            train_loss = all_reduce_sum(torch.tensor(loss_sum, device=info.device), info).item() / n_tok
            log({"step": step, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"], "tokens": tokens_seen})
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", eval=f"{evals[-1]:.4f}")
            if (cfg.eval_interval and step % cfg.eval_interval == 0) or step == total_steps:
                evals.append(evaluate(loss_fn, eval_ex, cfg, info, pad_id, amp))
                log({"step": step, "eval_loss": evals[-1]})
                if info.master:
                    bar.write(f"[eval] step {step}: eval loss {evals[-1]:.4f}")
        epoch += 1
    bar.close()
    train_seconds = time.time() - t_train
    peak, peak_kind = peak_memory_mb(info.device)
    if log_f:
        log_f.close()

    summary = {"lora_dim": lora_cfg.lora_dim if lora_cfg else 0, "final_eval_loss": evals[-1], "best_eval_loss": min(evals),
               "initial_eval_loss": evals[0], "trainable_params": trainable, "total_params": total_params,
               "steps": step, "epochs": step / per_epoch, "tokens": tokens_seen,
               "train_examples": len(train_ex), "eval_examples": len(eval_ex), "train_seconds": train_seconds,
               "peak_memory_mb": peak, "peak_memory_kind": peak_kind, "device": str(info.device),
               "world_size": info.world_size, "model": cfg.model_name_or_path, "data": source}
    if info.master:
        base_name = str(Path(cfg.model_name_or_path).resolve()) if Path(cfg.model_name_or_path).is_dir() \
            else cfg.model_name_or_path
        if lora_cfg is not None:
            lora.save_adapter(model, out / "adapter", lora_cfg, base_name,
                              extra={"train": {k: summary[k] for k in ("steps", "final_eval_loss", "data")}})
            print0(f"[save] adapter -> {out / 'adapter'}")
        else:
            with atomic_dir(out / "model") as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            print0(f"[save] model -> {out / 'model'}")
        plot_curves({f"r={cfg.lora_dim}" if cfg.lora_dim else "full": read_log(out / "log.jsonl")}, out / "curve.png",
                    f"{Path(cfg.model_name_or_path).name} on Alpaca, "
                    + (f"LoRA r={cfg.lora_dim}" if cfg.lora_dim else "full finetuning"))
        summary["wall_seconds"] = time.time() - t_start
        atomic_write_json(out / "summary.json", summary)
        print0(f"[done] {step} steps, eval loss {evals[0]:.4f} -> {evals[-1]:.4f} (best {min(evals):.4f}), "
               f"{summary['wall_seconds']:.1f} s, peak memory {peak:.0f} MB ({peak_kind}) -> {out}")
    return summary


if __name__ == "__main__":
    main()
