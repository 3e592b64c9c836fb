"""Choose a recipe by measurement: train candidate shapes for equal CPU seconds and score each against n-gram counts.

    python pretrain/scan.py --data SHARDS --seconds 120                    # the default candidates
    python pretrain/scan.py --data SHARDS --seconds 60 --candidates L4-d128-T256-B16-lr3e-3 L2-d192-T128-B32-lr6e-3

Each candidate (L layers, d width, T context, B rows, peak lr, optionally -muon; heads = d / 32) gets the steps its
CPU step cost (probed round-robin here) buys, is trained by train.py in a subprocess and scored by ngram.py beside the
count baselines. Writes OUT/scan.json and OUT/scan.md; the runs stay in OUT/<candidate>/.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

import ngram
from fileio import OutputError, atomic_write_json, atomic_write_text, claim_output_dir
from modeling_gpt2 import GPT, GPTConfig
from prepare import DataError, read_meta

HERE = Path(__file__).resolve().parent
SPEC = re.compile(r"^L(\d+)-d(\d+)-T(\d+)-B(\d+)-lr([0-9.e-]+?)(-muon)?$")
KIND, NAMES = "llmhw-scan", ("scan.json", "scan.md", "L*-d*-T*-B*-lr*")  # what a scan writes in OUT
DEFAULT_CANDIDATES = ("L4-d128-T256-B4-lr6e-3", "L4-d192-T256-B4-lr6e-3", "L4-d96-T256-B4-lr6e-3",
                      "L4-d128-T256-B4-lr3e-3", "L4-d128-T256-B16-lr3e-3", "L4-d256-T256-B16-lr3e-3")


def parse_candidate(spec: str) -> dict:
    """'L4-d128-T256-B16-lr3e-3[-muon]' -> train.py's flags as a dict; one line naming the spec if malformed."""
    m = SPEC.match(spec)
    try:
        L, d, T, B, lr = int(m[1]), int(m[2]), int(m[3]), int(m[4]), float(m[5])
    except (TypeError, ValueError):  # no match, or a rate that is no number ("lr.", "lr1e-")
        raise ValueError(f"candidate {spec!r} is not of the form L<layers>-d<width>-T<context>-B<rows>-lr<rate>"
                         "[-muon], e.g. L4-d128-T256-B16-lr3e-3") from None
    if d % 32 or min(L, d, T, B) <= 0 or not 0 < lr < 1:
        raise ValueError(f"candidate {spec!r}: width must be a positive multiple of 32 (heads of 32), layers, "
                         "context and rows positive, lr in (0, 1)")
    return {"n_layer": L, "n_embd": d, "n_head": d // 32, "block_size": T, "seq_len": T, "batch_size": B, "lr": lr,
            "optimizer": "muon" if m[6] else "adamw"}


def step_costs(cands: dict[str, dict], vocab: int, rounds: int = 3) -> dict[str, float]:
    """CPU seconds of one training step of each candidate on random tokens: round-robin after a warm-up step, each
    its median (a machine whose load changes during the probe shifts all of them alike)."""
    setups = {}
    for name, c in cands.items():
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=c["block_size"], vocab_size=vocab, n_layer=c["n_layer"],
                              n_head=c["n_head"], n_embd=c["n_embd"]))
        opt = model.configure_optimizers(0.1, c["lr"], device_type="cpu", optimizer=c["optimizer"])
        setups[name] = (model, opt, torch.randint(0, vocab, (c["batch_size"], c["seq_len"] + 1)))
    costs = {name: [] for name in cands}
    for _ in range(rounds + 1):
        for name, (model, opt, x) in setups.items():
            t0 = time.process_time()
            model(x[:, :-1], x[:, 1:], return_logits=False)[1].backward()  # the trainer's CPU path
            opt.step()
            opt.zero_grad(set_to_none=True)
            costs[name].append(time.process_time() - t0)
    return {name: sorted(c[1:])[len(c[1:]) // 2] for name, c in costs.items()}  # median without the warm-up


class CandidateFailed(RuntimeError):
    """A candidate's train.py ended with an error."""


def train_candidate(name: str, c: dict, steps: int, data: Path, out: Path, extra: list[str]) -> dict:
    """train.py for ``steps`` steps with the candidate's flags; returns its summary.json plus CPU and wall seconds."""
    flags = [f"--{k}={v}" for k, v in c.items()]
    argv = [sys.executable, str(HERE / "train.py"), "--preset", "tiny-cpu", "--data", str(data),
            "--out_dir", str(out / name), *flags, "--max_steps", str(steps),
            "--warmup_steps", str(max(1, min(100, steps // 10))), "--data_order", "shuffle", "--eval_interval", "0",
            "--val_steps", "0", "--hellaswag_limit", "0", "--sample_tokens", "0", "--total_batch_size", "0", *extra]
    before, t0 = os.times(), time.time()
    r = subprocess.run(argv, capture_output=True, text=True)
    after = os.times()
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise CandidateFailed(f"candidate {name}: train.py failed (exit {r.returncode}): {last}")
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    return {**json.loads((out / name / "summary.json").read_text()), "cpu_s": cpu, "wall_s": time.time() - t0}


def scan(data: Path, out: Path, cands: dict[str, dict], seconds: float, extra: list[str]) -> dict:
    vocab = -(-read_meta(data)["vocab_size"] // 64) * 64  # as train.py pads it
    base, costs, rows = ngram.baselines(data), step_costs(cands, vocab), []
    for spec, c in cands.items():
        cost = costs[spec]
        steps = max(10, int(seconds / cost))
        print(f"[scan] {spec}: {cost:.3f} CPU s/step -> {steps} steps", flush=True)
        s = train_candidate(spec, c, steps, data, out, extra)
        scored = ngram.baselines(data, out / spec / "hf", orders=())["baselines"]["model"]
        rows.append({"candidate": spec, **c, "params": s["params"], "steps": steps, "tokens": s["tokens"],
                     "probe_cpu_s_per_step": cost, "cpu_s": s["cpu_s"], "wall_s": s["wall_s"],
                     "train_tokens_per_s": s["tokens_per_s"], **scored})
        print(f"[scan] {spec}: val {scored['nats_per_token']:.4f} nats/token, {scored['bits_per_byte']:.4f} "
              f"bits/byte ({s['tokens']:,} tokens, {s['wall_s']:.0f} s wall)", flush=True)
    return {"data": str(data), "seconds": seconds, "threads": torch.get_num_threads(),
            "load_avg": list(os.getloadavg()), "baselines": base, "candidates": rows,
            "best": min(rows, key=lambda r: r["nats_per_token"])["candidate"], "extra_flags": extra}


def table(result: dict) -> str:
    """The scan as a markdown table: baselines, then candidates by val loss; the last column against the best count."""
    best = min(v["nats_per_token"] for v in result["baselines"]["baselines"].values())
    lines = ["| model | params | steps | tokens read | CPU s | wall s | val nats/token | bits/byte | vs counts |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in result["baselines"]["baselines"].items():
        lines.append(f"| {name} counts | | | | | | {v['nats_per_token']:.3f} | {v['bits_per_byte']:.3f} | "
                     f"{v['nats_per_token'] - best:+.3f} |")
    for r in sorted(result["candidates"], key=lambda r: r["nats_per_token"]):
        lines.append(f"| {r['candidate']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['tokens']:,} | "
                     f"{r['cpu_s']:.0f} | {r['wall_s']:.0f} | {r['nats_per_token']:.3f} | {r['bits_per_byte']:.3f} | "
                     f"{r['nats_per_token'] - best:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared shard folder (prepare.py --out_dir)")
    p.add_argument("--seconds", type=float, default=120.0, help="CPU seconds of training per candidate")
    p.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES),
                   help="L<layers>-d<width>-T<context>-B<rows>-lr<rate> each (default: %(default)s)")
    p.add_argument("--out_dir", type=Path, default=HERE / "output" / "scan", help="where runs and tables go")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier scan in --out_dir")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the probe and the runs (default: torch's); 1 makes CPU seconds a fair "
                        "measure on a machine other work shares (no thread waits for a descheduled sibling)")
    p.add_argument("--data_dir", default=None, help="data directory (default $LLMHW_DATA_DIR)")
    a, extra = p.parse_known_args(argv)
    if not 0 < a.seconds < math.inf:  # nan too
        p.error(f"argument --seconds: must be a finite number > 0, got {a.seconds:g}")
    if a.threads is not None:
        if a.threads < 1:
            p.error(f"--threads must be >= 1, got {a.threads}")
        torch.set_num_threads(a.threads)
        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the train.py subprocesses
    try:
        cands = {spec: parse_candidate(spec) for spec in a.candidates}
        read_meta(a.data)
        out = claim_output_dir(a.out_dir, KIND, NAMES, overwrite=a.overwrite, inputs=[a.data])
    except (ValueError, DataError, OutputError) as e:
        p.error(str(e))
    extra += ["--data_dir", a.data_dir] if a.data_dir else []
    try:
        out.clear()
        result = scan(a.data, out.create(), cands, a.seconds, extra)
    except (OutputError, DataError, CandidateFailed) as e:
        out.abandon()  # a scan stopped before any run leaves no folder behind
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    atomic_write_json(out.path / "scan.json", result)
    atomic_write_text(out.path / "scan.md", table(result))
    print(table(result))
    print(f"best: {result['best']} (load average {result['load_avg']})")
    return result


if __name__ == "__main__":
    main()
