"""GPT-2 pretraining, nanoGPT / build-nanogpt style, on one CPU, one GPU or many (torchrun, one or more nodes).

    python pretrain/train.py                                   # preset tiny-cpu on CPU (gpt2-124m on a GPU)
    python pretrain/train.py --preset tiny-cpu --data DIR --out_dir OUT --max_steps 100
    torchrun --nproc_per_node=8 pretrain/train.py --preset gpt2-124m     # build-nanogpt's run, FineWeb-Edu 10B
    python pretrain/train.py --out_dir OUT --resume            # continue exactly where OUT's latest checkpoint stopped
    python pretrain/train.py --preset gpt2-124m --help         # every flag with the value this preset uses

Settings: config.py (TrainConfig, presets). The run folder, the data and the resume decision: runfolder.py.
Outputs in --out_dir and the log.jsonl / summary.json schemas: README.md, "Outputs". Checkpoints: checkpoint.py.
Distributed: ddp.py (world size 1 takes the same path). Devices, autocast and MFU peaks: perf.py.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist

import hellaswag
import plots
import text_tokenizer
from checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from config import PRESETS, ConfigError, TrainConfig, fit_micro_batch, model_vocab, parse_args  # noqa: F401
from dataloader import ShardLoader, ShuffledLoader
from ddp import DDP, all_reduce_sum, barrier, cleanup_ddp, from_rank0, print0, run_or_stop_all, setup_ddp
from fileio import atomic_dir, atomic_write_json
from modeling_gpt2 import GPT, GPTConfig
from models import KIND
from perf import autocast_for, compute_dtype, describe_peak, mfu, peak_flops
from runfolder import USER_ERRORS, check_shared, claim, data_folder, plan_resume
from runlog import RunLog
from shards import DataError, check_shards, read_meta


# ---------------------------------------------------------------------------- schedule
def get_lr(step: int, tc: TrainConfig) -> float:
    """build-nanogpt's schedule, as nanoGPT's get_lr."""
    min_lr = tc.max_lr * tc.min_lr_ratio
    # 1) linear warmup for warmup_steps steps ((step+1): the first step already has a non-zero lr)
    if step < tc.warmup_steps:
        return tc.max_lr * (step + 1) / tc.warmup_steps
    # 2) after max_steps (a run extended by --resume with a larger --max_steps re-plans): min_lr
    if step >= tc.max_steps:
        return min_lr
    # 3) in between, cosine decay from max_lr down to min_lr
    ratio = (step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (tc.max_lr - min_lr)


# ---------------------------------------------------------------------------- set-up steps (before any work)
def load_data(data: Path, mc: GPTConfig, vocab_given: bool) -> tuple[dict, text_tokenizer.TextTokenizer, GPTConfig]:
    """meta.json, the data's tokenizer and the model config with its vocab fitted to the data; all cross-checked."""
    meta = read_meta(data)
    if not vocab_given:
        mc = replace(mc, vocab_size=model_vocab(meta["vocab_size"]))
    check_shards(data, meta, mc.vocab_size)
    tok = text_tokenizer.load(data / meta["tokenizer"]["dir"])
    if tok.describe()["sha256"] != meta["tokenizer"].get("sha256"):
        raise DataError(f"{data}/{meta['tokenizer']['dir']}: tokenizer files differ from the ones the shards were "
                        "made with (meta.json tokenizer.sha256)")
    return meta, tok, mc


# ---------------------------------------------------------------------------- the trainer
class Trainer:
    """Model, optimizer, loaders and the run's files; one method per step of the story in train()."""

    def __init__(self, preset: str, mc: GPTConfig, tc: TrainConfig, ddp: DDP, data: Path, meta: dict, tok,
                 batch_size_given: bool = True):
        self.preset, self.mc, self.tc, self.ddp, self.data, self.meta, self.tok = preset, mc, tc, ddp, data, meta, tok
        self.out = Path(tc.out_dir)
        tc.batch_size, self.accum = self._fit_batch(tc, ddp, batch_size_given)
        self.dtype, self.autocast = compute_dtype(tc.dtype, ddp.device), autocast_for(tc.dtype, ddp.device)
        torch.manual_seed(tc.seed)  # same seed on every rank: identical initial weights (DDP also broadcasts them)
        self.raw_model = GPT(mc).to(ddp.device)
        self.optimizer = self.raw_model.configure_optimizers(tc.weight_decay, tc.max_lr, device_type=ddp.device.type,
                                                              optimizer=tc.optimizer)
        self.train_loader = self._loader("train")
        self.val_loader = self._loader("val") if tc.val_steps > 0 else None
        # val_steps batches of total_batch_size tokens: each rank reads val_steps * accum windows, the same set of
        # windows for any world size (capped at one pass over the val split)
        self.n_val = min(tc.val_steps * self.accum, self.val_loader.batches_per_epoch()) if self.val_loader else 0
        self.start, self.stats = 0, {"tokens": 0, "train_time": 0.0, "wall_time": 0.0, "steady_tokens": 0,
                                     "steady_time": 0.0}
        self.hs_examples = (hellaswag.load_examples(hellaswag.find_data(tc.data_dir), tc.hellaswag_limit)
                            if tc.hellaswag_limit != 0 else [])

    @staticmethod
    def _fit_batch(tc: TrainConfig, ddp: DDP, batch_size_given: bool) -> tuple[int, int]:
        B, accum, note = fit_micro_batch(tc.total_batch_size, tc.batch_size, tc.seq_len, ddp.world_size,
                                         batch_size_given)
        if note:
            print0(note)
        tc.total_batch_size = tc.total_batch_size or B * tc.seq_len * ddp.world_size
        return B, accum

    def _loader(self, split: str) -> ShardLoader:
        if not self.meta[split]["shards"] or not self.meta[split]["tokens"]:
            raise DataError(f"{self.data}: no {split} tokens (meta.json {split}.tokens 0): prepare the data with "
                            "--val_fraction > 0 (e.g. 0.1), or pass --val_steps 0 to train without validation")
        args = (self.data, split, self.tc.batch_size, self.tc.seq_len, self.ddp.rank, self.ddp.world_size)
        # validation always reads its split in order: the same windows at every evaluation
        shuffled = split == "train" and self.tc.data_order == "shuffle"
        loader = ShuffledLoader(*args, seed=self.tc.seed, accum=self.accum) if shuffled else ShardLoader(*args)
        if loader.skipped:
            print0(f"note: skipping {split} shard(s) {loader.skipped}: shorter than one step of "
                   f"{self.tc.batch_size} x {self.tc.seq_len} x {self.ddp.world_size} tokens")
        return loader

    def resume(self, path: str) -> None:
        """Restore model, optimizer, data position, RNG and counters from checkpoint ``path`` (checked first)."""
        ckpt = load_checkpoint(path, KIND)
        new_data = self._check_compatible(ckpt)
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if not new_data:  # --allow_new_data: the new data is read from its start
            self.train_loader.load_state_dict(ckpt["data_position"])
        set_rng_state(ckpt["rng"])
        self.start, self.stats = ckpt["step"], {**self.stats, **ckpt["stats"]}
        print0(f"resumed from {path} at step {self.start}")

    def _check_compatible(self, ckpt: dict) -> bool:
        """Exact resume needs the same model, tokenizer, data, batch shape and process count, and an end not
        passed; returns whether the data differ (allowed only with --allow_new_data)."""
        where, mc = ckpt["path"], asdict(self.mc)
        if ckpt["model_config"] != mc:
            diff = {k: (v, mc.get(k)) for k, v in ckpt["model_config"].items() if mc.get(k) != v}
            raise ConfigError(f"{where}: model config differs from this run's (checkpoint, now): {diff}")
        now = {"batch_size": self.tc.batch_size, "seq_len": self.tc.seq_len,
               "total_batch_size": self.tc.total_batch_size, "world_size": self.ddp.world_size,
               "optimizer": self.tc.optimizer}
        then = {**{k: ckpt["train_config"].get(k) for k in now}, "world_size": ckpt.get("world_size"),
                "optimizer": ckpt["train_config"].get("optimizer", "adamw")}  # older checkpoints: AdamW
        if then != now:
            raise ConfigError(f"{where}: --resume needs the checkpoint's batch settings and optimizer: "
                              + ", ".join(f"{k} {then[k]} (now {now[k]})" for k in now if then[k] != now[k]))
        same_tok = ("kind", "vocab_size", "eot_id", "sha256")  # not where it came from ("spec", "dir")
        if any(ckpt["tokenizer"].get(k) != self.meta["tokenizer"].get(k) for k in same_tok):
            raise ConfigError(f"{where}: the data {self.data} uses another tokenizer than the checkpoint's "
                              f"({self.meta['tokenizer'].get('spec')} vs {ckpt['tokenizer'].get('spec')})")
        if ckpt["step"] > self.tc.max_steps:
            raise ConfigError(f"{where}: the checkpoint is at step {ckpt['step']}, past --max_steps "
                              f"{self.tc.max_steps}")
        new_data = ckpt.get("data", data_identity(self.meta)) != data_identity(self.meta)  # older: no "data"
        if new_data and not self.tc.allow_new_data:
            raise ConfigError(f"{where}: the checkpoint was trained on other data than {self.data} (meta.json "
                              "sources / train tokens differ); pass --allow_new_data to continue on this data from "
                              "its start")
        return new_data

    def open_outputs(self) -> None:
        """The log (kept up to the resumed step), tokenizer files, the wrapped model and the MFU peak."""
        tc, ddp = self.tc, self.ddp
        self.log = run_or_stop_all(lambda: RunLog(self.out / "log.jsonl", ddp.master, self.start or None,
                                                  live=tc.live, run_name=self.out.name,
                                                  config={**asdict(self.mc), **asdict(tc)}), ddp, USER_ERRORS)
        run_or_stop_all(self.write_tokenizer, ddp, USER_ERRORS, rank0_only=True)
        self.model = torch.compile(self.raw_model) if tc.compile else self.raw_model
        if ddp.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.model, device_ids=[ddp.local_rank] if ddp.device.type == "cuda" else None)
        # the CPU peak is measured (perf.py): all ranks measure at once, so each measures its share of the cores
        barrier(ddp)
        self.peak = peak_flops(ddp.device, self.dtype)
        self.flops_per_token = self.raw_model.flops_per_token(tc.seq_len)
        print0(f"MFU peak: {describe_peak(ddp.device, self.dtype)}")
        print0(f"preset {self.preset}: {self.raw_model.num_params():,} params, vocab {self.mc.vocab_size}, "
               f"{ddp.world_size} process(es) on {ddp.device}, {tc.total_batch_size:,} tokens/step = "
               f"{tc.batch_size} x {tc.seq_len} x {ddp.world_size} x {self.accum} accum, steps {self.start}.."
               f"{tc.max_steps}, data {self.data} ({self.meta['train']['tokens']:,} train tokens)")

    def write_tokenizer(self) -> None:
        with atomic_dir(self.out / "tokenizer") as tmp:  # HF tokenizer files, for the export and other scripts
            self.tok.write_hf_files(tmp, model_max_length=self.mc.block_size)

    def train_step(self, step: int) -> dict:
        """One optimizer step over total_batch_size tokens (accum micro-batches per rank); returns its numbers."""
        tc, ddp, t0 = self.tc, self.ddp, time.perf_counter()
        loss_accum = torch.zeros((), device=ddp.device)
        fused = ddp.device.type == "cpu" and self.dtype == torch.float32  # LinearCrossEntropy: CPU fp32 only
        for micro in range(self.accum):
            x, y = self.train_loader.next_batch()  # (B, T) each, y = x shifted by one token
            x, y = self.to_device(x), self.to_device(y)
            # DDP: all-reduce gradients only on the last micro-step
            with self.model.no_sync() if ddp.enabled and micro < self.accum - 1 else nullcontext():
                with self.autocast():
                    _, loss = self.model(x, y, fused_loss=fused)  # scalar: mean over B*T tokens
                loss = loss / self.accum  # the mean over the whole step, not a sum of micro-batch means
                loss_accum += loss.detach()
                loss.backward()
        loss_accum = all_reduce_sum(loss_accum, ddp) / ddp.world_size
        # grad_clip 0 = no clipping (the norm is still measured and logged)
        norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), tc.grad_clip or float("inf"))
        lr = get_lr(step, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if ddp.device.type == "cuda":
            torch.cuda.synchronize()
        return {"loss": loss_accum.item(), "lr": lr, "grad_norm": norm.item(), "dt": time.perf_counter() - t0}

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """CUDA: through pinned memory, so the copy is asynchronous (non_blocking) and overlaps the GPU's work."""
        if self.ddp.device.type != "cuda":
            return batch
        return batch.pin_memory().to(self.ddp.device, non_blocking=True)

    def record(self, done: int, r: dict, first: bool, t_start: float, wall_before: float) -> None:
        """Count tokens and time (steady-state figures skip a process's first, warm-up/compile step); log a line."""
        tc, s = self.tc, self.stats
        s["tokens"] += tc.total_batch_size
        s["train_time"] += r["dt"]
        s["wall_time"] = wall_before + time.perf_counter() - t_start
        if not first:
            s["steady_tokens"] += tc.total_batch_size
            s["steady_time"] += r["dt"]
        tps = tc.total_batch_size / r["dt"]
        if done % tc.log_interval == 0 or done == tc.max_steps:
            m = self.mfu_or_none(tps)
            self.log.write(step=done, loss=r["loss"], lr=r["lr"], grad_norm=r["grad_norm"], dt_ms=r["dt"] * 1000,
                           tokens=s["tokens"], tokens_per_s=tps, mfu=m, epoch=self.train_loader.epoch)
            print0(f"step {done:5d} | loss {r['loss']:.6f} | lr {r['lr']:.2e} | norm {r['grad_norm']:.3f} | "
                   f"{r['dt'] * 1000:.0f} ms | {tps:.0f} tok/s" + (f" | mfu {m:.1%}" if m is not None else ""))

    def mfu_or_none(self, tokens_per_s: float) -> float | None:
        """MFU against the peak; a measured CPU peak below what a step achieved (a busy machine during the
        measurement) is not a peak: then the MFU is unknown (None), never above 100 %."""
        m = mfu(self.flops_per_token, tokens_per_s / self.ddp.world_size, self.peak)
        if m is not None and m > 1.0:
            print0(f"note: measured peak {self.peak / 1e12:.3f} TFLOP/s is below the achieved FLOP/s; MFU unknown")
            self.peak = None
            return None
        return m

    @torch.no_grad()
    def evaluate(self, step: int, last: bool = False) -> None:
        """Val loss, HellaSwag (at its interval and at the end) and samples, logged at ``step`` (steps done)."""
        tc, ddp = self.tc, self.ddp
        self.raw_model.eval()
        parts = []
        if self.n_val:
            val = self.val_loss()
            self.log.write(step=step, val_loss=val)
            parts.append(f"val_loss {val:.4f}")
        if self.hs_examples and (last or (tc.hellaswag_interval > 0 and step % tc.hellaswag_interval == 0)):
            hs = self.hellaswag()
            self.log.write(step=step, **hs)
            parts.append(f"hellaswag acc_norm {hs['hellaswag_acc_norm']:.4f}")
        if ddp.master and tc.sample_tokens > 0:
            for text in self.samples():
                self.log.write(step=step, sample=text)
                print0(f"sample @ {step}: {text!r}")
        self.raw_model.train()
        print0(f"eval @ {step}: " + ", ".join(parts))
        self.plot()
        barrier(ddp)  # the master sampled alone: start the next timed step together

    def val_loss(self) -> float:
        loader, total = self.val_loader, torch.zeros((), device=self.ddp.device)
        loader.reset()  # the same val windows at every evaluation
        for _ in range(self.n_val):
            x, y = loader.next_batch()  # (B, T)
            with self.autocast():
                total += self.raw_model(x.to(self.ddp.device), y.to(self.ddp.device))[1].float()
        return (all_reduce_sum(total, self.ddp) / (self.n_val * self.ddp.world_size)).item()

    def hellaswag(self) -> dict:
        """acc and acc_norm (per token as build-nanogpt; per character as lm-eval), split over ranks and summed."""
        ddp = self.ddp
        r = hellaswag.evaluate(lambda x: self.raw_model(x)[0], self.tok, self.hs_examples, self.mc.block_size,
                               ddp.device, ddp.rank, ddp.world_size, self.autocast)
        keys = ("n", "correct", "correct_norm", "correct_norm_char")
        n, acc, norm, norm_char = all_reduce_sum(torch.tensor([r[k] for k in keys], device=ddp.device), ddp).tolist()
        return {"hellaswag_acc_norm": norm / max(1, n), "hellaswag_acc": acc / max(1, n),
                "hellaswag_acc_norm_char": norm_char / max(1, n), "hellaswag_n": int(n)}

    def samples(self) -> list[str]:
        tc, tok = self.tc, self.tok
        prompt = tok.encode(tc.sample_prompt) if tc.sample_prompt else [tok.eot_id or 0]
        idx = torch.tensor([prompt] * tc.num_samples, dtype=torch.long, device=self.ddp.device)  # (n, P)
        gen = torch.Generator(device=self.ddp.device).manual_seed(tc.seed)  # own generator: training RNG untouched
        with self.autocast():  # the run's precision (bf16 on CUDA), as its evaluations
            out = self.raw_model.generate(idx, tc.sample_tokens, temperature=tc.sample_temperature,
                                          top_k=tc.sample_top_k or None, generator=gen)  # (n, P + sample_tokens)
        return [tok.decode(row.tolist()) for row in out]

    def plot(self) -> None:
        if self.ddp.master:
            plots.plot_curves({self.out.name: self.log.records}, self.out / "loss.png", f"pretraining ({self.preset})")

    def save(self, step: int) -> None:
        """Checkpoint after ``step`` steps (rank 0 writes; the others wait for its outcome)."""
        state = {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": step,
                 "data_position": self.train_loader.state_dict(), "rng": rng_state(), "model_config": asdict(self.mc),
                 "train_config": asdict(self.tc), "preset": self.preset, "world_size": self.ddp.world_size,
                 "tokenizer": self.meta["tokenizer"], "data": data_identity(self.meta), "stats": dict(self.stats)}
        run_or_stop_all(lambda: save_checkpoint(self.out, state, KIND, keep=self.tc.keep_checkpoints), self.ddp,
                        USER_ERRORS, rank0_only=True)

    def evaluate_and_save_due(self, done: int) -> tuple[bool, bool]:
        """(evaluate now, checkpoint now) after ``done`` steps: at the intervals and always at the end."""
        tc, last = self.tc, done == self.tc.max_steps
        evaluate = last or (tc.eval_interval > 0 and done % tc.eval_interval == 0)
        every = tc.ckpt_interval or tc.eval_interval  # ckpt_interval 0: checkpoint at each evaluation
        return evaluate, last or (every > 0 and done % every == 0)

    def finish(self) -> dict:
        """HF export (model + tokenizer files) and summary.json, by the master (schema: README.md, "Outputs")."""
        if not self.ddp.master:
            return {}
        from export import save_hf_with_tokenizer

        hf_dir = save_hf_with_tokenizer(self.raw_model, self.out / "hf", self.out / "tokenizer", self.tok.eot_id)
        summary = summarize(self, hf_dir)
        atomic_write_json(self.out / "summary.json", summary)
        self.plot()
        self.log.close()
        print0(f"done: val loss {summary['final_val_loss']}, HellaSwag {summary['hellaswag_acc_norm']}, "
               f"{summary['tokens_per_s']:.0f} tok/s -> {self.out}")
        return summary


def data_identity(meta: dict) -> dict:
    """What makes a data set the same one for --resume: its sources and its train split's size and shards."""
    return {"sources": meta.get("sources"), "train_tokens": meta["train"]["tokens"],
            "train_shards": meta["train"]["shards"]}


def summarize(trainer: Trainer, hf_dir: Path) -> dict:
    """summary.json: final figures; tokens/s and MFU are steady-state (without a process's first step)."""
    last = {}
    for r in trainer.log.records:
        last.update({k: v for k, v in r.items() if k in ("val_loss", "loss") or k.startswith("hellaswag_")})
    s = trainer.stats
    if s["steady_time"] > 0:
        steady = s["steady_tokens"] / s["steady_time"]
    else:  # a run of one step per process has no steady state: all its time counts
        steady = s["tokens"] / max(s["train_time"], 1e-9)
    return {
        "preset": trainer.preset, "steps": trainer.tc.max_steps, "tokens": s["tokens"],
        "final_train_loss": last.get("loss"), "final_val_loss": last.get("val_loss"),
        "hellaswag_acc_norm": last.get("hellaswag_acc_norm"),
        "hellaswag_acc_norm_char": last.get("hellaswag_acc_norm_char"), "hellaswag_n": last.get("hellaswag_n"),
        "wall_time_s": s["wall_time"], "train_time_s": s["train_time"],
        "tokens_per_s": steady, "mfu": trainer.mfu_or_none(steady), "dtype": str(trainer.dtype).removeprefix("torch."),
        "params": trainer.raw_model.num_params(), "world_size": trainer.ddp.world_size,
        "device": str(trainer.ddp.device), "data": str(trainer.data), "model_config": asdict(trainer.mc),
        "train_config": asdict(trainer.tc), "hf_dir": str(hf_dir),
    }


# ---------------------------------------------------------------------------- the story
def setup(preset: str, mc: GPTConfig, tc: TrainConfig, ddp: DDP, given: set[str]) -> tuple[Trainer, str | None]:
    """Check everything before the work (data, run folder, settings, resume decision); build the trainer. A run
    refused here leaves no folder behind."""
    data = run_or_stop_all(lambda: data_folder(preset, tc, ddp.enabled), ddp, USER_ERRORS)
    meta, tok, mc = run_or_stop_all(lambda: load_data(data, mc, "vocab_size" in given), ddp, USER_ERRORS)
    folder = run_or_stop_all(lambda: claim(tc, data), ddp, USER_ERRORS, rank0_only=True)  # creates nothing yet
    # fit_micro_batch may halve a preset's micro-batch, never one the user chose
    trainer = run_or_stop_all(lambda: Trainer(preset, mc, tc, ddp, data, meta, tok, "batch_size" in given), ddp,
                              USER_ERRORS)
    try:
        run_or_stop_all(lambda: folder.create(), ddp, USER_ERRORS, rank0_only=True)
        check_shared(trainer.out, ddp)
        resume_from = run_or_stop_all(lambda: plan_resume(folder, tc), ddp, USER_ERRORS, rank0_only=True)
        return trainer, from_rank0(resume_from, ddp)
    except USER_ERRORS:
        if folder:
            folder.abandon()  # only what create() made, and only if it is still empty
        raise


def train(preset: str, mc: GPTConfig, tc: TrainConfig, ddp: DDP, given: set[str] = frozenset()) -> dict:
    # set up: data, run folder, model, optimizer, loaders (all checked before the first step)
    trainer, resume_from = setup(preset, mc, tc, ddp, given)
    # resume: model, optimizer, data position, RNG and counters of the latest checkpoint
    if resume_from:
        trainer.resume(resume_from)
    trainer.open_outputs()
    # loop: evaluate at 0, then step / log / evaluate / checkpoint
    t_start, wall_before = time.perf_counter(), trainer.stats["wall_time"]  # wall time includes evaluations
    if trainer.start == 0 and tc.eval_interval > 0:
        trainer.evaluate(0)
    for step in range(trainer.start, tc.max_steps):
        numbers = trainer.train_step(step)
        done = step + 1  # every record's "step" is the number of optimizer steps done
        trainer.record(done, numbers, step == trainer.start, t_start, wall_before)
        evaluate_now, checkpoint_now = trainer.evaluate_and_save_due(done)
        if evaluate_now:
            trainer.evaluate(done, last=done == tc.max_steps)
        if checkpoint_now:
            trainer.stats["wall_time"] = wall_before + time.perf_counter() - t_start
            trainer.save(done)
    # finish: HF export and summary
    trainer.stats["wall_time"] = wall_before + time.perf_counter() - t_start
    return trainer.finish()


def main(argv=None):
    preset, mc, tc, given = parse_args(argv, __doc__)
    # SIGTERM (torchrun stopping its workers, a scheduler's preemption) unwinds like an error: the writes in
    # progress remove their temp files (fileio) instead of leaving them behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ddp = None
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # before the process group: no rank waits on a preparation
            data_folder(preset, tc, distributed=True)
        ddp = setup_ddp(tc.device, timeout_s=tc.ddp_timeout)
        return train(preset, mc, tc, ddp, given)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (RuntimeError, dist.DistError) as e:
        if ddp is None or not ddp.enabled or not is_collective_failure(e):
            raise
        print(f"error: rank {ddp.rank}: a collective failed ({str(e).splitlines()[0][:160]}): another rank stopped "
              f"or died, or waited longer than --ddp_timeout {tc.ddp_timeout:g} s", file=sys.stderr)
        raise SystemExit(3) from None
    finally:
        cleanup_ddp()


def is_collective_failure(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, dist.DistError) or any(w in text for w in ("timed out", "timeout", "connection", "gloo",
                                                                      "nccl", "peer"))


if __name__ == "__main__":
    main()
