"""Training throughput (tokens/s) and MFU of our GPT at a given config, side by side with HF GPT2LMHeadModel.

One "step" = forward + backward + AdamW update on a (B, T) batch, the same work as a train.py step without gradient
accumulation. Both models get the same weights, data and thread count, and are timed alternately (ours, HF, ours,
...) so that load from other processes hits both alike; the figure per model is the median step time of the timed
steps, after one untimed warm-up step per model (which holds torch.compile's compilation). MFU is against the peak
of the run's dtype (perf.py: bf16, or TF32 for float32 on CUDA; the measured fp32 matmul peak on CPU).

    python pretrain/bench.py                                  # CPU config: 6L/384d/T256/B8/V50304 fp32
    python pretrain/bench.py --compile                        # also torch.compile'd ours
    python pretrain/bench.py --n_layer 12 --n_head 12 --n_embd 768 --seq_len 1024 --batch_size 16 --dtype bfloat16
    python pretrain/bench.py --from_run RUN_DIR               # steady-state figures of a finished train.py run
Prints one line per model and the ratio ours / HF; --json FILE writes the figures (atomically).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from fileio import atomic_write_json
from modeling_gpt2 import GPT, GPTConfig
from ddp import device_problem
from perf import describe_peak, mfu, peak_flops


def hf_model(model: GPT):
    """A transformers GPT2LMHeadModel with our model's weights (dropout off, SDPA attention)."""
    import tempfile

    from transformers import GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as d:
        model.save_hf(d, eos_token_id=None)
        return GPT2LMHeadModel.from_pretrained(d, attn_implementation="sdpa")


def make_step(model, hf: bool, x, y, device, dtype):
    """A closure doing one full training step of `model` on the fixed batch (x, y), synchronised on CUDA."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext())
    fused = device.type == "cpu" and dtype == torch.float32  # LinearCrossEntropy where train.py uses it

    def step():
        with autocast:
            loss = model(x, labels=x).loss if hf else model(x, y, fused_loss=fused)[1]
        loss.backward()  # outside autocast, as train.py: backward runs in the dtypes forward chose
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()  # kernels are asynchronous: the step ends when the GPU is done
    return step


def build_models(args, device) -> tuple[GPT, dict]:
    """(ours, {name: (model, is_hf)}): ours, optionally HF's copy of its weights and a compiled copy of ours."""
    torch.manual_seed(0)
    config = GPTConfig(block_size=args.seq_len, vocab_size=args.vocab_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    ours = GPT(config)
    models = {}
    if not args.no_hf:
        models["hf"] = (hf_model(ours).to(device).train(), True)  # built before ours moves: same initial weights
    ours.to(device).train()
    models["ours"] = (ours, False)
    if args.compile:
        models["ours+compile"] = (torch.compile(copy.deepcopy(ours)), False)
    return ours, models


def time_steps(steps: dict, n: int) -> dict[str, list[float]]:
    """One untimed warm-up step per model (compilation, allocator), then n timed rounds, models alternating."""
    for name, step in steps.items():
        t0 = time.perf_counter()
        step()
        print(f"warm-up {name}: {time.perf_counter() - t0:.2f} s", flush=True)
    times = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def report(args, ours: GPT, times: dict, device, dtype) -> dict:
    """Print and return tokens/s (median step), MFU and the ratio to HF for each model."""
    peak = peak_flops(device, dtype, tf32=device.type == "cuda")  # bench enables TF32 on CUDA, as train.py
    fpt, tokens = ours.flops_per_token(args.seq_len), args.batch_size * args.seq_len
    print(f"config: {args.n_layer}L/{args.n_embd}d/{args.n_head}h T={args.seq_len} B={args.batch_size} "
          f"V={args.vocab_size} {args.dtype} on {device} ({torch.get_num_threads()} threads), "
          f"{ours.num_params() / 1e6:.1f}M params")
    print(f"peak: {describe_peak(device, dtype, tf32=device.type == 'cuda')}")
    result = {"config": vars(args), "params": ours.num_params(), "peak_flops": peak,
              "peak": describe_peak(device, dtype, tf32=device.type == "cuda"), "models": {}}
    for name, ts in times.items():
        tps = tokens / statistics.median(ts)
        m = mfu(fpt, tps, peak)
        result["models"][name] = {"tokens_per_s": tps, "mfu": m, "step_s": ts}
        print(f"{name:>13}: {tps:10.1f} tokens/s  MFU {m if m is None else f'{m:.1%}'}")
    for name in times if "hf" in times else ():
        if name != "hf":
            ratio = result["models"][name]["tokens_per_s"] / result["models"]["hf"]["tokens_per_s"]
            result["models"][name]["ratio_vs_hf"] = ratio
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
    with torch.device("meta"):  # the FLOP count needs the shapes only, not 124M parameters' memory
        model = GPT(GPTConfig(**summary["model_config"]))
    tps = statistics.median(r["tokens_per_s"] for r in steps)
    peak = peak_flops(device, dtype, tf32=device.type == "cuda")  # train.py enables TF32 on CUDA
    m = mfu(model.flops_per_token(summary["train_config"]["seq_len"]), tps / summary["world_size"], peak)
    return {"run": str(run_dir), "steps": [steps[0]["step"], steps[-1]["step"]], "tokens_per_s": tps, "mfu": m,
            "peak": describe_peak(device, dtype, tf32=device.type == "cuda"), "dtype": summary["dtype"],
            "first_step_s": next(r for r in rows if "tokens_per_s" in r)["dt_ms"] / 1000}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_layer", type=int, default=6)
    p.add_argument("--n_head", type=int, default=6)
    p.add_argument("--n_embd", type=int, default=384)
    p.add_argument("--vocab_size", type=int, default=50304)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model (after 1 warm-up step)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    p.add_argument("--no_hf", action="store_true", help="skip the HF model (e.g. on a GPU, to save time)")
    p.add_argument("--from_run", help="instead of timing: steady-state figures of this finished train.py run")
    p.add_argument("--json", help="write the results to this JSON file")
    args = p.parse_args(argv)
    if min(args.n_layer, args.n_head, args.n_embd, args.vocab_size, args.seq_len, args.batch_size, args.steps) < 1:
        p.error("sizes and --steps must be >= 1")
    if not args.from_run and device_problem(args.device):
        p.error(device_problem(args.device))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.from_run:
        result = summarize_run(Path(args.from_run))
        print(f"train.py steady state: {result['tokens_per_s']:,.0f} tokens/s, MFU "
              f"{'n/a' if result['mfu'] is None else format(result['mfu'], '.1%')} (median of steps "
              f"{result['steps'][0]}..{result['steps'][1]}; first step {result['first_step_s']:.1f} s); "
              f"peak: {result['peak']}")
    else:
        device, dtype = torch.device(args.device), getattr(torch, args.dtype)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        ours, models = build_models(args, device)
        x = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), device=device)
        x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()  # (B, T) inputs and next-token targets
        steps = {name: make_step(m, hf, x, y, device, dtype) for name, (m, hf) in models.items()}
        result = report(args, ours, time_steps(steps, args.steps), device, dtype)
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
