"""Build report/README.md and report/assets/ from a pipeline run's files: report/template.md with every ``$slot``
filled by report/sections.py (verdicts: report/findings.py). Imports nothing from bpe/, pretrain/ or finetune/.

  python report/build_report.py --run_dir runs/cpu --out_dir report

A missing or misshapen run file is one line naming it and the stage that writes it. README.md and assets/ are built
aside and swapped in, so a failure leaves the previous report whole; only a report built here is replaced.
"""
import argparse
import json
import os
import statistics
import string
import sys
import time
import traceback
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

import fileio
import pipeline
import sections
from findings import series
from questions import FileTokenizer, examples, gpt2_encoding
from sections import ReportInputError, read_json

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().parent / "template.md"
ASSETS_KIND, ASSET_NAMES = "report-assets", ["*.png", "*.json"]  # what assets/ may hold (fileio's folder rule)
# The JSON objects the report reads: key -> (file under RUN, the pipeline stage that writes it)
RUN_OBJECTS = {"bpe": ("bpe/summary.json", "bpe"), "bpe_tokenizer": ("bpe/tokenizer.json", "bpe"),
               "split": ("corpus/split.json", "corpus"),
               "tokenizer": ("tokenizer/summary.json", "tokenizer"), "meta": ("shards/meta.json", "data"),
               "pretrain": ("pretrain/summary.json", "pretrain"), "baselines": ("baselines.json", "baselines"),
               "gens": ("generations.json", "generate")}


def read_run(run: Path) -> dict:
    """Every run file the report reads, each checked for its shape."""
    if run.exists() and not run.is_dir():
        raise ReportInputError(f"--run_dir {run}: is a file, not a pipeline run folder")
    f = {key: read_json(run / name, stage) for key, (name, stage) in RUN_OBJECTS.items()
         if key != "tokenizer" or (run / name).exists()}   # the GPU preset uses GPT-2's tokenizer
    f["log"] = read_json(run / "pretrain/log.jsonl", "pretrain", "val_loss")
    f["sweep"] = sections.load_sweep(run)
    log = run / "pipeline.jsonl"
    f["cmds"] = {r["stage"]: r for r in (read_json(log, "any", "stage") if log.is_file() else [])
                 if r.get("returncode") == 0}   # the latest successful record of each stage
    return f


def render(template: str, values: dict[str, str]) -> str:
    """Fill every slot; a slot without a value, or a value without a slot, is an error (no silent blanks)."""
    slots = set(string.Template(template).get_identifiers())   # every $slot / ${slot}
    missing, unused = slots - set(values), set(values) - slots
    if missing or unused:
        raise ReportInputError(f"template slots without values: {sorted(missing)}; values without slots: "
                               f"{sorted(unused)}")
    return string.Template(template).substitute(values)   # each value as str()


def report_values(run: Path, data_dir=None, t0: float | None = None) -> tuple[dict[str, str], dict]:
    """(slot values, data for assets/): every number of the report, computed from the run's files."""
    f = read_run(run)
    values, verdicts = sections.finetune_values(f["sweep"], f["gens"], f["cmds"])
    # the GPU preset's stage commands as a user types them (the same builder the pipeline runs)
    gpu = pipeline.stage_commands(pipeline.PRESETS["gpu"], ROOT / "runs/gpu", None, ROOT / "report/gpu")
    gpu_commands = "\n".join(pipeline.pretty(["python", *s.argv[1:]]) for name, s in gpu.items() if name != "report")
    values.update(sections.header_values(run, f["cmds"], t0, ROOT), **sections.bpe_values(f["bpe"], f["cmds"]),
                  **sections.corpus_values(f), **sections.pretrain_values(f, f["cmds"]),
                  **sections.generation_values(f["gens"], f["cmds"]),
                  **examples(FileTokenizer(run / "bpe/tokenizer.json"), gpt2_encoding(data_dir)),
                  gpu_commands=gpu_commands)
    return values, {"findings": verdicts, **f}


# -- figures ----------------------------------------------------------------------------------------------------------

def save(path: Path, ax) -> None:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.figure.savefig(path, dpi=110, bbox_inches="tight")


def smooth(values: list[float], width: int) -> list[float]:
    """Trailing mean over ``width`` points (per-step train loss jumps with each batch's examples)."""
    return [statistics.fmean(values[max(0, i - width + 1):i + 1]) for i in range(len(values))]


def plot_sweep(runs: dict[str, sections.Run], path: Path) -> None:
    """Train (left) and eval (right) loss of every run; full finetuning red, a second-seed run dashed."""
    a, b = Figure(figsize=(12, 4.2)).subplots(1, 2, sharey=True)
    for k, (label, r) in enumerate(runs.items()):
        style = dict(color="crimson", lw=2) if r.rank == 0 else dict(color=colormaps["viridis"](k / len(runs)))
        style["ls"] = "--" if "seed" in label else "-"
        s, v = series(r.rows, "train_loss")
        a.plot(s, smooth(v, 8), label=label, alpha=0.8, **{"lw": 1.2, **style})
        b.plot(*series(r.rows, "eval_loss"), marker="o", ms=3, label=label, **style)
    a.set(title="train loss (mean of the last 8 steps)", xlabel="step", ylabel="loss (nats)")
    b.set(title="eval loss", xlabel="step")
    a.figure.suptitle("LoRA ranks vs full finetuning on one fixed Alpaca subset")
    a.grid(alpha=0.3)
    save(path, b)


def write_assets(folder: Path, assets: dict) -> None:
    """The three figures, findings.json and generations.json into ``folder``."""
    # pretraining: train and validation loss, the 2-gram and the best count model as dashed lines
    ax = Figure(figsize=(7, 4)).subplots()
    ax.plot(*series(assets["log"], "loss"), lw=0.8, alpha=0.6, label="train")
    ax.plot(*series(assets["log"], "val_loss"), "o-", label="validation")
    best, counts = sections.best_count_model(assets["baselines"])
    for name, color in zip(dict.fromkeys(["2-gram", best]), ("tab:gray", "tab:green")):
        ax.axhline(counts[name], ls="--", color=color, lw=1.2, label=f"{name} counts: {counts[name]:.2f}")
    ax.set(xlabel="step", ylabel="cross-entropy loss (nats)", title="Pretraining loss")
    save(folder / "pretrain_loss.png", ax)
    plot_sweep(assets["sweep"], folder / "sweep_curves.png")
    # the homework's Figure 6: full finetuning's train and eval loss, the eval minimum marked
    full, rows = assets["findings"]["full_overfits"], assets["sweep"]["full finetuning"].rows
    ax = Figure(figsize=(7, 4)).subplots()
    s, v = series(rows, "train_loss")
    ax.plot(s, v, lw=0.6, alpha=0.35, color="tab:blue")
    ax.plot(s, smooth(v, 8), lw=1.5, color="tab:blue", label="train loss (mean of the last 8 steps)")
    ax.plot(*series(rows, "eval_loss"), "o-", color="crimson", label="eval loss")
    ax.plot([full["min_step"]], [full["min_eval"]], "k*", ms=12, label=f"eval minimum (step {full['min_step']})")
    ax.set(xlabel="step", ylabel="loss (nats)", title="Full finetuning")
    save(folder / "full_finetuning.png", ax)
    (folder / "findings.json").write_text(json.dumps(assets["findings"], indent=1, default=str) + "\n")
    (folder / "generations.json").write_text(json.dumps(assets["gens"], indent=1, ensure_ascii=False) + "\n")


# -- the build --------------------------------------------------------------------------------------------------------

def claim_report_dir(out_dir: Path) -> None:
    """Refuse a folder whose assets/ is not a report's, or whose README.md has no such assets/ beside it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise fileio.OutputError(f"--out_dir {out_dir}: is a file, but an output folder is needed here")
    assets = fileio.claim_output_dir(out_dir / "assets", ASSETS_KIND, ASSET_NAMES, overwrite=True, flag="--out_dir")
    if (out_dir / "README.md").exists() and not assets.earlier:
        raise fileio.OutputError(f"--out_dir {out_dir}: holds a README.md but no report assets/, so it is not a "
                                 "report built here; choose another folder (nothing was replaced)")


def build(run: Path, out_dir: Path, data_dir=None) -> Path:
    t0 = time.time()
    claim_report_dir(out_dir)   # before any work: a refused folder costs nothing
    values, assets = report_values(run, data_dir, t0)
    text = render(TEMPLATE.read_text(), values)   # all text first: a template error leaves the old report whole
    # README.md is written aside and synced before the figures are swapped in, so a full disk or a failure while
    # drawing leaves the old set whole; the renames at the end (assets, then README) allocate nothing.
    with fileio.atomic_write(out_dir / "README.md", "w") as readme:
        readme.write(text)
        readme.flush()
        os.fsync(readme.fileno())
        with fileio.atomic_dir(out_dir / "assets", ASSETS_KIND) as tmp:
            write_assets(Path(tmp), assets)
    return out_dir / "README.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", type=Path, default=ROOT / "runs" / "cpu")
    p.add_argument("--out_dir", type=Path, default=ROOT / "report")
    p.add_argument("--data_dir", default=None)
    args = p.parse_args(argv)
    try:
        path = build(args.run_dir.resolve(), args.out_dir.resolve(), args.data_dir)
    except (RuntimeError, OSError) as e:  # ReportInputError, fileio's OutputError, DataFileNotFound; a symlink loop
        print(f"build_report: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError, IndexError) as e:  # a run file with a field missing or mistyped
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"build_report: a file of --run_dir {args.run_dir} lacks a field or has one of another type "
              f"({type(e).__name__}: {e}, read at {Path(where.filename).name}:{where.lineno}); rerun the stage that "
              "wrote it", file=sys.stderr)
        return 2
    print(f"report written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
