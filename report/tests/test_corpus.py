"""The corpus stage, run for real on the data directory: no record of the finetuning eval split (nor a held-out one)
appears in the pretraining text that the pipeline feeds to prepare.py (and to the tokenizer stage).

"Appears" is checked two ways against the real Alpaca file: no eval/held-out response is a paragraph of the text the
data stage reads, and no eval/held-out response of 40 characters or more occurs anywhere inside it (shorter ones such
as "Positive" or "2" occur inside unrelated answers and in WikiText and carry nothing of the record)."""
import dataclasses
import json
import lzma
import os
import subprocess
from pathlib import Path

import pytest

import pipeline

MIN_CHARS = 40


def as_paragraph(text: str) -> str:
    """A response as the pretraining text writes a record: lines right-stripped, empty lines dropped."""
    return "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())


def paragraphs(text: str) -> set[str]:
    return {as_paragraph(p) for p in text.split("\n\n") if p.strip()}


@pytest.fixture(scope="module")
def data_dir() -> Path:
    d = os.environ.get("LLMHW_DATA_DIR")
    if not d or not (Path(d) / "alpaca/alpaca_data.json.xz").is_file():
        pytest.fail(f"LLMHW_DATA_DIR={d!r} does not hold alpaca/alpaca_data.json.xz: this test needs the data "
                    "directory (../shared/data); set LLMHW_DATA_DIR")
    return Path(d)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, data_dir):
    """The pipeline's own corpus command, with a small finetuning subset."""
    run = tmp_path_factory.mktemp("run")
    cfg = dataclasses.replace(pipeline.PRESETS["cpu"], finetune_examples=60, heldout=24)
    stages = pipeline.stage_commands(cfg, run, str(data_dir), run / "report")
    proc = subprocess.run(stages["corpus"].argv, cwd=pipeline.ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run, stages


def test_no_eval_or_heldout_record_in_the_pretraining_text(corpus_run, data_dir):
    run, stages = corpus_run
    split = json.loads((run / "corpus/split.json").read_text())
    records = json.load(lzma.open(data_dir / "alpaca/alpaca_data.json.xz", "rt", encoding="utf-8"))
    assert split["counts"]["train"] + split["counts"]["eval"] == 60 and split["counts"]["heldout"] == 24
    # exactly the files the data stage (prepare.py --input) reads, found as prepare.py finds them
    fed = [Path(p) if Path(p).is_absolute() else data_dir / p for p in
           stages["data"].argv[stages["data"].argv.index("--input") + 1:stages["data"].argv.index("--tokenizer")]]
    assert fed[-1] == run / "corpus/pretrain_text.txt" and all(p.is_file() for p in fed)
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in fed)
    paras = paragraphs(text)
    checked = 0
    for i in split["indices"]["eval"] + split["indices"]["heldout"]:
        out = records[i]["output"].strip()
        assert as_paragraph(out) not in paras, f"record {i}'s response is a pretraining paragraph"
        if len(out) >= MIN_CHARS:
            assert out not in text, f"record {i}'s response occurs in the pretraining text"
            checked += 1
    assert checked >= 10   # the check saw real responses, not only short ones
    # the pretraining text is the unused records' responses: a train response may not be in it as a paragraph either
    for i in split["indices"]["train"]:
        assert as_paragraph(records[i]["output"]) not in paras, f"train record {i}'s response is a paragraph"


def test_heldout_instructions_are_in_no_split(corpus_run):
    run, _ = corpus_run
    split = json.loads((run / "corpus/split.json").read_text())
    lines = [json.loads(line) for line in (run / "corpus/instructions.jsonl").read_text().splitlines()]
    assert [x["index"] for x in lines] == split["indices"]["heldout"] and len(lines) >= 20
    used = set(split["indices"]["train"]) | set(split["indices"]["eval"])
    assert used.isdisjoint(x["index"] for x in lines)
