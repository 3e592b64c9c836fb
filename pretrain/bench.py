"""Training throughput (tokens/s) and MFU of our GPT at a given config, side by side with HF GPT2LMHeadModel.

One "step" = forward + backward + AdamW update on a (B, T) batch, the same work as a train.py step without gradient
accumulation. Both models get the same weights, data and thread count, and are timed alternately (ours, HF, ours,
...) so that load from other processes hits both alike; the figure per model is the median step time.

    python pretrain/bench.py                                  # the issue's CPU config: 6L/384d/T256/B8/V50304 fp32
    python pretrain/bench.py --compile                        # also torch.compile'd ours
    python pretrain/bench.py --n_layer 12 --n_head 12 --n_embd 768 --seq_len 1024 --batch_size 16 --dtype bfloat16
Prints one line per model and the ratio ours / HF; --json FILE writes the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from modeling_gpt2 import GPT, GPTConfig
from perf import mfu, peak_flops


def hf_model(model: GPT):
    """A transformers GPT2LMHeadModel with our model's weights (dropout off, SDPA attention)."""
    import tempfile

    from transformers import GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as d:
        model.save_hf(d, eos_token_id=None)
        return GPT2LMHeadModel.from_pretrained(d, attn_implementation="sdpa")


def make_step(model, hf: bool, x, y, device, dtype):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext())
    fused = device.type == "cpu" and dtype == torch.float32  # as train.py

    def step():
        with autocast:
            loss = model(x, labels=x).loss if hf else model(x, y, fused_loss=fused)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def main(argv=None):
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
    p.add_argument("--json", help="write the results to this JSON file")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    config = GPTConfig(block_size=args.seq_len, vocab_size=args.vocab_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    ours = GPT(config)
    models = {}
    if not args.no_hf:
        models["hf"] = (hf_model(ours).to(device).train(), True)
    ours.to(device).train()
    models["ours"] = (ours, False)
    if args.compile:
        import copy
        models["ours+compile"] = (torch.compile(copy.deepcopy(ours)), False)
    x = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), device=device)
    x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    steps = {name: make_step(m, hf, x, y, device, dtype) for name, (m, hf) in models.items()}
    for name, step in steps.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        step()
        print(f"warm-up {name}: {time.perf_counter() - t0:.2f} s", flush=True)
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    peak = peak_flops(device, dtype)
    fpt = ours.flops_per_token(args.seq_len)
    tokens = args.batch_size * args.seq_len
    print(f"config: {args.n_layer}L/{args.n_embd}d/{args.n_head}h T={args.seq_len} B={args.batch_size} "
          f"V={args.vocab_size} {args.dtype} on {device} ({torch.get_num_threads()} threads), "
          f"{ours.num_params() / 1e6:.1f}M params, peak {peak / 1e12 if peak else float('nan'):.2f} TFLOP/s "
          f"({'measured matmul' if device.type == 'cpu' else 'datasheet'})")
    result = {"config": vars(args), "params": ours.num_params(), "peak_flops": peak, "models": {}}
    for name, ts in times.items():
        tps = tokens / statistics.median(ts)
        m = mfu(fpt, tps, peak)
        result["models"][name] = {"tokens_per_s": tps, "mfu": m, "step_s": ts}
        print(f"{name:>13}: {tps:10.1f} tokens/s  MFU {m if m is None else f'{m:.1%}'}")
    if "hf" in times:
        for name in times:
            if name != "hf":
                ratio = result["models"][name]["tokens_per_s"] / result["models"]["hf"]["tokens_per_s"]
                result["models"][name]["ratio_vs_hf"] = ratio
                print(f"ratio {name} / hf: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
