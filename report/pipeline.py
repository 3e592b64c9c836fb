"""The main job: run every stage of the homework at CPU scale (or the GPU preset), then build the report.

    python report/pipeline.py [--preset smoke] [--redo STAGE ...]

Each stage is a folder's own script (``stage_commands``; --dry_run prints them), run as a child process; they meet
only through the files under the run folder RUN: bpe (the homework's tokenizer), corpus (the Alpaca partition and the
pretraining text), tokenizer (CPU presets: a BPE of that text), data (its shards), pretrain (a small GPT, exported),
baselines (1- to 5-gram count models beside it), sweep (LoRA ranks and full finetuning), generate (answers to the
held-out instructions), report (report/README.md). A stage whose output exists is skipped unless --redo names it; it
writes aside and is swapped in only when it succeeds. Each stage's command, time and status go to RUN/pipeline.jsonl.
"""
import argparse
import dataclasses
import json
import os
import platform
import re
import shlex
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
    # corpus: one fixed Alpaca subset for every finetuning run, the rest feeds pretraining. Sized by experiment
    # (report/README.md): 6 epochs over 120 records at lr 1e-3 show full finetuning's eval minimum after one epoch and
    # its rise while LoRA's eval loss still falls (at 3e-3 LoRA's turned up too); 256 tokens keep answers' end-of-text.
    finetune_examples: int = 160           # records the finetuning uses (train + eval)
    eval_ratio: float = 0.25
    data_seed: int = 0
    heldout: int = 24                      # instructions in no split, for the generations
    pretrain_bytes: int | None = None      # cap on the Alpaca pretraining text (None: all ~14 MB, more variety)
    own_tokenizer: bool = True             # False: GPT-2's tokenizer (the GPU preset)
    tokenizer_vocab_size: int = 4096
    pretrain_preset: str = "tiny-cpu"
    # tiny-cpu's recipe (chosen by measurement: pretrain/README.md); 1,500 steps fill pretraining's share of the 15
    # minutes on the slower of the measured 2-core machines (AVX2 without native bf16, ~8k tokens/s): 3.1M tokens
    pretrain_flags: tuple[str, ...] = ("--max_steps", "1500", "--warmup_steps", "100", "--eval_interval", "500",
                                       "--val_steps", "100000", "--sample_prompt", "The")
    # ~200k val tokens, every one scored at each evaluation; each Alpaca response its own document (end-of-text at
    # its start), so the base model has seen where answers end before finetuning teaches it to end its own
    prepare_flags: tuple[str, ...] = ("--val_fraction", "0.05", "--doc_boundary", "blank_line")
    hellaswag_limit: int = 200
    nproc: int = 1                         # >1: torchrun --nproc_per_node for pretraining
    sweep_ranks: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)
    second_seed: str = "8:1234"            # RANK:SEED: that rank again with another seed
    sweep_model: str | None = None         # None: the model pretrained above
    sweep_flags: tuple[str, ...] = ("--epochs", "6", "--lr", "1e-3", "--batch_size", "8", "--eval_batch_size", "20",
                                    "--max_length", "256", "--evals_per_epoch", "2")
    gen_lora_rank: int = 8
    # 160 new tokens hold 90 % of the held-out reference answers (median 58, 90th percentile 128 tokens)
    gen_flags: tuple[str, ...] = ("--max_new_tokens", "160")
    data_flags: tuple[str, ...] = ()       # prepare.py source; empty: the corpus files
    # how sweep.py runs its runs: on CPU two 1-thread runs at a time beat one 2-thread run; --parallel_gpus: one per GPU
    sweep_jobs: tuple[str, ...] = ("--jobs", "2")


PRESETS = {
    "cpu": PipelineConfig(),
    # The homework at full scale (see README): build-nanogpt's GPT-2 124M on FineWeb-Edu with GPT-2's tokenizer on 8
    # GPUs, then the sweep on hub `gpt2` over Alpaca with the homework's hyper-parameters, in bf16.
    "gpu": PipelineConfig(
        preset="gpu", finetune_examples=50000, eval_ratio=0.01, own_tokenizer=False, pretrain_preset="gpt2-124m",
        data_flags=("--hf_dataset", "HuggingFaceFW/fineweb-edu", "--hf_config", "sample-10BT", "--val_fraction",
                    "0.01"), prepare_flags=(), pretrain_flags=(), hellaswag_limit=-1, nproc=8, sweep_model="gpt2",
        sweep_flags=("--epochs", "2", "--lr", "1e-4", "--batch_size", "8", "--eval_batch_size", "8",
                     "--max_length", "512", "--eval_interval", "100", "--dtype", "bfloat16"),
        sweep_jobs=("--parallel_gpus",)),
    # Every stage at toy size (about a minute on 2 cores): checks the chain and the report, not the findings.
    "smoke": PipelineConfig(
        preset="smoke", finetune_examples=48, heldout=20, pretrain_bytes=200_000, tokenizer_vocab_size=1024,
        pretrain_flags=("--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--block_size", "128", "--seq_len",
                        "64", "--batch_size", "4", "--warmup_steps", "2", "--max_steps", "6", "--eval_interval",
                        "3", "--sample_prompt", "The"),
        hellaswag_limit=20, sweep_ranks=(0, 1, 8),
        sweep_flags=("--epochs", "1", "--lr", "1e-3", "--batch_size", "4", "--eval_batch_size", "4",
                     "--max_length", "128", "--eval_interval", "3"),
        gen_flags=("--max_new_tokens", "8")),
}


@dataclasses.dataclass
class Stage:
    argv: list[str]
    out: Path             # the folder (or JSON file) the stage writes (its --out_dir / --out); done once it exists


def stage_commands(cfg: PipelineConfig, run: Path, data_dir: str | None, report_dir: Path) -> dict[str, Stage]:
    """{stage: Stage}, in running order; the GPU preset has no tokenizer stage (it uses GPT-2's)."""
    dd = ["--data_dir", data_dir] if data_dir else []

    def stage(script: str, *args, launcher=(sys.executable,)) -> Stage:
        argv = [*launcher, str(ROOT / script), *map(str, args), *dd]
        return Stage(argv, Path(argv[next(i for i, a in enumerate(argv) if a in ("--out_dir", "--out")) + 1]))

    # the Alpaca partition, given identically to the corpus stage and to every finetuning run
    partition = ["--max_examples", cfg.finetune_examples, "--eval_ratio", cfg.eval_ratio, "--data_seed", cfg.data_seed]
    # the pretraining text, in the order the data stage reads it: WikiText-2, then the Alpaca responses
    corpus = [WIKITEXT, run / "corpus/pretrain_text.txt"]
    tokenizer = run / "tokenizer/tokenizer.json" if cfg.own_tokenizer else "gpt2"
    model = cfg.sweep_model or run / "pretrain/hf"
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc}"]
    stages = {
        "bpe": stage("bpe/train.py", "--vocab_size", cfg.bpe_vocab_size, "--out_dir", run / "bpe"),
        "corpus": stage("finetune/partition.py", "--out_dir", run / "corpus", *partition, "--heldout", cfg.heldout,
                        *(["--pretrain_bytes", cfg.pretrain_bytes] if cfg.pretrain_bytes else [])),
        "tokenizer": stage("bpe/train.py", "--input", *corpus, "--pattern", "gpt2", "--vocab_size",
                           cfg.tokenizer_vocab_size, "--special", "<|endoftext|>", "--out_dir", run / "tokenizer"),
        "data": stage("pretrain/prepare.py", *(cfg.data_flags or ["--input", *corpus]), "--tokenizer", tokenizer,
                      "--out_dir", run / "shards", *cfg.prepare_flags),
        "pretrain": stage("pretrain/train.py", "--preset", cfg.pretrain_preset, "--data", run / "shards", "--out_dir",
                          run / "pretrain", "--hellaswag_limit", cfg.hellaswag_limit,
                          *(["--vocab_size", cfg.tokenizer_vocab_size] if cfg.own_tokenizer else []),
                          *cfg.pretrain_flags, launcher=[sys.executable] if cfg.nproc == 1 else torchrun),
        "baselines": stage("pretrain/ngram.py", "--data", run / "shards", "--orders", 1, 2, 3, 4, 5,
                           "--model", run / "pretrain/hf", "--out", run / "baselines.json"),
        # sweep.py passes what follows '--' (with the data directory) to every finetune/train.py run
        "sweep": stage("finetune/sweep.py", "--ranks", *cfg.sweep_ranks, "--seed_runs", cfg.second_seed,
                       "--out_dir", run / "sweep", *cfg.sweep_jobs, "--", "--model_name_or_path", model,
                       "--data_path", "alpaca/alpaca_data.json.xz", *partition, *cfg.sweep_flags),
        "generate": stage("finetune/generate.py", "--base", model, "--full", run / "sweep/r0/model",
                          "--lora", run / f"sweep/r{cfg.gen_lora_rank}/adapter", "--instructions",
                          run / "corpus/instructions.jsonl", *cfg.gen_flags, "--out", run / "generations.json"),
        "report": stage("report/build_report.py", "--run_dir", run, "--out_dir", report_dir),
    }
    return {name: stages[name] for name in STAGES if name != "tokenizer" or cfg.own_tokenizer}


def pretty(argv: list[str]) -> str:
    """The command as a user would type it from the repository root."""
    return shlex.join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv)


def machine() -> str:
    """The CPU the stage times belong to: model, widest vector ISA, native bf16 or not, threads."""
    info = Path("/proc/cpuinfo").read_text().split("\n\n")[0] if Path("/proc/cpuinfo").exists() else ""
    field = dict(re.findall(r"^(.*?)\s*: (.*)$", info, re.M))  # the first CPU's fields
    flags = set(field.get("flags", "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = "native bf16" if flags & {"avx512_bf16", "amx_bf16"} else "no native bf16"
    return (f"{field.get('model name', platform.processor())} (family {field.get('cpu family')}, model "
            f"{field.get('model')}), {isa}, {bf16}, {os.cpu_count()} threads")


def append_record(log_path: Path, preset: str, **record) -> None:
    record.update(preset=preset, time=time.strftime("%Y-%m-%dT%H:%M:%S"), load_avg=list(os.getloadavg()),
                  machine=machine())
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def swap_in(new: Path, out: Path, flag: str) -> None:
    """Put a stage's complete output in place of the earlier one, which must be the same kind of output."""
    if new.is_dir():
        kind = json.loads((new / fileio.MARKER).read_text())["kind"]
        fileio.claim_output_dir(out, kind, ["*"], overwrite=True, flag=flag)
        with fileio.atomic_dir(out, kind) as tmp:   # swapped in whole: the old folder stays until then
            for p in new.iterdir():
                os.replace(p, tmp / p.name)
        new.rmdir()
    else:
        fileio.claim_output_file(out, json.loads(new.read_text()).get("kind"), overwrite=True, flag=flag)
        for p in new.parent.iterdir():  # the JSON file and what its script writes beside it (generate's .md)
            os.replace(p, out.parent / p.name)
        new.parent.rmdir()


def run_stage(name: str, stage: Stage, log_path: Path, preset: str) -> int:
    """Run one stage into a temporary sibling of its output, swapped in on success (the report swaps its own)."""
    argv, t0 = stage.argv, time.time()
    tmp = stage.out.with_name(f".{stage.out.name}-new.llmhw-stage.tmp")  # fileio's temp name: the next claim of
    new = tmp / stage.out.name if stage.out.suffix == ".json" else tmp   # the run folder removes a killed try's
    if name != "report":
        new.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(new) if a == str(stage.out) else a for a in argv]
    rc = fileio.start_child(argv, cwd=ROOT).wait()   # dies with the pipeline
    if rc == 0 and name != "report":
        try:
            swap_in(new, stage.out, f"[stage {name}]")
        except (OSError, ValueError, KeyError, AttributeError) as e:  # fileio's refusal; a stage that wrote no output
            print(f"[pipeline] error: {name}'s new output {new} was not swapped in: {e}", file=sys.stderr)
            rc = 2
    seconds = round(time.time() - t0, 1)
    append_record(log_path, preset, stage=name, command=pretty(stage.argv), seconds=seconds, returncode=rc)
    print(f"[pipeline] {name}: {seconds} s (exit status {rc})", flush=True)
    if rc != 0 and tmp.exists():
        print(f"[pipeline] {name}'s unfinished output stays in {tmp} until the next run", file=sys.stderr)
    return rc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--run_dir", type=Path, default=None, help="where stage outputs go (default: runs/<preset>)")
    p.add_argument("--report_dir", type=Path, help="where README.md and assets/ go (default: report/[<preset>])")
    p.add_argument("--data_dir", default=None, help="data directory (default: $LLMHW_DATA_DIR)")
    p.add_argument("--only", nargs="+", choices=STAGES, default=None, help="run only these stages")
    p.add_argument("--redo", nargs="+", choices=STAGES + ["all"], default=[], help="redo these stages even if done")
    p.add_argument("--dry_run", action="store_true", help="print the commands and stop (writes nothing)")
    p.add_argument("--setup_seconds", type=float, help="the environment set-up's time (run_pipeline.sh passes it)")
    args = p.parse_args(argv)
    if args.setup_seconds is not None and args.setup_seconds < 0:
        p.error(f"--setup_seconds must be >= 0, got {args.setup_seconds}")
    cfg = PRESETS[args.preset]
    run = Path(os.path.abspath(args.run_dir or ROOT / "runs" / cfg.preset))
    if not args.dry_run:
        try:  # a file, a symlink loop, an unwritable place, another kind of output: one line, nothing created
            run = fileio.claim_output_dir(run, "pipeline-run", ["*"], resume=True, flag="--run_dir").create()
        except fileio.OutputError as e:
            print(f"[pipeline] error: {e}", file=sys.stderr)
            return 2
    report_dir = Path(os.path.abspath(args.report_dir or ROOT / "report" / ("" if cfg.preset == "cpu" else cfg.preset)))
    stages = stage_commands(cfg, run, args.data_dir, report_dir)
    redo = set(STAGES) if "all" in args.redo else set(args.redo)
    log_path, t_all = run / "pipeline.jsonl", time.time()
    if args.setup_seconds is not None and not args.dry_run:
        append_record(log_path, cfg.preset, stage="setup", command="bash report/run_pipeline.sh (environment)",
                      seconds=round(args.setup_seconds, 1), returncode=0)
    for name in [s for s in (args.only or STAGES) if s in stages]:
        stage = stages[name]
        if stage.out.exists() and name not in redo and name != "report":   # the report is rebuilt every time
            print(f"[pipeline] {name}: done already ({os.path.relpath(stage.out, ROOT)}); --redo {name} to rerun")
            continue
        print(f"\n[pipeline] ===== {name}: {pretty(stage.argv)}", flush=True)
        if not args.dry_run and (rc := run_stage(name, stage, log_path, cfg.preset)) != 0:
            print(f"[pipeline] stage '{name}' failed with exit code {rc}; command: {pretty(stage.argv)}",
                  file=sys.stderr)
            return rc
    if not args.dry_run:
        print(f"\n[pipeline] finished in {time.time() - t_all:.0f} s; report: "
              f"{os.path.relpath(report_dir / 'README.md', ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
