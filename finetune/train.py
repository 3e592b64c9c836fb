"""Finetune a causal LM on Stanford Alpaca: LoRA (`--lora_dim R`, R > 0) or full finetuning (`--lora_dim 0`).

    python finetune/train.py --model_name_or_path runs/cpu/pretrain/hf --lora_dim 8 --max_examples 2000 --epochs 2
    python finetune/train.py <the same flags> --resume          # continue exactly from --out_dir's checkpoint
    torchrun --nproc_per_node=8 finetune/train.py --lora_dim 8  # DDP: the same code (one process: no-op collectives)

Settings: config.py; data: data.py; LoRA, base models and the loss: lora.py; outputs: finetune/README.md.
The loss is the token mean over target tokens, exact over gradient accumulation and ranks (target tokens are counted
on the host before the step); the host reads the device once per optimizer step.
"""
import math
import os
import resource
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

import checkpoint
import data as alpaca
import lora
from config import USER_ERRORS, check_resume, claim_run_folder, parse_args
from ddp import all_reduce_sum, cleanup_ddp, from_rank0, gather, print0, setup_ddp
from fileio import atomic_dir, atomic_write_json
from lora import TargetLoss, target_index
from runlog import RunLog, plot_losses, read_log

CKPT_FORMAT = "llmhw-finetune-checkpoint/3"  # what this trainer's checkpoints carry; a new layout gets a new string


def get_lr(step: int, lr: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup to lr, then cosine decay to 0 at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return 0.0
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def build_model(tc, device: torch.device):
    """The model with LoRA layers attached (its LoRAConfig: model.lora_config), or every weight trainable (rank 0)."""
    model = lora.load_model(tc.model_name_or_path, device)
    model.config.use_cache = False
    if tc.lora_dim == 0:
        return model
    if tc.lora_load_path:  # its rank is --lora_dim (config.py checked)
        lora.load_adapter(model, tc.lora_load_path)
        print0(f"[lora] loaded {tc.lora_load_path} (rank {tc.lora_dim}; its settings replace --lora_*)")
    else:
        lora.convert_linear_layer_to_lora(model, tc.lora_module_name, tc.lora_dim, tc.lora_alpha, tc.lora_dropout,
                                          tc.use_rslora)
    return lora.only_optimize_lora_parameters(model)


def on_device(batch: dict, device: torch.device) -> dict:
    """A CPU batch with its target positions (computed on the host), moved without making the host wait."""
    batch = {**batch, "targets": target_index(batch["labels"])}
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(loss_fn: TargetLoss, examples, batch_size: int, ddp, pad_id: int, amp) -> float:
    loss_fn.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ddp.device)  # (sum of losses, tokens)
    for batch in alpaca.eval_batches(examples, batch_size, ddp.rank, ddp.world_size, pad_id):
        with amp():
            s, n = loss_fn(**on_device(batch, ddp.device))
        total += torch.stack([s.double(), n.double()])
    all_reduce_sum(total, ddp)
    loss_fn.train()
    return (total[0] / total[1]).item()


class Trainer:
    """Data, model, optimizer and the position in them (step, epoch, micro-batch): what a checkpoint holds."""

    def __init__(self, tc, rc, ddp, t_start: float):
        self.tc, self.rc, self.ddp, self.t_start = tc, rc, ddp, t_start
        self.out = Path(rc.out_dir).expanduser().resolve()
        torch.manual_seed(tc.seed)  # LoRA init (and dropout until a resume restores the RNG)
        context, vocab_size = lora.model_shape(tc.model_name_or_path)
        if context is not None and tc.max_length > context:
            print0(f"[data] --max_length {tc.max_length} exceeds the model's {context} positions; using {context}")
            tc.max_length = context
        self.tokenizer = alpaca.load_tokenizer(tc.model_name_or_path, tc.data_dir, vocab_size)
        self.train_ex, self.eval_ex, self.source, self.data_sha256 = alpaca.prepare_data(tc, rc, self.tokenizer,
                                                                                         ddp.world_size, print0)
        self.model = build_model(tc, ddp.device)
        self.loss_fn = TargetLoss(self.model).train()
        self.ddp_loss = torch.nn.parallel.DistributedDataParallel(
            self.loss_fn, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None) \
            if ddp.enabled else self.loss_fn
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in self.params if p.ndim >= 2], "weight_decay": tc.weight_decay},
                  {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}]
        # fused on CUDA: one kernel for all parameters instead of a loop of small ones (the CPU keeps the loop)
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=tc.lr, betas=(0.9, 0.95),
                                     fused=ddp.device.type == "cuda")
        self.amp = lora.autocast_for(rc.dtype, ddp.device)
        # optimizer steps per epoch (>= 1: prepare_data checked): every rank takes len/world examples, in full steps
        self.per_epoch = len(self.train_ex) // ddp.world_size // tc.batch_size // tc.gradient_accumulation_steps
        self.total_steps = tc.max_steps or tc.epochs * self.per_epoch
        self.warmup = math.ceil(tc.lr_warmup_ratio * self.total_steps)
        self.eval_interval = max(1, self.per_epoch // rc.evals_per_epoch) if rc.evals_per_epoch else rc.eval_interval
        self.step, self.epoch, self.batch_in_epoch, self.tokens, self.seconds_before = 0, 0, 0, 0, 0.0
        self.evals, self.train_loss = [], None  # [[step, eval loss]], the last step's train loss
        self.run_id = from_rank0(f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}", ddp)
        self.n_params = (sum(p.numel() for p in self.params), sum(p.numel() for p in self.model.parameters()))
        print0(f"[model] {tc.model_name_or_path}: {self.n_params[1]:,} parameters, {self.n_params[0]:,} trainable; "
               f"{self.total_steps} steps ({self.per_epoch} per epoch), {ddp.world_size} process(es)")

    def seconds(self) -> float:
        return round(self.seconds_before + time.time() - self.t_start, 3)

    def train_step(self, batches) -> float:
        """One optimizer step over gradient_accumulation_steps micro-batches; returns the step's train loss."""
        tc, ddp = self.tc, self.ddp
        micro = [on_device(next(batches), ddp.device) for _ in range(tc.gradient_accumulation_steps)]
        # target tokens of the whole step on all ranks, so each micro-batch loss is a share of the exact token mean
        n_tok = all_reduce_sum(torch.tensor(float(sum(len(b["targets"]) for b in micro)), device=ddp.device), ddp)
        for g in self.opt.param_groups:
            g["lr"] = get_lr(self.step, tc.lr, self.warmup, self.total_steps)
        loss_sum = torch.zeros((), device=ddp.device)
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            with nullcontext() if last or not ddp.enabled else self.ddp_loss.no_sync():  # sync on the last only
                with self.amp():  # only the forward runs under autocast; backward follows the forward's dtypes
                    s, _ = self.ddp_loss(**batch)
                (s * (ddp.world_size / n_tok)).backward()  # DDP averages over ranks: the result is the token mean
            loss_sum += s.detach()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss, n = torch.stack([all_reduce_sum(loss_sum, ddp), n_tok]).tolist()  # the one host read of the step
        self.step, self.batch_in_epoch, self.tokens = self.step + 1, self.batch_in_epoch + len(micro), \
            self.tokens + round(n)
        return loss / n

    def evaluate(self, log: RunLog) -> float:
        loss = evaluate(self.loss_fn, self.eval_ex, self.rc.eval_batch_size, self.ddp, self.tokenizer.pad_token_id,
                        self.amp)
        self.evals.append([self.step, loss])
        log.write(step=self.step, epoch=round(self.step / self.per_epoch, 4), eval_loss=loss, seconds=self.seconds())
        print0(f"[eval] step {self.step}: eval loss {loss:.4f}")
        return loss

    POSITION = ("step", "epoch", "batch_in_epoch", "tokens", "evals", "train_loss", "run_id")

    def save_checkpoint(self) -> None:
        rng = gather(checkpoint.rng_state(), self.ddp)  # every rank's (dropout differs per rank)
        if self.ddp.master:
            trainable = lora.get_lora_state_dict(self.model) if self.tc.lora_dim else self.model.state_dict()
            state = {**{k: getattr(self, k) for k in self.POSITION}, "seconds": self.seconds(), "rng": rng,
                     "world_size": self.ddp.world_size, "train_config": asdict(self.tc),
                     "data_sha256": self.data_sha256, "model": {k: v.detach().cpu() for k, v in trainable.items()},
                     "optimizer": self.opt.state_dict()}
            path = checkpoint.save_checkpoint(self.out / "ckpt", state, CKPT_FORMAT, self.rc.keep_checkpoints)
            print0(f"[ckpt] step {self.step} -> {path}")

    def resume(self, path: str) -> None:
        state = checkpoint.load_checkpoint(path, CKPT_FORMAT)
        new_data = check_resume(state, self.tc, self.rc, self.ddp.world_size, self.data_sha256)
        if self.tc.lora_dim:  # LoRA tensors only (names and shapes checked); the frozen base is the model's own
            lora.load_lora_state_dict(self.model, state["model"])
        else:
            self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        for k in self.POSITION:
            setattr(self, k, state[k])
        self.seconds_before = state["seconds"]
        checkpoint.set_rng_state(state["rng"][self.ddp.rank])
        if new_data:  # --allow_new_data: the new examples are read from the start of an epoch
            self.batch_in_epoch = 0
            print0(f"[resume] the data differ from the checkpoint's (--allow_new_data): continuing on {self.source}")
        print0(f"[resume] {state['path']}: step {self.step}/{self.total_steps}, epoch {self.epoch}, micro-batch "
               f"{self.batch_in_epoch} of the epoch")


def train_loop(t: Trainer, log: RunLog) -> None:
    """Epochs of optimizer steps from the current position; evaluations and checkpoints as due."""
    from tqdm import tqdm

    def due(interval: int) -> bool:  # every `interval` steps (0: never) and at the last step
        return t.step == t.total_steps or bool(interval and t.step % interval == 0)

    with tqdm(total=t.total_steps, initial=t.step, desc=f"r={t.tc.lora_dim}" if t.tc.lora_dim else "full",
              disable=not t.ddp.master, dynamic_ncols=True) as bar:  # closed (a new line) even on an error
        while t.step < t.total_steps:  # one epoch's order (train_batches), from the current position on
            batches = alpaca.train_batches(t.train_ex, t.tc.batch_size, t.epoch, t.tc.seed, t.ddp.rank,
                                           t.ddp.world_size, t.tokenizer.pad_token_id, t.tc.group_by_length)
            for _ in range(t.batch_in_epoch):  # skip what the checkpoint's run already trained on
                next(batches)
            for _ in range(t.per_epoch - t.batch_in_epoch // t.tc.gradient_accumulation_steps):
                if t.step >= t.total_steps:
                    break
                t.train_loss = t.train_step(batches)
                log.write(step=t.step, epoch=round(t.step / t.per_epoch, 4), train_loss=t.train_loss,
                          lr=t.opt.param_groups[0]["lr"], tokens=t.tokens, seconds=t.seconds())
                if due(t.eval_interval):
                    t.evaluate(log)
                if t.step % t.per_epoch == 0:
                    t.epoch, t.batch_in_epoch = t.epoch + 1, 0
                if due(t.rc.ckpt_interval):
                    t.save_checkpoint()
                bar.update(1)
                bar.set_postfix(loss=f"{t.train_loss:.4f}", eval=f"{t.evals[-1][1]:.4f}")


def run(tc, rc, ddp, t_start: float) -> dict:
    folder, resume_from = claim_run_folder(tc, rc, ddp)  # refusals before any work; nothing created yet
    t = Trainer(tc, rc, ddp, t_start)
    if resume_from is not None:
        t.resume(resume_from)
    elif ddp.master:  # data and model checked: only now a fresh run makes its folder, drops an earlier ckpt/
        folder.create()
        shutil.rmtree(t.out / "ckpt", ignore_errors=True)
        atomic_write_json(t.out / "config.json", {
            "format": "llmhw-finetune-config", "version": 2, "run_id": t.run_id, **asdict(tc), **asdict(rc),
            "world_size": ddp.world_size, "data_source": t.source, "argv": sys.argv})
    log = RunLog(t.out / "log.jsonl", ddp.master, resume_step=t.step if resume_from else None, live=rc.live,
                 run_name=t.out.name, config={**asdict(tc), **asdict(rc)})
    try:
        if not t.evals:  # step 0: the model before training
            t.evaluate(log)
        train_loop(t, log)
    finally:
        log.close()
    best_step, best_loss = min(t.evals, key=lambda e: e[1])  # [step, eval loss]
    cuda = ddp.device.type == "cuda"  # peak memory: the GPU's allocations, or the process's peak RSS (Linux: KiB)
    peak = torch.cuda.max_memory_allocated(ddp.device) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak /= 2**20 if cuda else 2**10
    summary = {"format": "llmhw-finetune-summary", "version": 1, "run_id": t.run_id, "lora_dim": tc.lora_dim,
               "seed": tc.seed, "data_seed": tc.data_seed, "final_eval_loss": t.evals[-1][1],
               "best_eval_loss": best_loss, "best_eval_step": best_step, "initial_eval_loss": t.evals[0][1],
               "final_train_loss": t.train_loss, "trainable_params": t.n_params[0], "total_params": t.n_params[1],
               "steps": t.step, "epochs": t.step / t.per_epoch, "steps_per_epoch": t.per_epoch, "tokens": t.tokens,
               "train_examples": len(t.train_ex), "eval_examples": len(t.eval_ex), "train_seconds": t.seconds(),
               "peak_memory_mb": peak, "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
               "device": str(ddp.device), "dtype": rc.dtype, "world_size": ddp.world_size,
               "model": tc.model_name_or_path, "data": t.source}
    summary = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in summary.items()}  # JSON
    if ddp.master:
        save_results(t, summary)
    return summary


def save_results(t: Trainer, summary: dict) -> None:
    """adapter/ or model/ (swapped in whole), curve.png, then summary.json last: a summary means a complete run."""
    out, tc = t.out, t.tc
    if tc.lora_dim:
        base = Path(tc.model_name_or_path)  # a folder as its full path, a hub name as it is
        base = str(base.resolve()) if base.is_dir() else tc.model_name_or_path
        lora.save_adapter(t.model, out / "adapter", base,
                          extra={"train": {k: summary[k] for k in ("steps", "final_eval_loss", "data")}})
    else:
        with atomic_dir(out / "model", "finetuned model") as tmp:
            t.model.save_pretrained(tmp)
            t.tokenizer.save_pretrained(tmp)
    other = out / ("model" if tc.lora_dim else "adapter")
    if other.is_dir():  # an earlier run's result of the other kind (--overwrite)
        shutil.rmtree(other)
    what = f"LoRA r={tc.lora_dim}" if tc.lora_dim else "full finetuning"
    plot_losses({f"r={tc.lora_dim}" if tc.lora_dim else "full": read_log(out / "log.jsonl")}, out / "curve.png",
                f"{Path(tc.model_name_or_path).name} on Alpaca, {what}", ("train_loss", "eval_loss"))
    summary["wall_seconds"] = t.seconds()
    atomic_write_json(out / "summary.json", summary)
    print0(f"[done] {t.step} steps, eval loss {summary['initial_eval_loss']} -> {summary['final_eval_loss']}, "
           f"{summary['wall_seconds']:.1f} s, peak memory {summary['peak_memory_mb']:.0f} MB -> {out}")


def main(argv=None) -> dict:
    t_start = time.time()
    tc, rc = parse_args(argv)  # settings: every value checked (config.py)
    # SIGTERM (torchrun stopping its workers, a sweep's parent gone) unwinds like an error: temp files are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(tc, rc, setup_ddp(rc.device, rc.ddp_timeout), t_start)
    except USER_ERRORS as e:
        print(f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        cleanup_ddp()


if __name__ == "__main__":
    main()
