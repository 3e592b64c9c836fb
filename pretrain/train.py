"""GPT-2 pretraining, nanoGPT / build-nanogpt style, on one CPU, one GPU or many (torchrun, one or more nodes).

    python pretrain/train.py                                   # preset tiny-cpu on CPU (gpt2-124m on a GPU)
    python pretrain/train.py --preset tiny-cpu --data DIR --out_dir OUT --max_steps 100
    torchrun --nproc_per_node=8 pretrain/train.py --preset gpt2-124m     # build-nanogpt's run, FineWeb-Edu 10B
    python pretrain/train.py --out_dir OUT --resume            # continue exactly where OUT's latest checkpoint stopped
    python pretrain/train.py --preset gpt2-124m --help         # every flag with the value this preset uses

Top to bottom: settings (config.py), data (prepare.py's shards and loaders), model (modeling_gpt2.py), the training
loop, evaluation, checkpoints (checkpoint.py), the final export. World size 1 takes the same path as DDP (ddp.py).
Outputs in --out_dir and the log.jsonl / summary.json / checkpoint schemas: README.md, "Outputs".
"""
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import torch

import hellaswag
from checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from config import (CKPT_FORMAT, USER_ERRORS, ConfigError, TrainConfig, check_resume, check_shared, claim_run_folder,
                    data_folder, fit_micro_batch, model_vocab, parse_args, plan_resume)
from ddp import all_reduce_sum, barrier, cleanup_ddp, fail_together, from_rank0, print0, setup_ddp
from fileio import atomic_write_json
from modeling_gpt2 import GPT, autocast_for, compute_dtype, describe_peak, mfu, peak_flops
from prepare import ShardLoader, check_data, data_identity, read_meta
from runlog import RunLog, plot_losses


def get_lr(step: int, tc: TrainConfig) -> float:
    """build-nanogpt's schedule, as nanoGPT's get_lr."""
    min_lr = tc.lr * tc.min_lr_ratio
    if step < tc.warmup_steps:  # 1) linear warmup ((step+1): the first step already has a non-zero lr)
        return tc.lr * (step + 1) / tc.warmup_steps
    if step >= tc.max_steps:  # 2) after max_steps (a run extended by --resume with a larger --max_steps): min_lr
        return min_lr
    ratio = (step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps)  # 3) cosine decay down to min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (tc.lr - min_lr)


# ---------------------------------------------------------------------------- data, model, optimizer (all checked)
def build(preset, mc, tc: TrainConfig, ddp, data: Path, meta: dict, tok, batch_typed: bool) -> SimpleNamespace:
    """The run: model, optimizer, loaders and counters. fit_micro_batch may halve a preset's micro-batch, never one
    the user typed."""
    B, accum, note = fit_micro_batch(tc.total_batch_size, tc.batch_size, tc.seq_len, ddp.world_size, batch_typed)
    if note:
        print0(note)
    tc = replace(tc, batch_size=B, total_batch_size=tc.total_batch_size or B * tc.seq_len * ddp.world_size)
    torch.manual_seed(tc.seed)  # same seed on every rank: identical initial weights (DDP also broadcasts them)
    model = GPT(mc).to(ddp.device)
    run = SimpleNamespace(preset=preset, mc=mc, tc=tc, ddp=ddp, data=data, meta=meta, tok=tok, out=Path(tc.out_dir),
                          raw_model=model, accum=accum, start=0, identity=data_identity(data, meta),
                          dtype=compute_dtype(tc.dtype, ddp.device), autocast=autocast_for(tc.dtype, ddp.device))
    run.optimizer = model.configure_optimizers(tc.weight_decay, tc.lr, device_type=ddp.device.type,
                                               optimizer=tc.optimizer)
    run.stats = dict.fromkeys(("tokens", "train_time", "wall_time", "steady_tokens", "steady_time"), 0)
    hs_data = hellaswag.find_data(tc.data_dir) if tc.hellaswag_limit != 0 else None  # limit 0: no HellaSwag
    run.hs_examples = hellaswag.load_examples(hs_data, tc.hellaswag_limit) if hs_data else []
    for split in ("train", "val") if tc.val_steps > 0 else ("train",):
        # validation reads its split in order: the same windows at every evaluation
        order = tc.data_order if split == "train" else "sequential"
        loader = ShardLoader(data, split, B, tc.seq_len, ddp.rank, ddp.world_size, order, tc.seed, accum)
        if loader.skipped:
            print0(f"note: skipping {split} shard(s) {loader.skipped}: shorter than one step")
        setattr(run, f"{split}_loader", loader)
    # val_steps batches of total_batch_size tokens: the same windows for any world size (at most one pass)
    run.n_val = min(tc.val_steps * accum, run.val_loader.batches_per_epoch()) if tc.val_steps > 0 else 0
    return run


def setup(preset, mc, tc: TrainConfig, ddp, typed: set[str]) -> tuple[SimpleNamespace, str | None]:
    """Data, run folder, model, resume decision: every check before any work (a refused run leaves no folder)."""
    data = fail_together(lambda: data_folder(preset, tc, ddp.enabled), ddp, USER_ERRORS)
    meta = fail_together(lambda: read_meta(data), ddp, USER_ERRORS)
    if "vocab_size" not in typed:  # the model's vocab fitted to the data's
        mc = replace(mc, vocab_size=model_vocab(meta["vocab_size"]))
    tok = fail_together(lambda: check_data(data, meta, mc.vocab_size), ddp, USER_ERRORS)  # the data's tokenizer
    folder = fail_together(lambda: claim_run_folder(tc, data), ddp, USER_ERRORS, rank0_only=True)
    run = fail_together(lambda: build(preset, mc, tc, ddp, data, meta, tok, "batch_size" in typed), ddp, USER_ERRORS)
    try:
        fail_together(lambda: folder.create(), ddp, USER_ERRORS, rank0_only=True)
        check_shared(run.out, ddp)
        return run, from_rank0(fail_together(lambda: plan_resume(folder, tc), ddp, USER_ERRORS, rank0_only=True), ddp)
    except USER_ERRORS:
        if folder:
            folder.abandon()  # only what create() made, and only if it is still empty
        raise


def resume(run: SimpleNamespace, path: str) -> None:
    """Model, optimizer, data position, RNG and counters from the checkpoint, which must fit this run: the same
    model, tokenizer, batch shape, process count and optimizer, an end not passed, the same data (by content)
    unless --allow_new_data (then the new data is read from its start)."""
    ckpt, tc = load_checkpoint(path, CKPT_FORMAT), run.tc
    check_resume(ckpt, asdict(run.mc), tc, run.ddp.world_size, run.meta, run.data)
    run.identity = data_identity(run.data, run.meta, hashed=True)  # the shards' contents now, not their names
    new_data = ckpt["data"] != run.identity
    if new_data and not tc.allow_new_data:
        raise ConfigError(f"{path}: the checkpoint was trained on other data than {run.data} (sources or the train "
                          "shards' sha256 differ); pass --allow_new_data to continue on this data from its start")
    run.raw_model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if not new_data:
        run.train_loader.load_state_dict(ckpt["data_position"])
    set_rng_state(ckpt["rng"])
    run.start, run.stats = ckpt["step"], {**run.stats, **ckpt["stats"]}
    print0(f"resumed from {path} at step {run.start}")


# ---------------------------------------------------------------------------- the training loop
def train(preset, mc, tc: TrainConfig, ddp, typed: set[str] = frozenset()) -> dict:
    run, resume_from = setup(preset, mc, tc, ddp, typed)
    if resume_from:
        resume(run, resume_from)
    model, tc = open_outputs(run), run.tc
    t_start, wall_before = time.perf_counter(), run.stats["wall_time"]  # wall time includes evaluations
    if run.start == 0 and tc.eval_interval > 0:
        evaluate(run, 0)
    for step in range(run.start, tc.max_steps):
        t0 = time.perf_counter()
        loss_accum = torch.zeros((), device=ddp.device)
        for micro in range(run.accum):
            x, y = run.train_loader.next_batch()  # (B, T), y = x shifted by 1
            if ddp.device.type == "cuda":  # through pinned memory: an asynchronous copy, overlapping the GPU's work
                x, y = (t.pin_memory().to(ddp.device, non_blocking=True) for t in (x, y))
            # DDP: all-reduce the gradients on the last micro-step only
            with model.no_sync() if ddp.enabled and micro < run.accum - 1 else nullcontext():
                with run.autocast():
                    _, loss = model(x, y, return_logits=False)  # mean over B*T tokens (CPU fp32: fused head + loss)
                loss = loss / run.accum  # the step's mean, not a sum of micro-batch means
                loss_accum += loss.detach()
                loss.backward()
        loss_accum = all_reduce_sum(loss_accum, ddp) / ddp.world_size
        # grad_clip 0 = no clipping (the norm is still measured and logged)
        norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), tc.grad_clip or float("inf"))
        lr = get_lr(step, tc)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if ddp.device.type == "cuda":
            torch.cuda.synchronize()
        done, last = step + 1, step + 1 == tc.max_steps  # every record's "step" is the number of steps done
        record(run, done, loss_accum.item(), lr, norm.item(), time.perf_counter() - t0, first=step == run.start)
        if last or (tc.eval_interval > 0 and done % tc.eval_interval == 0):
            evaluate(run, done, last)
        run.stats["wall_time"] = wall_before + time.perf_counter() - t_start
        if last or (tc.ckpt_interval > 0 and done % tc.ckpt_interval == 0):
            save(run, done)
    return finish(run)


def open_outputs(run: SimpleNamespace):
    """The log (kept up to the resumed step), the run's tokenizer files, the MFU peak; the model to train
    (compiled and/or wrapped in DDP)."""
    tc, ddp = run.tc, run.ddp
    run.log = fail_together(lambda: RunLog(run.out / "log.jsonl", ddp.master, run.start or None, live=tc.live,
                                           run_name=run.out.name, config={**asdict(run.mc), **asdict(tc)}),
                            ddp, USER_ERRORS)
    fail_together(lambda: run.tok.write_files(run.out / "tokenizer", hf=True, model_max_length=run.mc.block_size),
                  ddp, USER_ERRORS, rank0_only=True)  # HF tokenizer files, for the export and other scripts
    model = torch.compile(run.raw_model) if tc.compile else run.raw_model
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[ddp.local_rank] if ddp.device.type == "cuda" else None)
    barrier(ddp)  # the CPU peak is measured: all ranks at once, so each measures its share of the cores
    run.peak, run.flops_per_token = peak_flops(ddp.device, run.dtype), run.raw_model.flops_per_token(tc.seq_len)
    print0(f"MFU peak: {describe_peak(ddp.device, run.dtype)}")
    print0(f"preset {run.preset}: {run.raw_model.num_params():,} params, vocab {run.mc.vocab_size}, "
           f"{ddp.world_size} process(es) on {ddp.device}, {tc.total_batch_size:,} tokens/step = {tc.batch_size} x "
           f"{tc.seq_len} x {ddp.world_size} x {run.accum} accum, steps {run.start}..{tc.max_steps}, data "
           f"{run.data} ({run.meta['train']['tokens']:,} train tokens)")
    return model


def record(run: SimpleNamespace, done: int, loss: float, lr: float, norm: float, dt: float, first: bool) -> None:
    """Count tokens and time (steady-state figures leave out a process's first step: warm-up, compilation); log."""
    tc, s = run.tc, run.stats
    s["tokens"], s["train_time"] = s["tokens"] + tc.total_batch_size, s["train_time"] + dt
    if not first:
        s["steady_tokens"], s["steady_time"] = s["steady_tokens"] + tc.total_batch_size, s["steady_time"] + dt
    if done % tc.log_interval == 0 or done == tc.max_steps:
        tps, m = tc.total_batch_size / dt, mfu_or_none(run, tc.total_batch_size / dt)
        run.log.write(step=done, loss=loss, lr=lr, grad_norm=norm, dt_ms=dt * 1000, tokens=s["tokens"],
                      tokens_per_s=tps, mfu=m, epoch=run.train_loader.epoch)
        print0(f"step {done:5d} | loss {loss:.6f} | lr {lr:.2e} | norm {norm:.3f} | {dt * 1000:.0f} ms | "
               f"{tps:.0f} tok/s" + (f" | mfu {m:.1%}" if m is not None else ""))


def mfu_or_none(run, tokens_per_s: float) -> float | None:
    """MFU against the peak; a measured CPU peak below what a step achieved (a busy machine during the
    measurement) is not a peak: then the MFU is unknown (None) from then on, never above 100 %."""
    m = mfu(run.flops_per_token, tokens_per_s / run.ddp.world_size, run.peak)
    if m is not None and m > 1.0:
        print0(f"note: measured peak {run.peak / 1e12:.3f} TFLOP/s is below the achieved FLOP/s; MFU unknown")
        run.peak = m = None
    return m


# ---------------------------------------------------------------------------- evaluation, checkpoint, save
@torch.no_grad()
def evaluate(run: SimpleNamespace, step: int, last: bool = False) -> None:
    """Val loss (split over the ranks), HellaSwag (at its interval and at the end) and samples, logged at ``step``."""
    tc, ddp, model, parts = run.tc, run.ddp, run.raw_model, []
    model.eval()
    if run.n_val:
        run.val_loader.reset()  # the same val windows at every evaluation
        total = torch.zeros((), device=ddp.device)
        for _ in range(run.n_val):
            x, y = (t.to(ddp.device) for t in run.val_loader.next_batch())  # (B, T)
            with run.autocast():
                total += model(x, y)[1].float()
        val = (all_reduce_sum(total, ddp) / (run.n_val * ddp.world_size)).item()
        run.log.write(step=step, val_loss=val)
        parts.append(f"val_loss {val:.4f}")
    if run.hs_examples and (last or (tc.hellaswag_interval > 0 and step % tc.hellaswag_interval == 0)):
        # acc and acc_norm per token (build-nanogpt) and per character (lm-eval), examples split over the ranks
        r = hellaswag.evaluate(lambda x: model(x)[0], run.tok, run.hs_examples, run.mc.block_size, ddp.device,
                               ddp.rank, ddp.world_size, run.autocast)
        keys = ("n", "correct", "correct_norm", "correct_norm_char")
        n, acc, norm, char = all_reduce_sum(torch.tensor([r[k] for k in keys], device=ddp.device), ddp).tolist()
        run.log.write(step=step, hellaswag_acc_norm=norm / max(1, n), hellaswag_acc=acc / max(1, n),
                      hellaswag_acc_norm_char=char / max(1, n), hellaswag_n=int(n))
        parts.append(f"hellaswag acc_norm {norm / max(1, n):.4f}")
    if ddp.master and tc.sample_tokens > 0:
        prompt = run.tok.encode(tc.sample_prompt) if tc.sample_prompt else [run.tok.eot_id or 0]
        idx = torch.tensor([prompt] * tc.num_samples, dtype=torch.long, device=ddp.device)  # (n, P)
        gen = torch.Generator(device=ddp.device).manual_seed(tc.seed)  # own generator: training RNG untouched
        with run.autocast():  # the run's precision (bf16 on CUDA), as its evaluations
            out = model.generate(idx, tc.sample_tokens, temperature=tc.sample_temperature,
                                 top_k=tc.sample_top_k or None, generator=gen)  # (n, P + sample_tokens)
        for row in out:
            run.log.write(step=step, sample=run.tok.decode(row.tolist()))
            print0(f"sample @ {step}: {run.tok.decode(row.tolist())!r}")
    model.train()
    print0(f"eval @ {step}: " + ", ".join(parts))
    plot(run)
    barrier(ddp)  # the master sampled alone: start the next timed step together


def plot(run: SimpleNamespace) -> None:
    if run.ddp.master:
        plot_losses({run.out.name: run.log.records}, run.out / "loss.png", f"pretraining ({run.preset})",
                    ("loss", "val_loss", "hellaswag_acc_norm"))


def save(run: SimpleNamespace, step: int) -> None:
    """Checkpoint after ``step`` steps: rank 0 writes, the others wait for its outcome (schema: README.md)."""
    state = {"model": run.raw_model.state_dict(), "optimizer": run.optimizer.state_dict(), "step": step,
             "data_position": run.train_loader.state_dict(), "rng": rng_state(), "model_config": asdict(run.mc),
             "train_config": asdict(run.tc), "preset": run.preset, "world_size": run.ddp.world_size,
             "tokenizer": run.meta["tokenizer"], "data": run.identity, "stats": dict(run.stats)}
    fail_together(lambda: save_checkpoint(run.out, state, CKPT_FORMAT, keep=run.tc.keep_checkpoints), run.ddp,
                  USER_ERRORS, rank0_only=True)


def finish(run: SimpleNamespace) -> dict:
    """HF export (model + tokenizer files) and summary.json by the master; tokens/s and MFU are steady-state."""
    if not run.ddp.master:
        return {}
    hf_dir = run.raw_model.save_hf(run.out / "hf", eos_token_id=run.tok.eot_id,
                                   extra_files=sorted((run.out / "tokenizer").glob("[!.]*")))
    last, s = {}, run.stats
    for r in run.log.records:
        last.update({k: v for k, v in r.items() if k in ("val_loss", "loss") or k.startswith("hellaswag_")})
    # a run of one step per process has no steady state: then all its time counts
    steady = s["steady_tokens"] / s["steady_time"] if s["steady_time"] > 0 else s["tokens"] / max(s["train_time"], 1e-9)
    summary = {
        "preset": run.preset, "steps": run.tc.max_steps, "tokens": s["tokens"], "final_train_loss": last.get("loss"),
        "final_val_loss": last.get("val_loss"), "hellaswag_acc_norm": last.get("hellaswag_acc_norm"),
        "hellaswag_acc_norm_char": last.get("hellaswag_acc_norm_char"), "hellaswag_n": last.get("hellaswag_n"),
        "wall_time_s": s["wall_time"], "train_time_s": s["train_time"], "tokens_per_s": steady,
        "mfu": mfu_or_none(run, steady), "dtype": str(run.dtype).removeprefix("torch."),
        "params": run.raw_model.num_params(), "world_size": run.ddp.world_size, "device": str(run.ddp.device),
        "data": str(run.data), "model_config": asdict(run.mc), "train_config": asdict(run.tc), "hf_dir": str(hf_dir)}
    atomic_write_json(run.out / "summary.json", summary)
    plot(run)
    run.log.close()
    print0(f"done: val loss {summary['final_val_loss']}, HellaSwag {summary['hellaswag_acc_norm']}, "
           f"{steady:.0f} tok/s -> {run.out}")
    return summary


def main(argv=None):
    preset, mc, tc, typed = parse_args(argv, __doc__)
    # SIGTERM (torchrun stopping its workers, a preemption) unwinds like an error: writes in progress remove their
    # temp files. A collective that times out raises in torch; ddp.py says so in one line and torchrun ends the rest.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # before the process group: no rank waits on a preparation
            data_folder(preset, tc, distributed=True)
        summary = train(preset, mc, tc, setup_ddp(tc.device, timeout_s=tc.ddp_timeout), typed)
    except USER_ERRORS as e:
        cleanup_ddp()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    cleanup_ddp()
    return summary


if __name__ == "__main__":
    main()
