"""Benchmark our LoRA against PEFT's on the same model and batch, and merged-LoRA inference against the base model.

    python finetune/bench.py                      # GPT-2 124M shape (random weights), batch 4 x 256, r=8, CPU
    python finetune/bench.py --layers 2 --dim 128 --steps 2   # quick look

Writes --out (default finetune/out/bench.json): train step time (median of interleaved steps, same weights and
batch), train peak memory (peak RSS in a fresh process each) ours / PEFT, merged inference ours / base.
Targets: step <= 1.0x PEFT, peak memory <= 1.0x PEFT, merged inference <= 1.02x base.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import lora
from fileio import atomic_write_json

HERE = Path(__file__).resolve().parent


def build_base(args):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=args.layers, n_embd=args.dim, n_head=args.heads, vocab_size=50257,
                                      n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def with_lora(base, which: str, r: int):
    """Our LoRA or PEFT's on (a copy of) base, same targets, same alpha 32."""
    m = copy.deepcopy(base) if which != "base" else base
    if which == "ours":
        lora.convert_linear_layer_to_lora(m, "h.", r, 32.0)
        lora.only_optimize_lora_parameters(m)
    elif which == "peft":
        from peft import LoraConfig, get_peft_model
        m = get_peft_model(m, LoraConfig(r=r, lora_alpha=32, target_modules=["c_attn", "c_proj", "c_fc"],
                                         fan_in_fan_out=True, lora_dropout=0.0))
    return m.train()


def train_step(model, opt, x) -> float:
    t = time.perf_counter()
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def optimizer(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))


def make_batch(args):
    return torch.randint(0, 50257, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))


def proc_mb(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def memory_worker(args) -> dict:
    model = with_lora(build_base(args), args.worker, args.rank)
    opt, x, before = optimizer(model), make_batch(args), proc_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM (peak RSS) to the current RSS
    for _ in range(args.mem_steps):
        train_step(model, opt, x)
    peak = proc_mb("VmHWM")
    return {"rss_before_mb": before, "peak_rss_mb": peak, "train_peak_mb": peak - before}


def measure_memory(args, which: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", which] + [
        f"--{k}={getattr(args, k)}" for k in ("layers", "dim", "heads", "batch", "seq", "rank", "mem_steps")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: memory worker '{which}' failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def interleaved(fns: dict, n: int, warmup: int) -> dict[str, float]:
    """Median seconds of each fn, in alternating order so machine load hits all alike."""
    times, names = {k: [] for k in fns}, list(fns)
    for i in range(warmup + n):
        for k in (names if i % 2 == 0 else names[::-1]):
            t = fns[k]()
            if i >= warmup:
                times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("layers", 12), ("dim", 768), ("heads", 12), ("batch", 4), ("seq", 256), ("rank", 8),
                          ("steps", 5), ("warmup", 1), ("mem_steps", 2), ("infer_steps", 10)):
        p.add_argument(f"--{name}", type=int, default=default)  # steps: timed training steps per variant
    p.add_argument("--out", type=Path, default=HERE / "out" / "bench.json")
    p.add_argument("--worker", choices=["ours", "peft"], default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def bench_train(args, base, x, res: dict) -> None:
    """1. training step time, interleaved in one process; 2. peak memory, one fresh process per variant."""
    models = {k: with_lora(base, k, args.rank) for k in ("ours", "peft")}
    opts = {k: optimizer(m) for k, m in models.items()}
    t = interleaved({k: (lambda k=k: train_step(models[k], opts[k], x)) for k in models}, args.steps, args.warmup)
    res.update(step_seconds=t, step_ratio=t["ours"] / t["peft"])
    print(f"[bench] train step: ours {t['ours']:.3f} s, PEFT {t['peft']:.3f} s -> ratio {res['step_ratio']:.3f}",
          flush=True)
    del models, opts
    mem = {k: measure_memory(args, k) for k in ("ours", "peft")}
    res.update(memory_mb=mem, memory_ratio=mem["ours"]["train_peak_mb"] / mem["peft"]["train_peak_mb"],
               peak_rss_ratio=mem["ours"]["peak_rss_mb"] / mem["peft"]["peak_rss_mb"])
    print(f"[bench] train peak memory above the built model: ours {mem['ours']['train_peak_mb']:.0f} MB, "
          f"PEFT {mem['peft']['train_peak_mb']:.0f} MB -> ratio {res['memory_ratio']:.3f} "
          f"(whole-process peak RSS ratio {res['peak_rss_ratio']:.3f})", flush=True)


def bench_inference(args, base, x, res: dict) -> None:
    """3. merged inference against the base model (the adapter trained a little so the merge changes weights)."""
    ours = with_lora(base, "ours", args.rank)
    train_step(ours, optimizer(ours), x)
    ours.eval()
    lora.merge_lora(ours)
    unloaded = lora.merge_and_unload(copy.deepcopy(ours))
    base.eval()

    @torch.inference_mode()
    def infer(m) -> float:
        t0 = time.perf_counter()
        m(input_ids=x, use_cache=False)
        return time.perf_counter() - t0

    models = {"base": base, "merged": ours, "unloaded": unloaded}
    t = interleaved({k: (lambda m=m: infer(m)) for k, m in models.items()}, args.infer_steps, 1)
    res.update(inference_seconds=t, merged_inference_ratio=t["merged"] / t["base"],
               unloaded_inference_ratio=t["unloaded"] / t["base"])
    print(f"[bench] inference: base {t['base']:.3f} s, merged LoRA {t['merged']:.3f} s -> ratio "
          f"{res['merged_inference_ratio']:.3f}; merge_and_unload {t['unloaded']:.3f} s -> ratio "
          f"{res['unloaded_inference_ratio']:.3f}", flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(memory_worker(args)))
        return {}
    shape = f"GPT-2 {args.layers}L/{args.dim}d, batch {args.batch}x{args.seq}, r={args.rank}, " \
            f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"[bench] {shape}", flush=True)
    base, x = build_base(args), make_batch(args)
    res = {"shape": shape, "config": {k: v for k, v in vars(args).items() if k not in ("out", "worker")}}
    bench_train(args, base, x, res)
    bench_inference(args, base, x, res)
    res["targets_met"] = verdict = {"step <= 1.0x PEFT": res["step_ratio"] <= 1.0,
                                    "memory <= 1.0x PEFT": res["memory_ratio"] <= 1.0,
                                    "merged inference <= 1.02x base": res["merged_inference_ratio"] <= 1.02}
    print("[bench] targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdict.items()))
    atomic_write_json(args.out, res)
    print(f"[bench] -> {args.out}")
    return res


if __name__ == "__main__":
    main()
