"""pipeline.py: stages skip when their marker exists, --redo reruns them, a failing stage stops the run with its
exit code and is recorded in pipeline.jsonl."""
import json
import sys

import pytest

import pipeline


def fake_commands(run, script_by_stage):
    def commands(cfg, run_, data_dir, report_dir):
        return {s: ([sys.executable, "-c", script_by_stage.get(s, f"open(r'{run}/{s}.done','w').write('x')")],
                    run / f"{s}.done") for s in pipeline.STAGES}
    return commands


def test_stages_run_once_then_skip_then_redo(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(pipeline, "stage_commands", fake_commands(run, {}))
    assert pipeline.main(["--run_dir", str(run)]) == 0
    rows = [json.loads(l) for l in (run / "pipeline.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == pipeline.STAGES and all(r["returncode"] == 0 for r in rows)
    assert pipeline.main(["--run_dir", str(run)]) == 0
    assert capsys.readouterr().out.count("done already") == len(pipeline.STAGES) - 1  # the report always rebuilds
    assert pipeline.main(["--run_dir", str(run), "--redo", "sweep"]) == 0
    rows = [json.loads(l) for l in (run / "pipeline.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows[len(pipeline.STAGES):]] == ["report", "sweep", "report"]


def test_failing_stage_stops_the_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(pipeline, "stage_commands", fake_commands(run, {"pretrain": "import sys; sys.exit(3)"}))
    assert pipeline.main(["--run_dir", str(run)]) == 3
    rows = [json.loads(l) for l in (run / "pipeline.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["bpe", "data", "pretrain"] and rows[-1]["returncode"] == 3


def test_real_commands_use_each_folder_script_and_data_dir(tmp_path):
    cmds = pipeline.stage_commands(pipeline.PipelineConfig(), tmp_path, "/data", tmp_path / "rep")
    for stage, script in [("bpe", "bpe/train.py"), ("data", "pretrain/prepare.py"), ("pretrain", "pretrain/train.py"),
                          ("sweep", "finetune/sweep.py"), ("generate", "finetune/generate.py"),
                          ("report", "report/build_report.py")]:
        argv, _ = cmds[stage]
        assert any(a.endswith(script) for a in argv) and "/data" in argv
    gpu = pipeline.stage_commands(pipeline.PRESETS["gpu"], tmp_path, None, tmp_path)
    assert "--nproc_per_node=8" in gpu["pretrain"][0]
    # the GPU preset pretrains on FineWeb-Edu (not Tiny Shakespeare) and spreads the sweep over the GPUs
    assert "HuggingFaceFW/fineweb-edu" in gpu["data"][0] and "tinyshakespeare.txt" not in gpu["data"][0]
    assert "--parallel_gpus" in gpu["sweep"][0]


def test_dry_run_writes_nothing_and_zero_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert pipeline.main(["--run_dir", str(run), "--dry_run"]) == 0
    assert not run.exists() and "finished" not in capsys.readouterr().out
    for flag in ("--sweep_steps", "--sweep_examples", "--pretrain_steps", "--nproc"):
        with pytest.raises(SystemExit):
            pipeline.main(["--run_dir", str(run), "--dry_run", flag, "0"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        pipeline.main(["--run_dir", str(run), "--dry_run", "--hellaswag_limit", "-2"])
    assert "(-1: all, 0: none)" in capsys.readouterr().err
