"""Finetune a causal LM on Stanford Alpaca: LoRA (`--lora_dim R`, R > 0) or full finetuning (`--lora_dim 0`).

    python finetune/train.py --lora_dim 8                       # hub `gpt2` (online) on alpaca/alpaca_data.json.xz
    python finetune/train.py --model_name_or_path runs/cpu/pretrain/hf --lora_dim 8 --max_examples 2000 --epochs 2
    python finetune/train.py <the same flags> --resume          # continue exactly from --output_dir's checkpoint
    torchrun --nproc_per_node=8 finetune/train.py --lora_dim 8  # DDP, one rank per GPU (multi-node: README)

Outputs in --output_dir (default finetune/out/r<R>): config.json, log.jsonl, ckpt/, curve.png, adapter/ (LoRA) or
model/ (full finetuning), summary.json. Their fields, and what is atomic or refused, are stated once, in
finetune/README.md ("Run folder").

Settings and their checks: config.py; what the run folder may hold and what a resume must match: runfolder.py.

Loss: token-level mean cross entropy over target tokens (prompt and padding are -100), exact over gradient
accumulation and DDP ranks (target tokens are counted on the host before the step). Logits are computed only at
target positions (for GPT-2-like models), which skips most of the vocabulary projection: prompt and padding tokens
need no logits. The host reads the device once per optimizer step (the step's loss and token count).
Optimizer: AdamW (0.9, 0.95), linear warmup then cosine decay to 0 (get_lr), gradient clipping (0 = off).
Randomness: --data_seed fixes the subset and the train/eval split (keep it across runs you compare); --seed drives
the LoRA init, the shuffling of each epoch and dropout.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoint
import data as alpaca
import lora
import runfolder
from config import RunConfig, TrainConfig, parse_args
from ddp import DDP, all_reduce_sum, cleanup_ddp, from_rank0, gather, print0, run_or_stop_all, setup_ddp
from fileio import OutputError, atomic_dir, atomic_write_json
from models import autocast_for, load_model, model_shape
from plots import plot_curves
from runlog import LiveLogError, RunLog, read_log

# Models whose forward is `lm_head(backbone(x).last_hidden_state)` with nothing in between (no logit scaling or
# soft-capping), so logits may be computed on the target positions only.
PLAIN_HEAD_MODELS = {"GPT2LMHeadModel", "GPTNeoForCausalLM", "GPTNeoXForCausalLM", "LlamaForCausalLM",
                     "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}


def target_index(labels: torch.Tensor) -> torch.Tensor:
    """(N,) flat indices into (B*(T-1)) of the positions whose next token is a target. Computed on the host from the
    batch's CPU labels: a data-dependent shape made on the GPU would make the host wait for it."""
    return torch.nonzero(labels[:, 1:].reshape(-1) != alpaca.IGNORE_INDEX).squeeze(1)


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

    def forward(self, input_ids, attention_mask, labels, targets=None):
        y = labels[:, 1:].reshape(-1)                 # (B*(T-1),): position t predicts token t+1
        n = (y != alpaca.IGNORE_INDEX).sum()          # a device tensor: nobody waits for it
        if self.fast:  # logits at the target positions only (the vocabulary projection dominates small models)
            targets = target_index(labels) if targets is None else targets  # (N,), given by the trainer
            backbone = getattr(self.model, self.model.base_model_prefix)
            h = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, C)
            h = h[:, :-1].reshape(-1, h.shape[-1]).index_select(0, targets)                    # (N, C)
            logits, y = self.model.get_output_embeddings()(h), y.index_select(0, targets)      # (N, V), (N,)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
            logits = logits.reshape(-1, logits.shape[-1])                                     # (B*(T-1), V)
        # fp32 cross entropy even under bf16 autocast: the log-softmax over V needs the range. ignore_index masks
        # prompt and padding by multiplying their terms by 0 inside (no boolean indexing, no host sync).
        return F.cross_entropy(logits.float(), y, ignore_index=alpaca.IGNORE_INDEX, reduction="sum"), n


def get_lr(step: int, lr: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based)."""
    # 1) linear warmup for `warmup` steps, reaching lr at the last warmup step
    if step < warmup:
        return lr * (step + 1) / warmup
    # 2) past the schedule's end: 0
    if step >= total:
        return 0.0
    # 3) in between, cosine decay from lr down to 0
    progress = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"  # Linux: KiB


def prepare_data(tc: TrainConfig, rc: RunConfig, tokenizer, ddp: DDP):
    """Tokenized (train, eval) examples, the data's name, and a SHA-256 of the records they come from (a resume
    compares it: the same file name may hold other data); checks both splits hold at least one batch per rank."""
    records, source = alpaca.load_records(tc.data_path, tc.data_dir)
    train_idx, eval_idx = alpaca.split_indices(len(records), tc.eval_ratio, tc.data_seed, tc.max_examples)
    out = []
    for name, idx, bs, flag in (("train", train_idx, tc.train_batch_size, "--train_batch_size"),
                                ("eval", eval_idx, rc.eval_batch_size, "--eval_batch_size")):
        examples, dropped = alpaca.tokenize([records[i] for i in idx], tokenizer, tc.template, tc.max_length)
        if dropped:
            print0(f"[data] {name}: dropped {dropped} examples whose prompt fills --max_length {tc.max_length}")
        alpaca.check_split(name, len(examples), bs, ddp.world_size, flag)
        out.append(examples)
    print0(f"[data] {source}: {len(records)} records -> train {len(out[0])}, eval {len(out[1])} examples")
    used = [[records[i] for i in train_idx], [records[i] for i in eval_idx]]
    digest = hashlib.sha256(json.dumps(used, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    return out[0], out[1], source, digest


def on_device(batch: dict, device: torch.device) -> dict:
    """A CPU batch moved to ``device`` without making the host wait (pinned memory, non_blocking), with its target
    positions (``target_index``) computed on the host."""
    batch = {**batch, "targets": target_index(batch["labels"])}
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(loss_fn: TargetLoss, examples, batch_size: int, ddp: DDP, pad_id: int, amp) -> float:
    """Token-mean eval loss over the whole eval split, every rank a share of it."""
    loss_fn.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ddp.device)  # (sum of losses, tokens)
    for batch in alpaca.eval_batches(examples, batch_size, ddp.rank, ddp.world_size, pad_id):
        with amp():
            s, n = loss_fn(**on_device(batch, ddp.device))
        total += torch.stack([s.double(), n.double()])
    all_reduce_sum(total, ddp)
    loss_fn.train()
    return (total[0] / total[1]).item()


def check_ranks_fit(model: nn.Module, tc: TrainConfig) -> None:
    """LoRA rank <= min(in, out) of every target module, else a "low-rank" update would be full-rank or bigger."""
    for name, m in model.named_modules():
        if tc.lora_module_name in name and isinstance(m, lora.ADAPTABLE):
            shape = tuple(m.weight.shape)
            if tc.lora_dim > min(shape):
                raise ValueError(f"--lora_dim {tc.lora_dim} exceeds min(in, out) of module '{name}' (weight "
                                 f"{shape}); choose a rank <= {min(shape)}")


def build_model(tc: TrainConfig, device: torch.device):
    """The model with LoRA layers attached (or all weights trainable) and its LoRAConfig (None when full)."""
    model = load_model(tc.model_name_or_path, device)
    model.config.use_cache = False
    if tc.lora_dim == 0:
        return model, None
    check_ranks_fit(model, tc)
    if tc.lora_load_path:
        model, lora_cfg = lora.load_adapter(model, tc.lora_load_path)
        print0(f"[lora] loaded adapter {tc.lora_load_path} (rank {lora_cfg.lora_dim}; its settings replace "
               "the --lora_* flags)")
    else:
        lora.convert_linear_layer_to_lora(model, tc.lora_module_name, tc.lora_dim, tc.lora_scaling,
                                          tc.lora_dropout, tc.use_rslora)
        lora_cfg = lora.lora_config_of(model, tc.lora_module_name)
    lora.only_optimize_lora_parameters(model)
    return model, lora_cfg


class Trainer:
    """Model, optimizer, data and the position in them (step, epoch, micro-batch), which a checkpoint captures."""

    def __init__(self, tc: TrainConfig, rc: RunConfig, ddp: DDP, t_start: float):
        self.tc, self.rc, self.ddp, self.t_start = tc, rc, ddp, t_start
        self.out = Path(rc.output_dir).expanduser().resolve()
        self.step, self.epoch, self.batch_in_epoch, self.tokens = 0, 0, 0, 0
        self.evals: list[list] = []            # [[step, eval loss]] of this run
        self.train_losses: list[float] = []   # the last train loss is the summary's final_train_loss
        self.elapsed_before = 0.0              # seconds spent by the run before its resume
        self.run_id = from_rank0(f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}", ddp)

    # ---------------------------------------------------------------------------------------------- set up

    def setup(self) -> None:
        tc, ddp = self.tc, self.ddp
        torch.manual_seed(tc.seed)  # LoRA init (and dropout until a resume restores the RNG)
        if ddp.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ddp.device)
        context, vocab_size = model_shape(tc.model_name_or_path)
        if context is not None and tc.max_length > context:
            print0(f"[data] --max_length {tc.max_length} exceeds the model's {context} positions; using {context}")
            tc.max_length = context
        self.tokenizer = alpaca.load_tokenizer(tc.model_name_or_path, tc.data_dir, vocab_size)
        self.train_ex, self.eval_ex, self.source, self.data_sha256 = prepare_data(tc, self.rc, self.tokenizer,
                                                                                  ddp)  # fail fast
        self.model, self.lora_cfg = build_model(tc, ddp.device)
        self.loss_fn = TargetLoss(self.model).train()
        self.ddp_loss = self.loss_fn
        if ddp.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.ddp_loss = DistributedDataParallel(self.loss_fn, device_ids=[ddp.device.index]
                                                    if ddp.device.type == "cuda" else None)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in self.params if p.ndim >= 2], "weight_decay": tc.weight_decay},
                  {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}]
        # fused on CUDA: one kernel for all parameters instead of a loop of small ones (the CPU keeps the loop)
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=tc.lr, betas=(0.9, 0.95),
                                     fused=ddp.device.type == "cuda")
        self.amp = autocast_for(self.rc.dtype, ddp.device)
        self.setup_schedule()
        self.describe()

    def setup_schedule(self) -> None:
        tc, ddp = self.tc, self.ddp
        # optimizer steps per epoch: every rank takes len/world examples, in full micro-batches, in full steps
        self.per_epoch = len(self.train_ex) // ddp.world_size // tc.train_batch_size // tc.gradient_accumulation_steps
        if self.per_epoch == 0:
            raise ValueError(f"the train split ({len(self.train_ex)} examples) is smaller than one optimizer step "
                             f"({tc.train_batch_size} x {tc.gradient_accumulation_steps} accumulation"
                             f" x {ddp.world_size} ranks)")
        self.total_steps = tc.max_steps or tc.epochs * self.per_epoch
        self.warmup = math.ceil(tc.lr_warmup_ratio * self.total_steps)
        self.eval_interval = max(1, self.per_epoch // self.rc.evals_per_epoch) if self.rc.evals_per_epoch \
            else self.rc.eval_interval

    def describe(self) -> None:
        trainable = sum(p.numel() for p in self.params)
        total = sum(p.numel() for p in self.model.parameters())
        self.n_params = (trainable, total)
        print0(f"[model] {self.tc.model_name_or_path}: {total:,} parameters, {trainable:,} trainable "
               f"({100 * trainable / total:.3f}%)" + (f", LoRA on {len(self.lora_cfg.target_modules)} modules"
                                                      if self.lora_cfg else ", full finetuning")
               + f"; {self.total_steps} steps ({self.per_epoch} per epoch), {self.ddp.world_size} process(es)")

    # ---------------------------------------------------------------------------------------------- checkpoints

    def trainable_state(self) -> dict:
        return lora.get_lora_state_dict(self.model) if self.lora_cfg else self.model.state_dict()

    def state(self) -> dict:
        """Everything an exact resume needs, as tensors and plain types (weights_only-loadable)."""
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "tokens": self.tokens, "evals": self.evals, "train_losses": self.train_losses,
                "seconds": self.seconds(), "run_id": self.run_id, "world_size": self.ddp.world_size,
                "train_config": asdict(self.tc), "lora_config": asdict(self.lora_cfg) if self.lora_cfg else None,
                "data_sha256": self.data_sha256,
                "model": {k: v.detach().cpu() for k, v in self.trainable_state().items()},
                "optimizer": self.opt.state_dict()}

    def save_checkpoint(self) -> None:
        rng = gather(checkpoint.rng_state(), self.ddp)  # every rank's (dropout differs per rank)
        if self.ddp.master:
            path = checkpoint.save_checkpoint(runfolder.ckpt_dir(self.out), {**self.state(), "rng": rng},
                                              runfolder.KIND, self.rc.keep_checkpoints)
            print0(f"[ckpt] step {self.step} -> {path}")

    def resume(self, path: Path) -> None:
        state = checkpoint.load_checkpoint(path, runfolder.KIND)
        new_data = runfolder.check_resumable(state, asdict(self.tc), self.ddp.world_size, path, self.data_sha256,
                                             self.rc.allow_new_data)
        if self.lora_cfg:  # LoRA tensors only (names and shapes checked); the frozen base is the model's own
            lora.load_lora_state_dict(self.model, state["model"])
        else:
            self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.tokens, self.evals, self.train_losses = state["tokens"], state["evals"], state["train_losses"]
        self.elapsed_before, self.run_id = state["seconds"], state["run_id"]
        checkpoint.set_rng_state(state["rng"][self.ddp.rank])
        if new_data:  # --allow_new_data: the new examples are read from the start of an epoch
            self.batch_in_epoch = 0
            print0(f"[resume] the data differ from the checkpoint's (--allow_new_data): continuing on {self.source}")
        print0(f"[resume] {path}: step {self.step}/{self.total_steps}, epoch {self.epoch}, "
               f"micro-batch {self.batch_in_epoch} of the epoch")

    # ---------------------------------------------------------------------------------------------- the loop

    def seconds(self) -> float:
        return round(self.elapsed_before + time.time() - self.t_start, 3)

    def batches(self):
        """This rank's micro-batches from the current position in the current epoch's order on."""
        tc, ddp = self.tc, self.ddp
        it = alpaca.train_batches(self.train_ex, tc.train_batch_size, self.epoch, tc.seed, ddp.rank,
                                  ddp.world_size, self.tokenizer.pad_token_id, tc.group_by_length)
        for _ in range(self.batch_in_epoch):  # skip what the checkpoint's run already trained on
            next(it)
        return it

    def train_step(self, batches) -> float:
        """One optimizer step over gradient_accumulation_steps micro-batches; returns the step's train loss.
        The host reads the device once per step (the loss and the token count, at the end)."""
        tc, ddp = self.tc, self.ddp
        micro = [on_device(next(batches), ddp.device) for _ in range(tc.gradient_accumulation_steps)]
        # Target tokens of the whole step on all ranks (counted on the host, summed on the device), so each
        # micro-batch loss is a share of the exact token mean.
        n_tok = all_reduce_sum(torch.tensor(float(sum(len(b["targets"]) for b in micro)), device=ddp.device), ddp)
        for g in self.opt.param_groups:
            g["lr"] = get_lr(self.step, tc.lr, self.warmup, self.total_steps)
        loss_sum = torch.zeros((), device=ddp.device)
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            with (nullcontext() if last or not ddp.enabled else self.ddp_loss.no_sync()):  # sync on the last only
                with self.amp():  # only the forward runs under autocast; backward follows the forward's dtypes
                    s, _ = self.ddp_loss(**batch)
                # DDP averages gradients over ranks; multiply back so the result is the global token mean.
                (s * (ddp.world_size / n_tok)).backward()
            loss_sum += s.detach()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss, n = torch.stack([all_reduce_sum(loss_sum, ddp), n_tok]).tolist()  # the one host read of the step
        self.step, self.batch_in_epoch, self.tokens = self.step + 1, self.batch_in_epoch + len(micro), \
            self.tokens + round(n)
        return loss / n

    def evaluate(self) -> float:
        loss = evaluate(self.loss_fn, self.eval_ex, self.rc.eval_batch_size, self.ddp, self.tokenizer.pad_token_id,
                        self.amp)
        self.evals.append([self.step, loss])
        return loss

    def on_interval(self, interval: int) -> bool:
        """Whether this step is a multiple of ``interval`` (0: never) or the last one."""
        return self.step == self.total_steps or bool(interval and self.step % interval == 0)

    def after_step(self, log: RunLog, train_loss: float) -> None:
        """Log, evaluate, checkpoint as due; move to the next epoch when this one is done."""
        self.train_losses = [train_loss]
        log.write(step=self.step, epoch=round(self.step / self.per_epoch, 4), train_loss=train_loss,
                  lr=self.opt.param_groups[0]["lr"], tokens=self.tokens, seconds=self.seconds())
        if self.on_interval(self.eval_interval):
            loss = self.evaluate()
            log.write(step=self.step, epoch=round(self.step / self.per_epoch, 4), eval_loss=loss,
                      seconds=self.seconds())
            print0(f"[eval] step {self.step}: eval loss {loss:.4f}")
        if self.step % self.per_epoch == 0:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if self.on_interval(self.rc.ckpt_interval):
            self.save_checkpoint()


def train_loop(trainer: Trainer, log: RunLog) -> None:
    from tqdm import tqdm

    rank = trainer.tc.lora_dim
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, desc=f"r={rank}" if rank else "full",
               disable=not trainer.ddp.master, dynamic_ncols=True)
    while trainer.step < trainer.total_steps:
        batches = trainer.batches()  # the current epoch's order, from the current position
        for _ in range(trainer.per_epoch - trainer.batch_in_epoch // trainer.tc.gradient_accumulation_steps):
            if trainer.step >= trainer.total_steps:
                break
            train_loss = trainer.train_step(batches)
            trainer.after_step(log, train_loss)  # may move to the next epoch: then this loop ends
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", eval=f"{trainer.evals[-1][1]:.4f}")
    bar.close()


def run(tc: TrainConfig, rc: RunConfig, ddp: DDP, t_start: float) -> dict:
    """Set up -> resume -> loop -> finish."""
    folder, resume_from = claim_run_folder(tc, rc, ddp)  # refusals before any work; nothing created yet
    trainer = Trainer(tc, rc, ddp, t_start)
    trainer.setup()  # data and model checked: only now does a fresh run make its folder, drop an earlier ckpt/
    if resume_from is not None:
        trainer.resume(resume_from)
    elif ddp.master:
        runfolder.start_fresh(folder)
        write_config(trainer)
    log = RunLog(trainer.out / "log.jsonl", ddp.master, resume_step=trainer.step if resume_from else None,
                 live=rc.live, run_name=trainer.out.name, config={**asdict(tc), **asdict(rc)})
    try:
        if not trainer.evals:  # step 0: the model before training
            log.write(step=0, epoch=0.0, eval_loss=trainer.evaluate(), seconds=trainer.seconds())
            print0(f"[eval] step 0: eval loss {trainer.evals[-1][1]:.4f}")
        train_loop(trainer, log)
    finally:
        log.close()
    summary = summarize(trainer)
    if ddp.master:
        save_results(trainer, summary)
    return summary


# -------------------------------------------------------------------------------------------------- run folder

def claim_run_folder(tc: TrainConfig, rc: RunConfig, ddp: DDP):
    """Global rank 0 claims the run folder (runfolder.claim) and decides fresh or resume, and from which file; all
    ranks follow. Returns (the claimed folder on rank 0, else None; the checkpoint to resume from, or None)."""
    def claim():
        data = alpaca.resolve_data_path(tc.data_path, tc.data_dir)
        inputs = [p for p in (tc.model_name_or_path, tc.lora_load_path, data) if p and Path(p).expanduser().exists()]
        return runfolder.claim(rc.output_dir, rc.resume, rc.overwrite, inputs)

    folder, resume_from = run_or_stop_all(claim, ddp, (ValueError, OSError), rank0_only=True) or (None, None)
    resume_from = from_rank0(str(resume_from) if resume_from else None, ddp)
    if resume_from is not None and not all(gather(Path(resume_from).is_file(), ddp)):  # multi-node: one file
        raise ValueError(f"--resume: {resume_from} is not visible on every node; --output_dir must be on a shared "
                         "file system for multi-node runs")
    return folder, Path(resume_from) if resume_from else None


def write_config(trainer: Trainer) -> None:
    tc, rc = trainer.tc, trainer.rc
    atomic_write_json(trainer.out / "config.json", {
        "format": "llmhw-finetune-config", "version": 1, "run_id": trainer.run_id, **asdict(tc), **asdict(rc),
        "world_size": trainer.ddp.world_size, "data_source": trainer.source, "argv": sys.argv})


def summarize(trainer: Trainer) -> dict:
    """summary.json's fields (stated in finetune/README.md)."""
    tr, tc = trainer, trainer.tc
    losses = [e[1] for e in tr.evals]
    best = min(range(len(losses)), key=losses.__getitem__)
    peak, peak_kind = peak_memory_mb(tr.ddp.device)
    return {"format": "llmhw-finetune-summary", "version": 1, "run_id": tr.run_id,
            "lora_dim": tr.lora_cfg.lora_dim if tr.lora_cfg else 0, "seed": tc.seed, "data_seed": tc.data_seed,
            "final_eval_loss": losses[-1], "best_eval_loss": losses[best], "best_eval_step": tr.evals[best][0],
            "initial_eval_loss": losses[0], "final_train_loss": tr.train_losses[-1] if tr.train_losses else None,
            "trainable_params": tr.n_params[0], "total_params": tr.n_params[1], "steps": tr.step,
            "epochs": tr.step / tr.per_epoch, "steps_per_epoch": tr.per_epoch, "tokens": tr.tokens,
            "train_examples": len(tr.train_ex), "eval_examples": len(tr.eval_ex), "train_seconds": tr.seconds(),
            "peak_memory_mb": peak, "peak_memory_kind": peak_kind, "device": str(tr.ddp.device),
            "dtype": trainer.rc.dtype, "world_size": tr.ddp.world_size, "model": tc.model_name_or_path,
            "data": tr.source}


def save_results(trainer: Trainer, summary: dict) -> None:
    """adapter/ or model/ (swapped in whole), curve.png, then summary.json last: a summary means a complete run."""
    out, tc = trainer.out, trainer.tc
    base_name = str(Path(tc.model_name_or_path).resolve()) if Path(tc.model_name_or_path).is_dir() \
        else tc.model_name_or_path
    if trainer.lora_cfg is not None:
        lora.save_adapter(trainer.model, out / "adapter", trainer.lora_cfg, base_name,
                          extra={"train": {k: summary[k] for k in ("steps", "final_eval_loss", "data")}})
        other = out / "model"
    else:
        with atomic_dir(out / "model") as tmp:
            trainer.model.save_pretrained(tmp)
            trainer.tokenizer.save_pretrained(tmp)
        other = out / "adapter"
    if other.is_dir():  # an earlier run's result of the other kind (--overwrite)
        shutil.rmtree(other)
    print0(f"[save] -> {out / ('adapter' if trainer.lora_cfg else 'model')}")
    name = f"r={tc.lora_dim}" if tc.lora_dim else "full"
    plot_curves({name: read_log(out / "log.jsonl")}, out / "curve.png", f"{Path(tc.model_name_or_path).name} on "
                f"Alpaca, " + (f"LoRA r={tc.lora_dim}" if tc.lora_dim else "full finetuning"))
    summary["wall_seconds"] = trainer.seconds()
    atomic_write_json(out / "summary.json", summary)
    print0(f"[done] {trainer.step} steps, eval loss {summary['initial_eval_loss']:.4f} -> "
           f"{summary['final_eval_loss']:.4f} (best {summary['best_eval_loss']:.4f}), {summary['wall_seconds']:.1f} s, "
           f"peak memory {summary['peak_memory_mb']:.0f} MB ({summary['peak_memory_kind']}) -> {out}")


def main(argv=None) -> dict:
    t_start = time.time()
    tc, rc = parse_args(argv)
    try:
        ddp = setup_ddp(rc.device, rc.ddp_timeout)  # inside: a device that does not exist is a one-line error too
        return run(tc, rc, ddp, t_start)
    except (ValueError, FileNotFoundError, RuntimeError, OutputError, LiveLogError) as e:
        raise SystemExit(f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") \
            from None
    finally:
        cleanup_ddp()


if __name__ == "__main__":
    main()
