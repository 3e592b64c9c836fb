"""Training throughput (tokens/s) and MFU of our GPT against HF GPT2LMHeadModel at one config, on the same weights.

A step = forward + backward + AdamW on one (B, T) batch; the models alternate (load hits all alike), each figure is
the median after one untimed warm-up (torch.compile's compilation). MFU is against the peak of the run's dtype.

    python pretrain/bench.py                                  # CPU config: 6L/384d/T256/B8/V50304 fp32
    python pretrain/bench.py --n_layer 12 --n_head 12 --n_embd 768 --seq_len 1024 --batch_size 16 --dtype bfloat16
    python pretrain/bench.py --parts --n_layer 4 --n_head 3 --n_embd 96 --vocab_size 4096   # one step, part by part
"""
import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddp import device_problem
from fileio import atomic_write_json
from modeling_gpt2 import (GPT, GPTConfig, LinearCrossEntropy, cpuinfo, describe_peak, mfu, newton_schulz_dtype,
                           peak_flops)


def make_step(model, hf: bool, x, y, device, dtype):
    """A closure doing one full training step of `model` on the fixed batch (x, y), synchronised on CUDA."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(x, labels=x).loss if hf else model(x, y, return_logits=False)[1]
        loss.backward()  # outside autocast, as train.py: backward runs in the dtypes forward chose
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()  # kernels are asynchronous: the step ends when the GPU is done
    return step


def new_model(args) -> GPT:
    """Our GPT of the flags' shape, seeded: every bench starts from the same weights."""
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=args.seq_len, vocab_size=args.vocab_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd))


def model_steps(args, device, dtype) -> tuple[GPT, dict]:
    """(ours, {name: its training step}): ours, optionally HF's copy of its weights and a compiled copy of ours."""
    from transformers import GPT2LMHeadModel  # imported here: slow

    ours, models = new_model(args), {}
    if not args.no_hf:  # HF's GPT2LMHeadModel (SDPA attention) with our weights, before ours moves
        with tempfile.TemporaryDirectory() as d:
            ours.save_hf(d, eos_token_id=None)
            models["hf"] = GPT2LMHeadModel.from_pretrained(d, attn_implementation="sdpa").to(device).train()
    models["ours"] = ours.to(device).train()
    if args.compile:
        models["ours+compile"] = torch.compile(copy.deepcopy(ours))
    x = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), device=device)
    x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()  # (B, T) inputs and next-token targets
    return ours, {name: make_step(m, name == "hf", x, y, device, dtype) for name, m in models.items()}


def time_steps(steps: dict, n: int) -> dict[str, list[float]]:
    """One untimed warm-up step per model (compilation, allocator), then n timed rounds, models alternating."""
    times = {name: [] for name in steps}
    for r in range(n + 1):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
            if r == 0:
                print(f"warm-up {name}: {times[name].pop():.2f} s", flush=True)
    return times


def machine() -> str:
    """CPU model, the kernels' ISA, bf16 support, threads and load: what a CPU timing means nothing without."""
    bf16 = "native bf16" if newton_schulz_dtype("cpu") == torch.bfloat16 else "no native bf16"
    return (f"{cpuinfo('model name') or 'unknown CPU'}, {torch.backends.cpu.get_cpu_capability()}, {bf16}, "
            f"{torch.get_num_threads()} threads, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def part_steps(args) -> tuple[dict, dict]:
    """Closures for one CPU step and its parts, ours and the anchor (F.cross_entropy on whole logits, torch's Muon),
    and each part's model FLOPs (the optimizer's: Newton-Schulz matmuls only; AdamW's update is memory-bound)."""
    model = new_model(args)
    B, T, C, V = args.batch_size, args.seq_len, args.n_embd, args.vocab_size
    x = torch.randint(0, V, (B, T + 1))
    idx, y = x[:, :-1], x[:, 1:]
    opts = {name: model.configure_optimizers(0.1, 1e-3, optimizer=args.optimizer) for name in ("ours", "anchor")}
    if args.optimizer == "muon":  # torch's own: Newton-Schulz in bf16 whatever the CPU
        opts["anchor"].optimizers["muon"] = torch.optim.Muon(model.block_matrices(), lr=1e-3, weight_decay=0.1,
                                                              adjust_lr_fn="match_rms_adamw")
    h, W = torch.randn(B * T, C, requires_grad=True), model.lm_head.weight.detach().clone().requires_grad_()
    g = torch.randn(B, T, C)  # a stand-in for the head's gradient

    def blocks():
        z = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(T))  # (B, T, C)
        for block in model.transformer.h:
            z = block(z)
        model.transformer.ln_f(z).backward(g)

    def head(plain: bool):
        return lambda: (F.cross_entropy(h @ W.t(), y.reshape(-1)) if plain
                        else LinearCrossEntropy.apply(h, W, y.reshape(-1))).backward()

    def step(name: str):
        def run():
            model(idx, y, return_logits=name == "anchor")[1].backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=False)  # zeros kept: the optimizer parts step on them
        return run
    steps = {"blocks fwd+bwd": blocks, "head+loss ours": head(False), "head+loss anchor": head(True),
             "optimizer ours": opts["ours"].step, "optimizer anchor": opts["anchor"].step,
             "step ours": step("ours"), "step anchor": step("anchor")}  # blocks first: it gives every grad
    ns = sum(5 * (4 * min(p.shape) ** 2 * max(p.shape) + 2 * min(p.shape) ** 3) for p in model.block_matrices())
    ns = ns if args.optimizer == "muon" else 0
    flops = {"blocks": (model.flops_per_token(T) - 6 * C * V) * B * T, "head+loss": 6 * C * V * B * T,
             "optimizer": ns, "step": model.flops_per_token(T) * B * T + ns}
    return steps, flops


def report_parts(args) -> dict:
    """Time the parts (a warm-up each, then alternately; medians) and print ms and the fraction of the peak."""
    steps, flops = part_steps(args)
    times = time_steps(steps, args.steps)
    peak, where, ns = peak_flops("cpu"), machine(), str(newton_schulz_dtype("cpu")).removeprefix("torch.")
    print(f"machine: {where}; matmul peak {peak / 1e9:.0f} GFLOP/s\n{args.n_layer}L/{args.n_embd}d/{args.n_head}h "
          f"T={args.seq_len} B={args.batch_size} V={args.vocab_size} {args.optimizer}; Newton-Schulz in {ns} "
          "(anchor: bfloat16)")
    result = {"machine": where, "peak_flops": peak, "config": vars(args), "parts": {}}
    for name, ts in times.items():
        ms, f = statistics.median(ts) * 1e3, flops[name.split()[0]]
        part = result["parts"][name] = {"ms": ms, "peak_fraction": f / (ms / 1e3) / peak if f else None, "step_s": ts}
        if name.endswith("anchor"):  # ours was timed beside it
            part["ours_over_anchor"] = result["parts"][name.replace("anchor", "ours")]["ms"] / ms
        print(f"{name:>18}: {ms:8.1f} ms" + (f"  {part['peak_fraction']:6.1%} of peak" if f else "")
              + (f"  ours / anchor {part['ours_over_anchor']:.2f}x" if "ours_over_anchor" in part else ""))
    return result


def report(args, ours: GPT, times: dict, device, dtype) -> dict:
    """Print and return tokens/s (median step), MFU and the ratio to HF for each model."""
    tf32 = device.type == "cuda"  # bench enables TF32 on CUDA, as train.py
    peak, where = peak_flops(device, dtype, tf32), describe_peak(device, dtype, tf32)
    fpt, tokens = ours.flops_per_token(args.seq_len), args.batch_size * args.seq_len
    print(f"config: {args.n_layer}L/{args.n_embd}d/{args.n_head}h T={args.seq_len} B={args.batch_size} "
          f"V={args.vocab_size} {args.dtype} on {device}, {ours.num_params() / 1e6:.1f}M params\n"
          f"machine: {machine()}\npeak: {where}")
    result = {"config": vars(args), "params": ours.num_params(), "machine": machine(), "peak_flops": peak,
              "peak": where, "models": {}}
    for name, ts in times.items():  # hf first (model_steps): the anchor of the ratios, timed in this run
        tps = tokens / statistics.median(ts)
        m = mfu(fpt, tps, peak)
        result["models"][name] = {"tokens_per_s": tps, "mfu": m, "step_s": ts}
        print(f"{name:>13}: {tps:10.1f} tokens/s  MFU {'n/a' if m is None else f'{m:.1%}'}")
        if name != "hf" and "hf" in times:
            ratio = result["models"][name]["ratio_vs_hf"] = tps / result["models"]["hf"]["tokens_per_s"]
            print(f"ratio {name} / hf: {ratio:.2f}x")
    return result


def summarize_run(run_dir: Path, skip: int = 1) -> dict:
    """Steady-state figures of a finished train.py run: median tokens/s of its logged steps after the first `skip`
    (step 1 holds torch.compile's compilation), MFU against the peak of the run's own dtype and device."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "tokens_per_s" in r][skip:]
    if not steps:
        raise ValueError(f"{run_dir}/log.jsonl: no logged training step after the first {skip}")
    device, dtype = torch.device(summary["device"]), getattr(torch, summary["dtype"])
    tf32 = device.type == "cuda"  # train.py enables TF32 on CUDA
    with torch.device("meta"):  # the FLOP count needs the shapes only, not 124M parameters' memory
        model = GPT(GPTConfig(**summary["model_config"]))
    tps = statistics.median(r["tokens_per_s"] for r in steps)
    m = mfu(model.flops_per_token(summary["train_config"]["seq_len"]), tps / summary["world_size"],
            peak_flops(device, dtype, tf32))
    return {"run": str(run_dir), "steps": [steps[0]["step"], steps[-1]["step"]], "tokens_per_s": tps, "mfu": m,
            "peak": describe_peak(device, dtype, tf32), "dtype": summary["dtype"],
            "first_step_s": next(r for r in rows if "tokens_per_s" in r)["dt_ms"] / 1000}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = dict(n_layer=6, n_head=6, n_embd=384, vocab_size=50304, seq_len=256, batch_size=8)
    for name, default in sizes.items():
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model (after 1 warm-up step)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    p.add_argument("--no_hf", action="store_true", help="skip the HF model (e.g. on a GPU, to save time)")
    p.add_argument("--from_run", help="instead of timing: steady-state figures of this finished train.py run")
    p.add_argument("--parts", action="store_true", help="time one CPU step part by part, ours against the anchor")
    p.add_argument("--optimizer", default="muon", choices=["muon", "adamw"], help="the optimizer of --parts")
    p.add_argument("--peak", action="store_true", help="print which peak MFU is measured against, and stop")
    p.add_argument("--out", help="write the results to this JSON file")
    args = p.parse_args(argv)
    if min(getattr(args, name) for name in [*sizes, "steps"]) < 1:
        p.error("sizes and --steps must be >= 1")
    if not args.from_run and device_problem(args.device):
        p.error(device_problem(args.device))
    if args.parts and args.device != "cpu":
        p.error("--parts times the CPU step: use --device cpu")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.peak:
        for dtype, tf32 in ((torch.bfloat16, None), (torch.float32, True), (torch.float32, False)):
            print(describe_peak(args.device, dtype, tf32))
            if args.device == "cpu":
                break  # one measured figure, whatever the dtype
        return {}
    if args.parts:
        result = report_parts(args)
    elif args.from_run:
        result = summarize_run(Path(args.from_run))
        print(f"train.py steady state: {result['tokens_per_s']:,.0f} tokens/s, MFU "
              f"{'n/a' if result['mfu'] is None else format(result['mfu'], '.1%')} (median of steps "
              f"{result['steps'][0]}..{result['steps'][1]}; first step {result['first_step_s']:.1f} s); "
              f"peak: {result['peak']}")
    else:
        device, dtype = torch.device(args.device), getattr(torch, args.dtype)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        ours, steps = model_steps(args, device, dtype)
        result = report(args, ours, time_steps(steps, args.steps), device, dtype)
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
