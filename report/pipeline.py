"""The main job: run every stage of the homework at CPU scale (or the GPU presets), then build the report.

Stages (each a subprocess running a folder's own script; report/ imports nothing from the other folders, the
stages meet only through the files they write under the run directory):

  bpe       python bpe/train.py              -> RUN/bpe/{tokenizer.json, summary.json, output.log}
  data      python pretrain/prepare.py       -> RUN/shards/ (Tiny Shakespeare, GPT-2 BPE)
  pretrain  python pretrain/train.py         -> RUN/pretrain/{log.jsonl, summary.json, hf/}
  sweep     python finetune/sweep.py         -> RUN/sweep/{r0,r1,...}/ (LoRA ranks + full finetuning)
  generate  python finetune/generate.py      -> RUN/generations.json
  report    python report/build_report.py    -> report/README.md + PNGs

A stage whose output marker exists is skipped unless ``--redo`` names it (or ``--redo all``); the report is always
rebuilt. Every stage's command,
wall time and status go to RUN/pipeline.jsonl, which the report quotes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["bpe", "data", "pretrain", "sweep", "generate", "report"]


@dataclasses.dataclass
class PipelineConfig:
    """Scale of each stage. The CPU defaults fit the 15-minute budget of a 2-core machine."""
    preset: str = "cpu"
    bpe_vocab_size: int = 1024
    pretrain_preset: str = "tiny-cpu"
    pretrain_steps: int | None = None          # None: the preset's own
    hellaswag_limit: int = 200
    nproc: int = 1                             # >1: torchrun --nproc_per_node for pretraining
    sweep_ranks: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)
    sweep_model: str | None = None             # None: the model pretrained above
    sweep_examples: int | None = 1000          # Alpaca subset (None: all 52,002)
    sweep_steps: int | None = 30
    sweep_max_length: int = 256
    sweep_batch_size: int = 8
    sweep_eval_interval: int = 10
    sweep_eval_ratio: float = 0.05
    sweep_lr: float = 1e-3
    gen_lora_rank: int = 8
    data_flags: tuple[str, ...] = ("--input", "tinyshakespeare.txt")  # pretrain/prepare.py's source
    sweep_parallel_gpus: bool = False          # sweep.py --parallel_gpus: one rank per visible GPU at a time


PRESETS = {
    "cpu": PipelineConfig(),
    # The homework at full scale (see README): build-nanogpt's GPT-2 124M on 8 GPUs, then the sweep on hub `gpt2`
    # over all of Alpaca with the homework's hyper-parameters.
    "gpu": PipelineConfig(preset="gpu", pretrain_preset="gpt2-124m", hellaswag_limit=-1, nproc=8,
                          sweep_model="gpt2", sweep_examples=None, sweep_steps=None, sweep_max_length=512,
                          sweep_batch_size=8, sweep_eval_interval=100, sweep_eval_ratio=0.01, sweep_lr=1e-4,
                          data_flags=("--hf_dataset", "HuggingFaceFW/fineweb-edu", "--hf_config", "sample-10BT",
                                      "--val_fraction", "0.01"),
                          sweep_parallel_gpus=True),
}


def stage_commands(cfg: PipelineConfig, run: Path, data_dir: str | None, report_dir: Path) -> dict[str, tuple[list, Path]]:
    """{stage: (argv, marker file that says the stage is done)}."""
    py = [sys.executable]
    dd = ["--data_dir", data_dir] if data_dir else []
    if cfg.nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc}"]
    else:
        launcher = py
    pre = launcher + [str(ROOT / "pretrain/train.py"), "--preset", cfg.pretrain_preset, "--data", str(run / "shards"),
                      "--out_dir", str(run / "pretrain"), "--hellaswag_limit", str(cfg.hellaswag_limit)] + dd
    if cfg.pretrain_steps:
        pre += ["--max_steps", str(cfg.pretrain_steps)]
    model = cfg.sweep_model or str(run / "pretrain" / "hf")
    train_flags = ["--model_name_or_path", model, "--data_path", "alpaca/alpaca_data.json.xz",
                   "--max_length", str(cfg.sweep_max_length), "--train_batch_size", str(cfg.sweep_batch_size),
                   "--eval_batch_size", str(cfg.sweep_batch_size), "--eval_interval", str(cfg.sweep_eval_interval),
                   "--eval_ratio", str(cfg.sweep_eval_ratio), "--lr", str(cfg.sweep_lr),
                   "--group_by_length"] + dd
    if cfg.sweep_examples:
        train_flags += ["--max_examples", str(cfg.sweep_examples)]
    if cfg.sweep_steps:
        train_flags += ["--max_steps", str(cfg.sweep_steps)]
    sweep = py + [str(ROOT / "finetune/sweep.py"), "--ranks", *map(str, cfg.sweep_ranks),
                  "--output_dir", str(run / "sweep")] + (["--parallel_gpus"] if cfg.sweep_parallel_gpus else []) + [
        "--"] + train_flags
    r = cfg.gen_lora_rank
    gen = py + [str(ROOT / "finetune/generate.py"), "--base", model, "--full", str(run / "sweep/r0/model"),
                "--lora", str(run / f"sweep/r{r}/adapter"), "--output", str(run / "generations.json")] + dd
    return {
        "bpe": (py + [str(ROOT / "bpe/train.py"), "--vocab_size", str(cfg.bpe_vocab_size),
                      "--out_dir", str(run / "bpe")] + dd, run / "bpe/summary.json"),
        "data": (py + [str(ROOT / "pretrain/prepare.py"), *cfg.data_flags, "--tokenizer", "gpt2",
                       "--out_dir", str(run / "shards")] + dd, run / "shards/meta.json"),
        "pretrain": (pre, run / "pretrain/summary.json"),
        "sweep": (sweep, run / "sweep/summary.json"),
        "generate": (gen, run / "generations.json"),
        "report": (py + [str(ROOT / "report/build_report.py"), "--run_dir", str(run), "--out_dir", str(report_dir)]
                   + dd, report_dir / "README.md"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--run_dir", type=Path, default=None, help="where stage outputs go (default: runs/<preset>)")
    p.add_argument("--report_dir", type=Path, default=ROOT / "report")
    p.add_argument("--data_dir", default=None, help="data directory (default: $LLMHW_DATA_DIR)")
    p.add_argument("--only", nargs="+", choices=STAGES, default=None, help="run only these stages")
    p.add_argument("--redo", nargs="+", choices=STAGES + ["all"], default=[], help="redo these stages even if done")
    p.add_argument("--dry_run", action="store_true", help="print the commands and stop")
    for name in ("pretrain_steps", "sweep_examples", "sweep_steps", "hellaswag_limit", "nproc"):
        p.add_argument(f"--{name}", type=int, default=None)
    args = p.parse_args(argv)

    cfg = dataclasses.replace(PRESETS[args.preset])  # a copy: flags below must not change the preset
    for name in ("pretrain_steps", "sweep_examples", "sweep_steps", "hellaswag_limit", "nproc"):
        value, lowest = getattr(args, name), -1 if name == "hellaswag_limit" else 1
        if value is not None:
            if value < lowest:
                p.error(f"--{name} must be >= {lowest}{' (-1: all, 0: none)' if lowest < 0 else ''}, got {value}")
            setattr(cfg, name, value)
    run = (args.run_dir or ROOT / "runs" / cfg.preset).resolve()
    if not args.dry_run:
        run.mkdir(parents=True, exist_ok=True)
    commands = stage_commands(cfg, run, args.data_dir, args.report_dir.resolve())
    redo = set(STAGES) if "all" in args.redo else set(args.redo)
    log_path = run / "pipeline.jsonl"
    t_all = time.time()
    for stage in args.only or STAGES:
        argv_, marker = commands[stage]
        pretty = shlex.join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv_)
        # The report is rebuilt every time (about a second): its committed README must never mark it done.
        if marker.exists() and stage not in redo and stage != "report":
            print(f"[pipeline] {stage}: done already ({os.path.relpath(marker, ROOT)}); --redo {stage} to rerun")
            continue
        print(f"\n[pipeline] ===== {stage}: {pretty}", flush=True)
        if args.dry_run:
            continue
        t0 = time.time()
        rc = subprocess.call(argv_, cwd=ROOT)
        record = {"stage": stage, "command": pretty, "seconds": round(time.time() - t0, 1), "returncode": rc,
                  "preset": cfg.preset, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if rc != 0:
            print(f"[pipeline] stage '{stage}' failed with exit code {rc}; command: {pretty}", file=sys.stderr)
            return rc
        print(f"[pipeline] {stage}: {record['seconds']} s")
    if args.dry_run:
        return 0
    print(f"\n[pipeline] finished in {time.time() - t_all:.0f} s; report: {os.path.relpath(commands['report'][1], ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
