"""LoRA rank sweep against full finetuning: one train.py run per rank, then all learning curves and a summary table.

    python finetune/sweep.py --ranks 0 1 2 4 8 16 32 --output_dir SWEEP -- --model_name_or_path DIR --max_steps 60
    python finetune/sweep.py --parallel_gpus -- --model_name_or_path gpt2   # one run per GPU at a time

Flags after `--` (or any flag sweep.py does not know) go to every train.py run unchanged; sweep.py sets
--lora_dim and --output_dir itself. Rank 0 is full finetuning.

Writes:
  SWEEP/r<R>/          each run's folder (log.jsonl, summary.json, curve.png, adapter/ or model/); a run whose
                       summary.json exists is skipped unless --redo
  SWEEP/curves.png     train and eval loss of every rank in one figure
  SWEEP/summary.md     table: rank, final / best eval loss, trainable params, wall time, peak memory
  SWEEP/summary.json   {"runs": [{rank, final_eval_loss, best_eval_loss, trainable_params, total_params,
                       wall_seconds, peak_memory_mb, steps}], "train_flags": [...]} (only when every run succeeded)
Exit status 1 if any run failed (the table then covers the runs that finished).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fileio import atomic_write_json, atomic_write_text
from plots import plot_curves, series
from runlog import read_log

HERE = Path(__file__).resolve().parent
RESERVED = ("--lora_dim", "--output_dir")
COLUMNS = ["rank", "final_eval_loss", "best_eval_loss", "trainable_params", "total_params", "wall_seconds",
           "peak_memory_mb", "steps"]


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_flags = []
    if "--" in argv:
        i = argv.index("--")
        argv, train_flags = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # an unknown train.py flag must never match ours by prefix
    p.add_argument("--ranks", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 32], help="0 = full finetuning")
    p.add_argument("--output_dir", type=Path, default=HERE / "out" / "sweep")
    p.add_argument("--parallel_gpus", action="store_true", help="run one rank per visible GPU concurrently")
    p.add_argument("--redo", action="store_true", help="rerun ranks whose summary.json exists")
    args, unknown = p.parse_known_args(argv)
    args.train_flags = unknown + train_flags
    bad = [f for f in args.train_flags if f.split("=")[0] in RESERVED]
    if bad:
        p.error(f"{bad} are set by sweep.py per run; remove them")
    if any(r < 0 for r in args.ranks) or len(set(args.ranks)) != len(args.ranks):
        p.error(f"--ranks must be distinct and >= 0, got {args.ranks}")
    return args


def run_dir(out: Path, rank: int) -> Path:
    return out / f"r{rank}"


def command(rank: int, out: Path, flags: list[str]) -> list[str]:
    return [sys.executable, str(HERE / "train.py"), *flags, "--lora_dim", str(rank),
            "--output_dir", str(run_dir(out, rank))]


def run_sequential(todo: list[int], out: Path, flags: list[str]) -> dict[int, int]:
    codes = {}
    for r in todo:
        print(f"\n[sweep] ===== rank {r} ({'full finetuning' if r == 0 else 'LoRA'})", flush=True)
        codes[r] = subprocess.call(command(r, out, flags))
    return codes


def run_parallel_gpus(todo: list[int], out: Path, flags: list[str]) -> dict[int, int]:
    """One run per GPU at a time (CUDA_VISIBLE_DEVICES), each run's output in r<R>/train.log."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        raise SystemExit("error: --parallel_gpus needs CUDA devices, none are visible")
    queue, running, codes = list(todo), {}, {}
    while queue or running:
        while queue and len(running) < n:
            gpu = next(g for g in range(n) if g not in {v[1] for v in running.values()})
            r = queue.pop(0)
            run_dir(out, r).mkdir(parents=True, exist_ok=True)
            log = open(run_dir(out, r) / "train.log", "w")
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            running[r] = (subprocess.Popen(command(r, out, flags), stdout=log, stderr=subprocess.STDOUT, env=env),
                          gpu, log)
            print(f"[sweep] rank {r} started on GPU {gpu} (log {run_dir(out, r) / 'train.log'})", flush=True)
        for r, (proc, gpu, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                codes[r] = proc.returncode
                del running[r]
                print(f"[sweep] rank {r} finished on GPU {gpu} with exit status {proc.returncode}", flush=True)
        time.sleep(1)
    return codes


def label(rank: int) -> str:
    return "full" if rank == 0 else f"r={rank}"


def collect(out: Path, ranks: list[int]) -> tuple[list[dict], dict[str, list[dict]]]:
    rows, logs = [], {}
    for r in ranks:
        s_path = run_dir(out, r) / "summary.json"
        if not s_path.is_file():
            continue
        s = json.loads(s_path.read_text())
        logs[label(r)] = read_log(run_dir(out, r) / "log.jsonl")
        _, ev = series(logs[label(r)], "eval_loss")
        rows.append({"rank": r, **{k: s.get(k) for k in COLUMNS[1:]},
                     "best_eval_loss": min(ev) if ev else s.get("best_eval_loss")})
    return rows, logs


def markdown(rows: list[dict], flags: list[str]) -> str:
    def fmt(v, nd=4):
        return "–" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:.{nd}f}")

    lines = ["# LoRA rank sweep", "", f"train.py flags: `{' '.join(flags) or '(defaults)'}`", "",
             "| rank | final eval loss | best eval loss | trainable params | trainable % | wall s | peak MB | steps |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        pct = 100 * r["trainable_params"] / r["total_params"] if r.get("total_params") else None
        lines.append(f"| {'full' if r['rank'] == 0 else r['rank']} | {fmt(r['final_eval_loss'])} | "
                     f"{fmt(r['best_eval_loss'])} | {fmt(r['trainable_params'])} | {fmt(pct, 3)} | "
                     f"{fmt(r['wall_seconds'], 1)} | {fmt(r['peak_memory_mb'], 0)} | {fmt(r['steps'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    done = [r for r in args.ranks if (run_dir(out, r) / "summary.json").is_file() and not args.redo]
    for r in done:
        print(f"[sweep] rank {r}: done already ({run_dir(out, r) / 'summary.json'}); --redo to rerun")
    todo = [r for r in args.ranks if r not in done]
    for r in todo:  # a rerun that fails must not leave the previous run's summary to be read as its result
        (run_dir(out, r) / "summary.json").unlink(missing_ok=True)
    runner = run_parallel_gpus if args.parallel_gpus else run_sequential
    codes = runner(todo, out, args.train_flags) if todo else {}
    failed = sorted(r for r, c in codes.items() if c != 0)

    rows, logs = collect(out, args.ranks)
    if logs:
        plot_curves(logs, out / "curves.png", "LoRA ranks vs full finetuning on Alpaca")
    atomic_write_text(out / "summary.md", markdown(rows, args.train_flags))
    print("\n" + markdown(rows, args.train_flags))
    if failed:
        (out / "summary.json").unlink(missing_ok=True)  # it would claim an earlier, complete sweep
        print(f"[sweep] FAILED ranks {failed}; summary.json not written (rerun to retry them)", file=sys.stderr)
        return 1
    atomic_write_json(out / "summary.json", {"runs": rows, "ranks": args.ranks, "train_flags": args.train_flags})
    print(f"[sweep] {out / 'summary.json'}, {out / 'summary.md'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
