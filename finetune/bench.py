"""Our LoRA against PEFT's (step time: median of interleaved steps; peak memory: a fresh process each) on the same
model and batch, and merged-LoRA inference against the base model. Targets: step <= 1.0x PEFT, peak memory <= 1.0x
PEFT, merged inference <= 1.02x base.

    python finetune/bench.py                      # GPT-2 124M shape (random weights), batch 4 x 256, r=8, CPU
    python finetune/bench.py --layers 2 --dim 128 --steps 2   # quick look
"""
import argparse
import copy
import multiprocessing
import os
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

import lora
from fileio import atomic_write_json

HERE = Path(__file__).resolve().parent


def build(args):
    """The base model (GPT-2's shape, random weights, no dropout) and a random batch (B, T)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_layer=args.layers, n_embd=args.dim, n_head=args.heads, vocab_size=50257,
                                      n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    return base, torch.randint(0, 50257, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))


def with_lora(base, which: str, r: int):
    """Our LoRA or PEFT's on (a copy of) base, same targets, same alpha 32."""
    m = copy.deepcopy(base)
    if which == "ours":
        lora.convert_linear_layer_to_lora(m, "h.", r, 32.0)
        lora.only_optimize_lora_parameters(m)
    elif which == "peft":
        from peft import LoraConfig, get_peft_model
        m = get_peft_model(m, LoraConfig(r=r, lora_alpha=32, target_modules=["c_attn", "c_proj", "c_fc"],
                                         fan_in_fan_out=True, lora_dropout=0.0))
    return m.train()


def trainer(model, x):
    """A function that runs one training step (forward, backward, AdamW) of ``model`` on ``x``."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))

    def step():
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def memory_worker(args, which: str) -> dict:
    """Run in a fresh process: peak RSS (Linux /proc) of a few training steps, and above the built model."""
    def mb(field: str) -> float:
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())[1]) / 1024
    base, x = build(args)
    step, before = trainer(with_lora(base, which, args.rank), x), mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM (peak RSS) to the current RSS
    for _ in range(args.mem_steps):
        step()
    return {"rss_before_mb": before, "peak_rss_mb": mb("VmHWM"), "train_peak_mb": mb("VmHWM") - before}


def interleaved(fns: dict, n: int, warmup: int) -> dict[str, float]:
    """Median seconds of each fn, in alternating order so machine load hits all alike."""
    times = {k: [] for k in fns}
    for i in range(warmup + n):
        for k in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> str:
    """CPU model, the kernels' ISA, threads and load: what a CPU timing means nothing without."""
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return (f"{cpu[1] if cpu else 'unknown CPU'}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("layers", 12), ("dim", 768), ("heads", 12), ("batch", 4), ("seq", 256), ("rank", 8),
                          ("steps", 5), ("warmup", 1), ("mem_steps", 2), ("infer_steps", 10)):
        p.add_argument(f"--{name}", type=int, default=default)  # steps: timed training steps per variant
    p.add_argument("--out", type=Path, default=HERE / "out" / "bench.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    shape = f"GPT-2 {args.layers}L/{args.dim}d, batch {args.batch}x{args.seq}, r={args.rank}, torch {torch.__version__}"
    print(f"[bench] {shape}\n[bench] machine: {machine()}", flush=True)
    base, x = build(args)
    res = {"shape": shape, "machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "out"}}
    # 1. training step time, interleaved in one process
    t = interleaved({k: trainer(with_lora(base, k, args.rank), x) for k in ("ours", "peft")}, args.steps, args.warmup)
    res.update(step_seconds=t, step_ratio=t["ours"] / t["peft"])
    print(f"[bench] train step: ours {t['ours']:.3f} s, PEFT {t['peft']:.3f} s -> ratio {res['step_ratio']:.3f}",
          flush=True)
    # 2. training peak memory, one fresh process per variant
    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:  # fresh each
        mem = {k: pool.submit(memory_worker, args, k).result() for k in ("ours", "peft")}
    res.update(memory_mb=mem, memory_ratio=mem["ours"]["train_peak_mb"] / mem["peft"]["train_peak_mb"],
               peak_rss_ratio=mem["ours"]["peak_rss_mb"] / mem["peft"]["peak_rss_mb"])
    print(f"[bench] train peak memory above the built model: ours {mem['ours']['train_peak_mb']:.0f} MB, "
          f"PEFT {mem['peft']['train_peak_mb']:.0f} MB -> ratio {res['memory_ratio']:.3f} "
          f"(whole-process peak RSS ratio {res['peak_rss_ratio']:.3f})", flush=True)
    # 3. merged inference against the base model (the adapter trained a little so the merge changes weights)
    ours = with_lora(base, "ours", args.rank)
    trainer(ours, x)()
    lora.merge_lora(ours.eval())
    models = {"base": base.eval(), "merged": ours, "unloaded": lora.merge_and_unload(copy.deepcopy(ours))}
    with torch.inference_mode():
        t = interleaved({k: (lambda m=m: m(input_ids=x, use_cache=False)) for k, m in models.items()},
                        args.infer_steps, 1)
    res.update(inference_seconds=t, merged_inference_ratio=t["merged"] / t["base"],
               unloaded_inference_ratio=t["unloaded"] / t["base"])
    print(f"[bench] inference: base {t['base']:.3f} s, merged LoRA {t['merged']:.3f} s -> ratio "
          f"{res['merged_inference_ratio']:.3f}; merge_and_unload {t['unloaded']:.3f} s -> ratio "
          f"{res['unloaded_inference_ratio']:.3f}", flush=True)
    res["targets_met"] = verdict = {"step <= 1.0x PEFT": res["step_ratio"] <= 1.0,
                                    "memory <= 1.0x PEFT": res["memory_ratio"] <= 1.0,
                                    "merged inference <= 1.02x base": res["merged_inference_ratio"] <= 1.02}
    print("[bench] targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdict.items()))
    atomic_write_json(args.out, res)
    print(f"[bench] -> {args.out}")
    return res


if __name__ == "__main__":
    main()
