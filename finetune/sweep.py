"""LoRA rank sweep against full finetuning: one train.py run per rank (and per extra seed), then all learning curves
and a summary table (files: finetune/README.md).

    python finetune/sweep.py --ranks 0 1 2 4 8 16 32 --seed_runs 8:1234 --out_dir SWEEP -- --model_name_or_path DIR
    python finetune/sweep.py --parallel_gpus -- --model_name_or_path gpt2   # one run per GPU at a time
    python finetune/sweep.py --jobs 2 -- --model_name_or_path DIR   # CPU: two 1-thread runs at a time (2 cores)

Flags after `--` (or unknown to sweep.py) go to every train.py run; sweep.py sets --lora_dim, --out_dir (and --seed
for a --seed_runs run). A finished run is skipped (unless --redo), an interrupted one resumed. The summary files
are replaced only when every run succeeded (else exit status 1).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ddp import device_problem
from fileio import OutputError, atomic_write_json, atomic_write_text, claim_output_dir, start_child
from runlog import plot_losses, read_log

HERE = Path(__file__).resolve().parent
RESERVED = ("--lora_dim", "--out_dir", "--resume", "--overwrite")
SWEEP_KIND = "rank sweep"  # what --out_dir may hold (fileio.claim_output_dir): run folders, logs, the sweep's files
SWEEP_FILES = ("r[0-9]*", "curves.png", "summary.md", "summary.json")
COLUMNS = ["run", "rank", "seed", "final_eval_loss", "best_eval_loss", "best_eval_step", "final_train_loss",
           "trainable_params", "total_params", "wall_seconds", "peak_memory_mb", "steps", "epochs"]


@dataclass(frozen=True)
class Run:
    rank: int
    seed: int | None = None   # None: train.py's --seed (from the train flags, else its default)

    @property
    def name(self) -> str:  # its folder
        return f"r{self.rank}" + (f"_seed{self.seed}" if self.seed is not None else "")

    @property
    def label(self) -> str:  # in the figure
        return ("full" if self.rank == 0 else f"r={self.rank}") + ("" if self.seed is None else f" seed {self.seed}")


def seed_run(text: str) -> Run:
    rank, _, seed = text.partition(":")
    if not (rank.isdigit() and seed.removeprefix("-").isdigit()):
        raise argparse.ArgumentTypeError(f"expected RANK:SEED with RANK >= 0 (e.g. 8:1234), got {text!r}")
    return Run(int(rank), int(seed))


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    i = argv.index("--") if "--" in argv else len(argv)
    argv, train_flags = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # an unknown train.py flag must never match ours by prefix
    p.add_argument("--ranks", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 32], help="0 = full finetuning")
    p.add_argument("--seed_runs", type=seed_run, nargs="+", default=[], metavar="RANK:SEED",
                   help="also run RANK with train.py --seed SEED (folder r<RANK>_seed<SEED>)")
    p.add_argument("--out_dir", type=Path, default=HERE / "out" / "sweep")
    p.add_argument("--parallel_gpus", action="store_true", help="run one rank per visible GPU concurrently")
    p.add_argument("--jobs", type=int, default=1, help="CPU: runs at a time, the cores shared out as torch threads")
    p.add_argument("--redo", action="store_true", help="rerun runs that finished (--overwrite)")
    args, unknown = p.parse_known_args(argv)
    args.train_flags = unknown + train_flags
    bad = [f for f in args.train_flags if f.split("=")[0] in RESERVED]
    if bad:
        p.error(f"{bad} are set by sweep.py per run; remove them")
    if args.jobs < 1 or (args.jobs > 1 and args.parallel_gpus):
        p.error(f"--jobs must be >= 1 and goes without --parallel_gpus (one run per GPU), got {args.jobs}")
    if any(r < 0 for r in args.ranks) or len(set(args.ranks)) != len(args.ranks):
        p.error(f"--ranks must be distinct and >= 0, got {args.ranks}")
    train = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # train.py's --device, as it will read it
    train.add_argument("--device", default="auto")
    if problem := device_problem(train.parse_known_args(args.train_flags)[0].device):  # every run would fail on it
        p.error(problem)
    args.runs = [Run(r) for r in args.ranks] + list(dict.fromkeys(args.seed_runs))
    return args


def finished(folder: Path) -> dict | None:
    """The summary.json of the run in the folder if it finished (same run_id as its config.json), else None."""
    try:
        summary, config = (json.loads((folder / name).read_text()) for name in ("summary.json", "config.json"))
    except (OSError, ValueError):
        return None
    return summary if summary.get("run_id") == config.get("run_id") else None


def command(run: Run, out: Path, flags: list[str], redo: bool) -> list[str]:
    folder = out / run.name  # an interrupted run continues exactly where its last checkpoint is
    resume = (folder / "ckpt" / "latest").is_file() and not redo
    how = ["--resume"] if resume else ["--overwrite"] if folder.exists() and any(folder.iterdir()) else []
    seed = ["--seed", str(run.seed)] if run.seed is not None else []
    return [sys.executable, str(HERE / "train.py"), *flags, *seed, "--lora_dim", str(run.rank),
            "--out_dir", str(folder), *how]


def slots(parallel_gpus: bool, jobs: int) -> dict[str, dict[str, str]]:
    """Where runs go at the same time, each a child's environment: one per GPU (a child's id is the parent's: under
    CUDA_VISIBLE_DEVICES=4,5 our GPU 0 is the 4), or ``jobs`` on the CPU, the cores shared out as torch threads."""
    if parallel_gpus:
        import torch

        n, parent = torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = range(n) if parent is None else [x.strip() for x in parent.split(",") if x.strip()]
        gpus = [str(i) for i in ids][:n]  # CUDA ignores entries past the usable ones
        if not gpus:
            raise ValueError("--parallel_gpus needs CUDA devices, none are visible")
        return {f"GPU {g}": {"CUDA_VISIBLE_DEVICES": g} for g in gpus}
    threads = str(max(1, (os.cpu_count() or 1) // jobs))  # (measured in finetune/README.md)
    return {f"CPU slot {i} ({threads} thread(s))": {"OMP_NUM_THREADS": threads} for i in range(jobs)} \
        if jobs > 1 else {"the CPU": {}}


def run_parallel(todo: list[Run], out: Path, flags: list[str], redo: bool,
                 slots: dict[str, dict[str, str]]) -> dict[Run, int]:
    """One run per slot (a child's environment: its GPU or CPU threads) at a time; logs beside the run folders."""
    queue, running, codes = list(todo), {}, {}
    while queue or running:
        while queue and len(running) < len(slots):
            slot = next(name for name in slots if name not in {v[1] for v in running.values()})
            run = queue.pop(0)
            log = open(out / f".{run.name}.log.llmhw-new.tmp", "w")  # a temporary of ours (fileio.TEMP)
            proc = start_child(command(run, out, flags, redo), stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **slots[slot]})
            running[run] = (proc, slot, log)
            print(f"[sweep] {run.name} started on {slot} (log {out / f'{run.name}.log'})", flush=True)
        for run, (proc, slot, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                codes[run] = proc.returncode
                del running[run]
                finish_log(out, run, proc.returncode, slot)
        time.sleep(1)
    return codes


def finish_log(out: Path, run: Run, code: int, slot: str) -> None:
    """The run's output swapped into place; for a failed run, its error line printed."""
    log = out / (f"{run.name}.log" if code == 0 else f"{run.name}.failed.log")
    os.replace(out / f".{run.name}.log.llmhw-new.tmp", log)
    if code == 0:
        (out / f"{run.name}.failed.log").unlink(missing_ok=True)
        print(f"[sweep] {run.name} finished on {slot}", flush=True)
        return
    lines = log.read_text(errors="replace").replace("\r", "\n").splitlines()  # a progress bar redraws with \r
    why = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "no output")
    print(f"[sweep] {run.name} FAILED (exit status {code}): {why.strip()} (log {log})", flush=True)


def markdown(rows: list[dict], flags: list[str]) -> str:
    def fmt(v, nd=4):
        return "–" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:.{nd}f}")

    lines = ["# LoRA rank sweep", "", f"train.py flags: `{' '.join(flags) or '(defaults)'}`", "",
             "| run | rank | seed | final eval loss | best eval loss | at step | final train loss | trainable params "
             "| trainable % | wall s | peak MB | steps |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        pct = 100 * r["trainable_params"] / r["total_params"] if r.get("total_params") else None
        lines.append(f"| {r['run']} | {'full' if r['rank'] == 0 else r['rank']} | {fmt(r['seed'])} | "
                     f"{fmt(r['final_eval_loss'])} | {fmt(r['best_eval_loss'])} | {fmt(r['best_eval_step'])} | "
                     f"{fmt(r['final_train_loss'])} | {fmt(r['trainable_params'])} | {fmt(pct, 3)} | "
                     f"{fmt(r['wall_seconds'], 1)} | {fmt(r['peak_memory_mb'], 0)} | {fmt(r['steps'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # fileio's rule: an earlier sweep is continued; anything else (a user's file, another output) refused
        out = claim_output_dir(args.out_dir, SWEEP_KIND, SWEEP_FILES, resume=True).create()
        done = [r for r in args.runs if finished(out / r.name) and not args.redo]
        for r in done:
            print(f"[sweep] {r.name}: done already ({out / r.name / 'summary.json'}); --redo to rerun")
        todo = [r for r in args.runs if r not in done]
        where = slots(args.parallel_gpus, args.jobs) if todo else {}  # a missing GPU: one line, before any run
        codes = run_parallel(todo, out, args.train_flags, args.redo, where)
    except (OutputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, logs = [], {}  # the table's rows and the curves of the finished runs
    for run in args.runs:
        if s := finished(out / run.name):
            logs[run.label] = read_log(out / run.name / "log.jsonl")
            rows.append({**{k: s.get(k) for k in COLUMNS}, "run": run.name, "rank": run.rank})
    print("\n" + markdown(rows, args.train_flags))
    failed = sorted(r.name for r, c in codes.items() if c != 0)
    if failed:  # the earlier complete summary, table and figure (if any) stay: they describe a whole sweep
        print(f"[sweep] FAILED runs {failed}; summary.json, summary.md and curves.png not replaced (rerun to retry "
              "them)", file=sys.stderr)
        return 1
    plot_losses(logs, out / "curves.png", "LoRA ranks vs full finetuning on Alpaca", ("train_loss", "eval_loss"))
    atomic_write_text(out / "summary.md", markdown(rows, args.train_flags))
    atomic_write_json(out / "summary.json", {"format": "llmhw-sweep-summary", "version": 2, "runs": rows,
                                             "ranks": args.ranks, "seed_runs": [r.name for r in args.seed_runs],
                                             "train_flags": args.train_flags})
    print(f"[sweep] {out / 'summary.json'}, {out / 'summary.md'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
