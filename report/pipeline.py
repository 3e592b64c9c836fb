"""The main job: run every stage of the homework at CPU scale (or the GPU preset), then build the report.

Stages (each a subprocess running a folder's own script; report/ imports nothing from the other folders, the
stages meet only through the files they write under the run directory RUN):

  bpe        python bpe/train.py           the homework's tokenizer: manual.txt, vocabulary 1024, compared with
                                           GPT-2 on the homework's two paragraphs -> RUN/bpe/
  corpus     python finetune/partition.py  the Alpaca partition: the finetuning subset (train/eval split.json),
                                           held-out instructions, and pretrain_text.txt = responses of the records
                                           the finetuning never sees -> RUN/corpus/
  tokenizer  python bpe/train.py           (CPU) GPT-2-pattern BPE trained on the pretraining corpus -> RUN/tokenizer/
  data       python pretrain/prepare.py    shards of the pretraining corpus with that tokenizer -> RUN/shards/
  pretrain   python pretrain/train.py      a small GPT on that English prose -> RUN/pretrain/ (hf/ = its export)
  baselines  python pretrain/ngram.py      the export and unigram / bigram counts on every val token
                                           -> RUN/baselines.json
  sweep      python finetune/sweep.py      LoRA ranks + full finetuning from the export, one rank twice (2 seeds)
  generate   python finetune/generate.py   base, full and LoRA answers to the held-out instructions
  report     python report/build_report.py report/README.md + report/assets/

The pretraining corpus is WikiText-2 (valid) + the corpus stage's pretrain_text.txt; the tokenizer stage trains on
exactly the files the data stage shards. A stage whose output marker exists is skipped unless ``--redo`` names it
(or ``--redo all``); a redone stage gets its script's overwrite flag. The report is always rebuilt. Every stage's
command, wall time and status go to RUN/pipeline.jsonl, which the report quotes.
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

import fileio

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["bpe", "corpus", "tokenizer", "data", "pretrain", "baselines", "sweep", "generate", "report"]
WIKITEXT = "webtext/wikitext2_valid.txt"


@dataclasses.dataclass
class PipelineConfig:
    """Scale of each stage. The CPU defaults fit 15 minutes of a 2-core machine, set-up included."""
    preset: str = "cpu"
    bpe_vocab_size: int = 1024
    # corpus: one fixed Alpaca subset for every finetuning run; everything else feeds pretraining.
    # Sized by experiment on an earlier 1.35M-parameter base and checked on the current one (report/README.md): 6
    # epochs over 120 records at lr 1e-3 show full finetuning's eval minimum after one epoch and its rise, while
    # LoRA's eval loss still falls; at lr 3e-3 LoRA's turned up too. Examples up to the model's 256-token context
    # (192 cut the end-of-text of the longer answers).
    finetune_examples: int = 160           # records the finetuning uses (train + eval)
    eval_ratio: float = 0.25
    data_seed: int = 0
    heldout: int = 24                      # instructions in no split, for the generations
    # Cap on the Alpaca pretraining text (None: every free record, ~14 MB of responses, ~3.9M tokens with WikiText).
    # Training reads random windows of the whole split (--data_order shuffle), so more text is more variety.
    pretrain_bytes: int | None = None
    own_tokenizer: bool = True             # False: GPT-2's tokenizer (the GPU preset)
    tokenizer_vocab_size: int = 4096
    pretrain_preset: str = "tiny-cpu"
    # tiny-cpu's recipe (pretrain/config.py, chosen by measurement: pretrain/README.md); the step count fills the
    # pretraining share of the 15-minute budget at the ~11k tokens/s of one 2-thread process on an idle 2-core
    # machine: 5.1M tokens, about 1.3 passes over the training split
    pretrain_flags: tuple[str, ...] = (
        "--max_steps", "2500", "--warmup_steps", "100", "--eval_interval", "500", "--val_steps", "100000",
        "--sample_prompt", "The")
    # ~200k val tokens, every one scored at each evaluation; each Alpaca response its own document (end-of-text at
    # its start), so the base model has seen where answers end before finetuning teaches it to end its own
    prepare_flags: tuple[str, ...] = ("--val_fraction", "0.05", "--doc_boundary", "blank_line")
    hellaswag_limit: int = 200
    nproc: int = 1                         # >1: torchrun --nproc_per_node for pretraining
    sweep_ranks: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)
    second_seed: tuple[int, int] = (8, 1234)   # (rank, seed): that rank again with another seed
    sweep_model: str | None = None         # None: the model pretrained above
    sweep_flags: tuple[str, ...] = (
        "--epochs", "6", "--lr", "1e-3", "--train_batch_size", "8", "--eval_batch_size", "20",
        "--max_length", "256", "--evals_per_epoch", "2")
    gen_lora_rank: int = 8
    # 160 new tokens hold 90 % of the held-out reference answers (median 58, 90th percentile 128 tokens)
    gen_flags: tuple[str, ...] = ("--max_new_tokens", "160")
    data_flags: tuple[str, ...] = ()       # prepare.py source; empty: the corpus files
    sweep_parallel_gpus: bool = False      # sweep.py --parallel_gpus: one rank per visible GPU at a time
    sweep_jobs: int = 2                    # sweep.py --jobs (CPU): two 1-thread runs at a time beat one 2-thread run


PRESETS = {
    "cpu": PipelineConfig(),
    # The homework at full scale (see README): build-nanogpt's GPT-2 124M on FineWeb-Edu with GPT-2's tokenizer on 8
    # GPUs, then the sweep on hub `gpt2` over Alpaca with the homework's hyper-parameters, in bf16.
    "gpu": PipelineConfig(
        preset="gpu", finetune_examples=50000, eval_ratio=0.01, own_tokenizer=False, pretrain_bytes=None,
        prepare_flags=(),
        pretrain_preset="gpt2-124m", pretrain_flags=(), hellaswag_limit=-1, nproc=8, sweep_model="gpt2",
        sweep_flags=("--epochs", "2", "--lr", "1e-4", "--train_batch_size", "8", "--eval_batch_size", "8",
                     "--max_length", "512", "--eval_interval", "100", "--dtype", "bfloat16"),
        data_flags=("--hf_dataset", "HuggingFaceFW/fineweb-edu", "--hf_config", "sample-10BT",
                    "--val_fraction", "0.01"),
        sweep_parallel_gpus=True),
    # Every stage at toy size (about a minute on 2 cores): checks the chain and the report, not the findings.
    "smoke": PipelineConfig(
        preset="smoke", finetune_examples=48, heldout=20, pretrain_bytes=200_000, tokenizer_vocab_size=1024,
        pretrain_flags=("--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--block_size", "128", "--seq_len",
                        "64", "--batch_size", "4", "--warmup_steps", "2", "--max_steps", "6", "--eval_interval",
                        "3", "--sample_prompt", "The"),
        hellaswag_limit=20, sweep_ranks=(0, 1, 8),
        sweep_flags=("--epochs", "1", "--lr", "1e-3", "--train_batch_size", "4", "--eval_batch_size", "4",
                     "--max_length", "128", "--eval_interval", "3"),
        gen_flags=("--max_new_tokens", "8")),
}


@dataclasses.dataclass
class Stage:
    argv: list[str]
    marker: Path          # exists once the stage is done
    out: Path             # the folder (or file) the stage writes
    rerun_flags: tuple[str, ...] = ()   # what the script needs to replace an earlier output


def corpus_files(run: Path) -> list[str]:
    """The pretraining text, in the order the data stage reads it: WikiText-2, then the Alpaca responses."""
    return [WIKITEXT, str(run / "corpus/pretrain_text.txt")]


def corpus_flags(cfg: PipelineConfig) -> list[str]:
    """The Alpaca partition, given identically to the corpus stage and to every finetuning run."""
    return ["--max_examples", str(cfg.finetune_examples), "--eval_ratio", str(cfg.eval_ratio),
            "--data_seed", str(cfg.data_seed)]


def tokenizer_stages(cfg: PipelineConfig, run: Path, dd: list[str]) -> dict[str, Stage]:
    py = [sys.executable]
    cap = ["--pretrain_bytes", str(cfg.pretrain_bytes)] if cfg.pretrain_bytes else []
    stages = {
        "bpe": Stage(py + [str(ROOT / "bpe/train.py"), "--vocab_size", str(cfg.bpe_vocab_size),
                           "--out_dir", str(run / "bpe")] + dd, run / "bpe/summary.json", run / "bpe",
                     ("--overwrite",)),
        "corpus": Stage(py + [str(ROOT / "finetune/partition.py"), "--out_dir", str(run / "corpus"), *corpus_flags(cfg),
                              "--heldout", str(cfg.heldout)] + cap + dd, run / "corpus/split.json", run / "corpus",
                        ("--overwrite",)),
    }
    if cfg.own_tokenizer:
        stages["tokenizer"] = Stage(
            py + [str(ROOT / "bpe/train.py"), "--input", *corpus_files(run), "--pattern", "gpt2",
                  "--vocab_size", str(cfg.tokenizer_vocab_size), "--special", "<|endoftext|>",
                  "--out_dir", str(run / "tokenizer")] + dd,
            run / "tokenizer/summary.json", run / "tokenizer", ("--overwrite",))
    return stages


def pretrain_stages(cfg: PipelineConfig, run: Path, dd: list[str]) -> dict[str, Stage]:
    py = [sys.executable]
    source = list(cfg.data_flags) or ["--input", *corpus_files(run)]
    tokenizer = str(run / "tokenizer/tokenizer.json") if cfg.own_tokenizer else "gpt2"
    vocab = ["--vocab_size", str(cfg.tokenizer_vocab_size)] if cfg.own_tokenizer else []
    launcher = py if cfg.nproc == 1 else py + ["-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc}"]
    return {
        "data": Stage(py + [str(ROOT / "pretrain/prepare.py"), *source, "--tokenizer", tokenizer,
                            "--out_dir", str(run / "shards"), *cfg.prepare_flags] + dd,
                      run / "shards/meta.json", run / "shards"),
        "pretrain": Stage(launcher + [str(ROOT / "pretrain/train.py"), "--preset", cfg.pretrain_preset,
                                      "--data", str(run / "shards"), "--out_dir", str(run / "pretrain"),
                                      "--hellaswag_limit", str(cfg.hellaswag_limit), *vocab, *cfg.pretrain_flags]
                          + dd, run / "pretrain/summary.json", run / "pretrain", ("--overwrite",)),
        "baselines": Stage(py + [str(ROOT / "pretrain/ngram.py"), "--data", str(run / "shards"),
                                 "--model", str(run / "pretrain/hf"), "--out", str(run / "baselines.json")] + dd,
                           run / "baselines.json", run / "baselines.json"),
    }


def finetune_stages(cfg: PipelineConfig, run: Path, dd: list[str]) -> dict[str, Stage]:
    py = [sys.executable]
    model = cfg.sweep_model or str(run / "pretrain" / "hf")
    rank, seed = cfg.second_seed
    train_flags = ["--model_name_or_path", model, "--data_path", "alpaca/alpaca_data.json.xz", *corpus_flags(cfg),
                   *cfg.sweep_flags] + dd
    sweep = py + [str(ROOT / "finetune/sweep.py"), "--ranks", *map(str, cfg.sweep_ranks),
                  "--seed_runs", f"{rank}:{seed}", "--output_dir", str(run / "sweep")]
    sweep += ["--parallel_gpus"] if cfg.sweep_parallel_gpus else ["--jobs", str(cfg.sweep_jobs)]
    sweep += ["--"] + train_flags
    gen = py + [str(ROOT / "finetune/generate.py"), "--base", model, "--full", str(run / "sweep/r0/model"),
                "--lora", str(run / f"sweep/r{cfg.gen_lora_rank}/adapter"),
                "--instructions", str(run / "corpus/instructions.jsonl"), *cfg.gen_flags,
                "--output", str(run / "generations.json")] + dd
    return {"sweep": Stage(sweep, run / "sweep/summary.json", run / "sweep", ("--redo",)),
            "generate": Stage(gen, run / "generations.json", run / "generations.json")}


def stage_commands(cfg: PipelineConfig, run: Path, data_dir: str | None, report_dir: Path) -> dict[str, Stage]:
    """{stage: Stage}, in running order; the GPU preset has no tokenizer stage (it uses GPT-2's)."""
    dd = ["--data_dir", data_dir] if data_dir else []
    stages = {**tokenizer_stages(cfg, run, dd), **pretrain_stages(cfg, run, dd), **finetune_stages(cfg, run, dd)}
    stages["report"] = Stage([sys.executable, str(ROOT / "report/build_report.py"), "--run_dir", str(run),
                              "--out_dir", str(report_dir)] + dd, report_dir / "README.md", report_dir)
    return {name: stages[name] for name in STAGES if name in stages}


def pretty(argv: list[str]) -> str:
    """The command as a user would type it from the repository root."""
    return shlex.join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv)


def append_record(log_path: Path, record: dict) -> None:
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_stage(name: str, stage: Stage, redo: bool, log_path: Path, preset: str) -> int:
    """Run one stage (after its overwrite flag when it replaces an earlier output) and record it."""
    argv = stage.argv
    rewrites = name in ("report", "generate", "baselines")  # their scripts replace a single output file themselves
    if not rewrites and stage.out.exists() and (redo or not stage.marker.exists()):
        # an earlier (or partial) output is there: replace it, as told (before a '--' that starts passed-on flags)
        at = argv.index("--") if "--" in argv else len(argv)
        argv = argv[:at] + list(stage.rerun_flags) + argv[at:]
    t0 = time.time()
    rc = subprocess.call(argv, cwd=ROOT)
    seconds = round(time.time() - t0, 1)
    append_record(log_path, {"stage": name, "command": pretty(argv), "seconds": seconds, "returncode": rc,
                             "preset": preset, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                             "load_avg": list(os.getloadavg())})
    print(f"[pipeline] {name}: {seconds} s (exit status {rc})", flush=True)
    return rc


# The run folder holds the stages' outputs (each stage's script applies fileio's rule to its own folder); the
# pipeline only appends to pipeline.jsonl, so any content is accepted, but not a folder of another kind.
RUN_KIND = "pipeline-run"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--run_dir", type=Path, default=None, help="where stage outputs go (default: runs/<preset>)")
    p.add_argument("--report_dir", type=Path, default=None,
                   help="where README.md and assets/ go (default: report/ for the cpu preset, else report/<preset>)")
    p.add_argument("--data_dir", default=None, help="data directory (default: $LLMHW_DATA_DIR)")
    p.add_argument("--only", nargs="+", choices=STAGES, default=None, help="run only these stages")
    p.add_argument("--redo", nargs="+", choices=STAGES + ["all"], default=[], help="redo these stages even if done")
    p.add_argument("--dry_run", action="store_true", help="print the commands and stop (writes nothing)")
    p.add_argument("--setup_seconds", type=float, default=None,
                   help="time the environment set-up took (run_pipeline.sh passes it; recorded as stage 'setup')")
    args = p.parse_args(argv)
    if args.setup_seconds is not None and args.setup_seconds < 0:
        p.error(f"--setup_seconds must be >= 0, got {args.setup_seconds}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = PRESETS[args.preset]
    try:  # a file, a symlink loop, an unwritable place or another kind of output: one line, nothing created
        out = fileio.claim_output_dir(args.run_dir or ROOT / "runs" / cfg.preset, RUN_KIND, ["*"], resume=True,
                                      flag="--run_dir")
    except fileio.OutputError as e:
        print(f"[pipeline] error: {e}", file=sys.stderr)
        return 2
    run = out.path
    report_dir = args.report_dir or (ROOT / "report" if cfg.preset == "cpu" else ROOT / "report" / cfg.preset)
    stages = stage_commands(cfg, run, args.data_dir, report_dir.resolve())
    redo = set(STAGES) if "all" in args.redo else set(args.redo)
    log_path, t_all = run / "pipeline.jsonl", time.time()
    if not args.dry_run:
        out.create()
        if args.setup_seconds is not None:
            append_record(log_path, {"stage": "setup", "command": "bash report/run_pipeline.sh (environment)",
                                     "seconds": round(args.setup_seconds, 1), "returncode": 0, "preset": cfg.preset,
                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_avg": list(os.getloadavg())})
    for name in [s for s in (args.only or STAGES) if s in stages]:
        stage = stages[name]
        # The report is rebuilt every time (seconds): its committed README must never mark it done.
        if stage.marker.exists() and name not in redo and name != "report":
            print(f"[pipeline] {name}: done already ({os.path.relpath(stage.marker, ROOT)}); --redo {name} to rerun")
            continue
        print(f"\n[pipeline] ===== {name}: {pretty(stage.argv)}", flush=True)
        if args.dry_run:
            continue
        rc = run_stage(name, stage, name in redo, log_path, cfg.preset)
        if rc != 0:
            print(f"[pipeline] stage '{name}' failed with exit code {rc}; command: {pretty(stage.argv)}",
                  file=sys.stderr)
            return rc
    if not args.dry_run:
        print(f"\n[pipeline] finished in {time.time() - t_all:.0f} s; report: "
              f"{os.path.relpath(stages['report'].marker, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
