"""pipeline.py: the stages are chained through their files (the corpus feeds the tokenizer and the shards, the
tokenizer feeds the shards, the partition flags reach every finetuning run), stages skip when done, --redo reruns
them into a temporary sibling swapped in when they succeed, a failing stage stops the run, --dry_run writes nothing."""
import json
import sys
from pathlib import Path

import pytest

import pipeline


def flag(argv: list[str], name: str) -> list[str]:
    """The values after ``name`` up to the next flag."""
    i = argv.index(name) + 1
    out = []
    while i < len(argv) and not argv[i].startswith("--"):
        out.append(argv[i])
        i += 1
    return out


def test_cpu_stages_are_chained_through_their_files(tmp_path):
    stages = pipeline.stage_commands(pipeline.PRESETS["cpu"], tmp_path, "/data", tmp_path / "rep")
    assert list(stages) == pipeline.STAGES
    corpus, tokenizer, data = stages["corpus"].argv, stages["tokenizer"].argv, stages["data"].argv
    text = str(Path(flag(corpus, "--out_dir")[0]) / "pretrain_text.txt")
    # the corpus stage's text is an input of both the tokenizer and the data stage, with the same files in order
    assert flag(tokenizer, "--input") == flag(data, "--input") == [pipeline.WIKITEXT, text]
    # the tokenizer stage's output is the data stage's --tokenizer; the shards are the pretraining data
    assert flag(data, "--tokenizer") == [str(Path(flag(tokenizer, "--out_dir")[0]) / "tokenizer.json")]
    assert flag(tokenizer, "--pattern") == ["gpt2"] and flag(tokenizer, "--special") == ["<|endoftext|>"]
    pre = stages["pretrain"].argv
    assert flag(pre, "--data") == flag(data, "--out_dir")
    assert flag(pre, "--vocab_size") == flag(tokenizer, "--vocab_size")
    # finetuning starts from the export and uses the corpus stage's partition: same subset, ratio and seed
    sweep, gen = stages["sweep"].argv, stages["generate"].argv
    assert flag(sweep, "--model_name_or_path") == [str(Path(flag(pre, "--out_dir")[0]) / "hf")]
    for name in ("--max_examples", "--eval_ratio", "--data_seed"):
        assert flag(sweep, name) == flag(corpus, name)
    assert "--max_steps" not in sweep and flag(sweep, "--epochs")      # whole epochs, not a step cut
    assert flag(sweep, "--ranks") == ["0", "1", "2", "4", "8", "16", "32"] and flag(sweep, "--seed_runs") == ["8:1234"]
    assert flag(gen, "--instructions") == [str(Path(flag(corpus, "--out_dir")[0]) / "instructions.jsonl")]
    assert flag(gen, "--base") == flag(sweep, "--model_name_or_path")
    assert flag(gen, "--lora") == [str(Path(flag(sweep, "--out_dir")[0]) / "r8/adapter")]
    assert flag(stages["baselines"].argv, "--orders") == ["1", "2", "3", "4", "5"]
    assert "--batch_size" in sweep and "--train_batch_size" not in sweep
    assert int(flag(corpus, "--heldout")[0]) >= 20
    for name, stage in stages.items():
        assert "/data" in stage.argv, name


def test_gpu_preset_keeps_build_nanogpt_setup(tmp_path):
    stages = pipeline.stage_commands(pipeline.PRESETS["gpu"], tmp_path, None, tmp_path)
    assert "tokenizer" not in stages
    assert "--nproc_per_node=8" in stages["pretrain"].argv and flag(stages["data"].argv, "--tokenizer") == ["gpt2"]
    assert "HuggingFaceFW/fineweb-edu" in stages["data"].argv and "--parallel_gpus" in stages["sweep"].argv
    assert flag(stages["sweep"].argv, "--model_name_or_path") == ["gpt2"]
    assert flag(stages["sweep"].argv, "--dtype") == ["bfloat16"]


# Stand-ins for the stages' scripts: argv[1] is the output (a folder with its marker, or a JSON file with its kind)
FOLDER_STAGE = ("import json, pathlib, sys, time; out = pathlib.Path(sys.argv[1]); out.mkdir(exist_ok=True); "
                "(out / '.llmhw-output').write_text(json.dumps({'kind': 'fake'})); "
                "(out / 'summary.json').write_text(str(time.time_ns())); (out / 'r0.log').write_text(sys.argv[2])")
FILE_STAGE = "import json, sys, time; open(sys.argv[1], 'w').write(json.dumps({'kind': 'fake', 't': time.time_ns()}))"


def fake_stages(run: Path, scripts: dict[str, str]):
    """stage_commands for stages that run ``scripts[stage]`` (default: write a folder, or baselines.json)."""
    def commands(cfg, run_, data_dir, report_dir):
        out = {}
        for s in pipeline.STAGES:
            path = run / ("baselines.json" if s == "baselines" else s)
            code = scripts.get(s, FILE_STAGE if path.suffix else FOLDER_STAGE)
            out[s] = pipeline.Stage([sys.executable, "-c", code, str(path), "x"], path)
        return out
    return commands


def test_stages_run_once_then_skip_then_redo_into_a_swapped_in_folder(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(pipeline, "stage_commands", fake_stages(run, {}))
    assert pipeline.main(["--run_dir", str(run), "--setup_seconds", "95"]) == 0
    rows = [json.loads(line) for line in (run / "pipeline.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["setup"] + pipeline.STAGES and rows[0]["seconds"] == 95
    assert all(r["returncode"] == 0 and len(r["load_avg"]) == 3 for r in rows)
    # each stage ran into a temporary sibling that replaced its output; the record names the real output
    assert rows[7]["command"].endswith(f"{run / 'sweep'} x") and (run / "sweep/r0.log").read_text() == "x"
    assert json.loads((run / "baselines.json").read_text())["kind"] == "fake"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert pipeline.main(["--run_dir", str(run)]) == 0
    assert capsys.readouterr().out.count("done already") == len(pipeline.STAGES) - 1  # the report always rebuilds
    before = {name: (run / name).read_text() for name in ("sweep/summary.json", "baselines.json")}
    assert pipeline.main(["--run_dir", str(run), "--redo", "sweep", "baselines"]) == 0
    rows = [json.loads(line) for line in (run / "pipeline.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows[len(pipeline.STAGES) + 1:]] == ["report", "baselines", "sweep", "report"]
    assert all((run / name).read_text() != text for name, text in before.items())   # replaced by the new outputs
    assert sorted(p.name for p in (run / "sweep").iterdir()) == [".llmhw-output", "r0.log", "summary.json"]


def test_failing_stage_stops_the_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(pipeline, "stage_commands", fake_stages(run, {"pretrain": "import sys; sys.exit(3)"}))
    assert pipeline.main(["--run_dir", str(run)]) == 3
    rows = [json.loads(line) for line in (run / "pipeline.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["bpe", "corpus", "tokenizer", "data", "pretrain"]
    assert rows[-1]["returncode"] == 3 and not (run / "pretrain").exists()


def test_dry_run_writes_nothing_and_prints_every_stage(tmp_path, capsys):
    run, rep = tmp_path / "run", tmp_path / "rep"
    assert pipeline.main(["--run_dir", str(run), "--report_dir", str(rep), "--dry_run", "--setup_seconds", "3"]) == 0
    out = capsys.readouterr().out
    assert not run.exists() and not rep.exists() and list(tmp_path.iterdir()) == [] and "finished" not in out
    for name in pipeline.STAGES:
        assert f"===== {name}: " in out
    assert "bpe/train.py --input webtext/wikitext2_valid.txt" in out
    with pytest.raises(SystemExit):
        pipeline.main(["--run_dir", str(run), "--dry_run", "--setup_seconds", "-1"])
