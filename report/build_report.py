"""Build report/README.md (and report/assets/) from the files a pipeline run wrote.

The text is report/template.md; ``report_values`` computes every one of its ``$slot`` values (one small function per
section, the findings from report/findings.py) and ``render`` fills it, refusing a slot left unfilled. Reads only files
(report/ imports nothing from bpe/, pretrain/ or finetune/):

  RUN/pipeline.jsonl                               the command, wall time and load of every stage
  RUN/bpe/summary.json, RUN/bpe/tokenizer.json     the homework's BPE tokenizer and its comparison
  RUN/corpus/split.json                            the Alpaca partition (finetuning subset, held-out, pretraining)
  RUN/tokenizer/summary.json, RUN/shards/meta.json the pretraining tokenizer and shards
  RUN/pretrain/log.jsonl, RUN/pretrain/summary.json
  RUN/sweep/*/log.jsonl, summary.json, config.json every finetuning run (rank, seed)
  RUN/generations.json                             base, full and LoRA answers to the held-out instructions

Outputs are built aside: the figures, findings.json and generations.json go to a temporary folder that replaces
report/assets/ in one step (fileio.atomic_dir), then README.md is replaced atomically; a failure anywhere before leaves
the previous report whole. A missing input is one clear line naming the file and the stage that writes it; so is a
run file of the wrong shape (``check_run_files``). Only a report is ever replaced (``claim_report_dir``: fileio's
folder rule; assets/ carries the hidden marker naming it), and a refused build creates no folder.
"""
from __future__ import annotations

import argparse
import json
import os
import string
import sys
import time
import traceback
from pathlib import Path

import datadir
import figures
import sections
from fileio import OutputError, atomic_dir, atomic_write, claim_output_dir
from questions import FileTokenizer, TiktokenGPT2, question_values
from sections import ReportInputError, read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().parent / "template.md"


def template_slots(text: str) -> set[str]:
    """The names of every $slot / ${slot} in a template."""
    return {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)
            if m.group("named") or m.group("braced")}


def render(template: str, values: dict[str, str]) -> str:
    """Fill every slot; a slot without a value, or a value without a slot, is an error (no silent blanks)."""
    slots = template_slots(template)
    missing, unused = slots - set(values), set(values) - slots
    if missing or unused:
        raise ReportInputError(f"template slots without values: {sorted(missing)}; values without slots: "
                               f"{sorted(unused)}")
    return string.Template(template).substitute({k: str(v) for k, v in values.items()})


def gpu_commands() -> list[str]:
    """The GPU preset's stage commands as a user types them (the same builder the pipeline runs)."""
    import pipeline

    stages = pipeline.stage_commands(pipeline.PRESETS["gpu"], ROOT / "runs/gpu", None, ROOT / "report/gpu")
    return [pipeline.pretty(["python", *s.argv[1:]]) for name, s in stages.items() if name != "report"]


def report_values(run: Path, data_dir=None, t0: float | None = None) -> tuple[dict[str, str], dict]:
    """(slot values, data for assets/): every number of the report, computed from the run's files."""
    cmds = sections.commands_of(read_jsonl(run / "pipeline.jsonl", "any") if (run / "pipeline.jsonl").is_file()
                                else [])
    tok_path = run / "bpe/tokenizer.json"
    if not tok_path.is_file():
        raise ReportInputError(f"missing {tok_path} (written by pipeline stage 'bpe')")
    sweep = sections.load_sweep(run)
    gens = read_json(run / "generations.json", "generate")
    values, verdicts = sections.finetune_values(run, cmds, sweep, gens)
    values.update(sections.header_values(run, cmds, t0, ROOT))
    values.update(sections.bpe_values(run, cmds))
    values.update(sections.corpus_values(run))
    values.update(sections.pretrain_values(run, cmds))
    values.update(sections.generation_values(gens, cmds))
    values.update(question_values(FileTokenizer(tok_path), TiktokenGPT2(data_dir)))
    values.update(sections.gpu_values(values["scale"], gpu_commands()))
    assets = {"findings": verdicts, "generations": gens, "sweep": sweep}
    return values, assets


def write_assets(folder: Path, run: Path, assets: dict) -> None:
    """Figures + findings.json + generations.json into ``folder`` (a temporary folder of atomic_dir)."""
    rows = read_jsonl(run / "pretrain/log.jsonl", "pretrain")
    figures.plot_pretrain(rows, folder / "pretrain_loss.png", "Pretraining loss",
                          read_json(run / "baselines.json", "baselines")["baselines"])
    figures.plot_sweep({label: r.rows for label, r in assets["sweep"].items()}, folder / "sweep_curves.png")
    full = assets["findings"]["full_overfits"]
    figures.plot_full(sections.full_run(assets["sweep"]).rows, folder / "full_finetuning.png", full["min_step"],
                      full["min_eval"])
    (folder / "findings.json").write_text(json.dumps(assets["findings"], indent=1, default=str) + "\n")
    (folder / "generations.json").write_text(json.dumps(assets["generations"], indent=1, ensure_ascii=False) + "\n")


# Every JSON object and log the report reads (besides the sweep's), with the pipeline stage that writes it; a log
# must hold at least one row with its evaluation key (an empty figure is never drawn).
RUN_OBJECTS = {"bpe/summary.json": "bpe", "corpus/split.json": "corpus", "tokenizer/summary.json": "tokenizer",
               "shards/meta.json": "data", "pretrain/summary.json": "pretrain", "baselines.json": "baselines",
               "generations.json": "generate"}
RUN_LOGS = {"pretrain/log.jsonl": ("pretrain", "val_loss")}
SWEEP_FILES = {"summary.json": None, "config.json": None, "log.jsonl": "eval_loss"}
ASSETS_KIND, ASSET_NAMES = "report-assets", ["*.png", "*.json"]  # what assets/ may hold (fileio's folder rule)


def check_object(path: Path, stage: str) -> None:
    """A run file that exists must be a non-empty JSON object (read_json names a missing or unparsable one)."""
    if not path.is_file():
        return
    obj = read_json(path, stage)
    if not isinstance(obj, dict) or not obj:
        what = "an empty object" if obj == {} else f"a JSON {type(obj).__name__}"
        raise ReportInputError(f"{path}: holds {what}, not the object pipeline stage '{stage}' writes; rerun it "
                               f"(python report/pipeline.py --redo {stage})")


def check_log(path: Path, stage: str, eval_key: str) -> None:
    """log.jsonl: UTF-8 text, one JSON object per line, and at least one evaluation row (else the figure is empty)."""
    if not path.is_file():
        return
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReportInputError(f"{path}: not a text log (binary at byte {e.start}); rerun pipeline stage "
                               f"'{stage}'") from None
    rows = read_jsonl(path, stage)
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad is not None or not any(eval_key in r for r in rows):
        why = f"record {bad} is not an object" if bad else ("is empty" if not rows else f"has no {eval_key} row")
        raise ReportInputError(f"{path}: {why}, so there is nothing to report; rerun pipeline stage '{stage}'")


def check_run_files(run: Path) -> None:
    """Refuse, before any work, a run file of the wrong shape: one line naming it instead of a traceback later."""
    if run.exists() and not run.is_dir():
        raise ReportInputError(f"--run_dir {run}: is a file, not a pipeline run folder")
    for name, stage in RUN_OBJECTS.items():
        check_object(run / name, stage)
    for name, (stage, key) in RUN_LOGS.items():
        check_log(run / name, stage, key)
    for d in sorted((run / "sweep").glob("*")) if (run / "sweep").is_dir() else []:
        if (d / "summary.json").is_file():
            for name, key in SWEEP_FILES.items():
                check_log(d / name, "sweep", key) if key else check_object(d / name, "sweep")


def claim_report_dir(out_dir: Path) -> None:
    """fileio's folder rule for what a build replaces: assets/ only when it holds nothing but a report's figures and
    JSON files, README.md only beside such an assets/ (a user's README.md is never replaced). Creates nothing."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out_dir {out_dir}: is a file, but an output folder is needed here")
    assets = claim_output_dir(out_dir / "assets", ASSETS_KIND, ASSET_NAMES, overwrite=True, flag="--out_dir")
    if (out_dir / "README.md").exists() and not assets.earlier:
        raise OutputError(f"--out_dir {out_dir}: holds a README.md but no report assets/, so it is not a report built "
                          "here; choose another folder (nothing was replaced)")


def build(run: Path, out_dir: Path, data_dir=None) -> Path:
    t0 = time.time()
    check_run_files(run)
    claim_report_dir(out_dir)
    values, assets = report_values(run, data_dir, t0)
    text = render(TEMPLATE.read_text(), values)   # all text first: a template error leaves the old report whole
    # README.md is written aside and synced before the figures are swapped in, so a full disk or a failure while
    # drawing leaves the old set whole; the two renames at the end (assets, then README) allocate nothing.
    with atomic_write(out_dir / "README.md", "w") as readme:
        readme.write(text)
        readme.flush()
        os.fsync(readme.fileno())
        with atomic_dir(out_dir / "assets", ASSETS_KIND) as tmp:
            write_assets(Path(tmp), run, assets)
    return out_dir / "README.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", type=Path, default=ROOT / "runs" / "cpu")
    p.add_argument("--out_dir", type=Path, default=ROOT / "report")
    p.add_argument("--data_dir", default=None)
    args = p.parse_args(argv)
    try:
        run, out_dir = args.run_dir.resolve(), args.out_dir.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11 reports a symlink loop as RuntimeError
        print(f"build_report: {e}", file=sys.stderr)
        return 2
    try:
        path = build(run, out_dir, args.data_dir)
    except (ReportInputError, datadir.DataFileNotFound, OutputError) as e:
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
