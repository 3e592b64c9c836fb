"""Faults while the report is written: a full disk, a failure while drawing, a kill at the folder swap. The earlier
report (README.md + assets/) must survive whole, no temp file may stay behind, and the next start gives one line or
recovers. Faults of the pipeline: a failed redo keeps the earlier output, an output that is not ours is never
replaced, a killed pipeline takes its running stage with it."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import build_report as br
import fileio
import pipeline
from test_build_report import fake_run
from test_pipeline import fake_stages


@pytest.fixture
def old_report(tmp_path):
    corpus = tmp_path / "pretrain_text.txt"
    corpus.write_text("The cat sat on the mat.\n\nThe dog sat on the rug.\n")
    fake_run(tmp_path / "old", full_overfits=True, corpus_file=corpus)
    fake_run(tmp_path / "new", full_overfits=False, corpus_file=corpus)   # a report that reads differently
    out = tmp_path / "out"
    br.build(tmp_path / "old", out)
    return tmp_path / "new", out, snapshot(out)


def snapshot(out):
    """Every file under the folder (hidden temp files included) with its bytes; not the lock naming its writer."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != fileio.LOCK}


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["drawing", "readme"])
def test_full_disk_is_one_line_and_keeps_the_old_report(old_report, monkeypatch, capsys, where):
    new_run, out, before = old_report
    if where == "drawing":
        monkeypatch.setattr(br, "plot_sweep", disk_full)
    else:
        monkeypatch.setattr(br.os, "fsync", disk_full)
    assert br.main(["--run_dir", str(new_run), "--out_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no space left" in err and "MiB free" in err
    assert snapshot(out) == before


def kill_at_rename(monkeypatch, moves_first: bool):
    """A kill (KeyboardInterrupt, as a Ctrl-C inside Python) at the rename that moves the old assets/ aside: before
    it, or right after it (then no assets/ is at the path until the next start puts the old one back)."""
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".assets.llmhw-old"):
            if moves_first:
                real_replace(src, dst)
            raise KeyboardInterrupt
        return real_replace(src, dst)
    monkeypatch.setattr(fileio.os, "replace", replace)


def test_kill_at_the_swap_keeps_the_old_report(old_report, monkeypatch):
    new_run, out, before = old_report
    kill_at_rename(monkeypatch, moves_first=False)
    with pytest.raises(KeyboardInterrupt):
        br.build(new_run, out)
    assert snapshot(out) == before


def test_kill_between_the_two_renames_is_recovered_at_the_next_start(old_report, monkeypatch):
    new_run, out, before = old_report
    kill_at_rename(monkeypatch, moves_first=True)
    with pytest.raises(KeyboardInterrupt):
        br.build(new_run, out)
    assert not (out / "assets").exists() and (out / ".assets.llmhw-old").is_dir()
    monkeypatch.undo()
    br.claim_report_dir(out)   # what the next build does first
    assert snapshot(out) == before
    br.build(new_run, out)   # and the next build replaces the whole set
    after = snapshot(out)
    assert after["README.md"] != before["README.md"] and not any(k.startswith(".") for k in after)


def test_output_folder_that_is_a_file_is_one_line_before_any_work(old_report, tmp_path, capsys):
    new_run, _, _ = old_report
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert br.main(["--run_dir", str(new_run), "--out_dir", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a file" in err and target.read_text() == "keep me"


def damaged_run(old_report, name, data: bytes):
    new_run, out, before = old_report
    (new_run / name).write_bytes(data)
    return new_run, out, before


def refused(run, out, capsys) -> str:
    assert br.main(["--run_dir", str(run), "--out_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name, data, words", [
    ("pretrain/summary.json", b"[1, 2]", "holds a JSON list, not the object pipeline stage 'pretrain' writes"),
    ("pretrain/summary.json", b"{}", "holds an empty object"),
    ("bpe/summary.json", b'"text"', "holds a JSON str"),
    ("sweep/r8/summary.json", b"[]", "holds a JSON list, not the object pipeline stage 'sweep' writes"),
    ("pretrain/log.jsonl", b"\x80\x04\x95binary\x00", "not a text log (binary at byte 0)"),
    ("pretrain/log.jsonl", b"", "is empty, so there is nothing to report"),
    ("pretrain/log.jsonl", b'{"step": 1, "loss": 5.0}\n', "has no val_loss row"),
    ("pretrain/log.jsonl", b'{"step": 1, "val_loss": 5.0}\n[1]\n', "record 2 is not an object"),
    ("sweep/r8/log.jsonl", b'{"step": 1, "loss": 3.0}\n', "has no eval_loss row"),
])
def test_run_files_of_the_wrong_shape_are_one_line_and_keep_the_old_report(old_report, capsys, name, data, words):
    run, out, before = damaged_run(old_report, name, data)
    err = refused(run, out, capsys)
    assert err.startswith(f"build_report: {run / name}: ") and words in err, err
    assert snapshot(out) == before


def test_a_missing_field_is_one_line(old_report, capsys):
    run, out, before = damaged_run(old_report, "pretrain/summary.json", b'{"steps": 10}')
    err = refused(run, out, capsys)
    assert "lacks a field" in err and "KeyError" in err and snapshot(out) == before


def test_run_dir_that_is_a_file_or_a_loop_is_one_line(old_report, tmp_path, capsys):
    _, out, before = old_report
    (tmp_path / "a_file").write_text("x")
    assert "is a file, not a pipeline run folder" in refused(tmp_path / "a_file", out, capsys)
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    assert "Symlink loop" in refused(tmp_path / "l1", out, capsys) and snapshot(out) == before


def test_pipeline_run_dir_refusals_are_one_line_and_create_nothing(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    other = tmp_path / "pretrain_run"
    other.mkdir()
    (other / fileio.MARKER).write_text(json.dumps({"kind": "pretrain-run"}))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for run_dir, words in ((tmp_path / "a_file", "is a file"), (tmp_path / "a_file" / "run", "cannot write in"),
                           (tmp_path / "l1", "cannot be resolved"), (other, "holds a pretrain-run")):
        assert pipeline.main(["--run_dir", str(run_dir), "--only", "bpe"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("[pipeline] error: --run_dir ") and words in err and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_users_readme_or_assets_are_never_replaced(old_report, tmp_path, capsys):
    new_run, _, _ = old_report
    mine = tmp_path / "mine"
    (mine / "assets").mkdir(parents=True)
    (mine / "README.md").write_text("my notes")
    assert "holds a README.md but no report assets/" in refused(new_run, mine, capsys)
    (mine / "assets" / "diagram.svg").write_text("<svg/>")
    assert "holds files that are not a report-assets's output (diagram.svg)" in refused(new_run, mine, capsys)
    assert (mine / "README.md").read_text() == "my notes" and (mine / "assets" / "diagram.svg").exists()


def test_a_report_folder_is_recognized_by_its_marker_alone(old_report, tmp_path, capsys):
    # a user's README.md and figures, named as a report's are, but without the marker: not ours
    new_run, _, _ = old_report
    mine = tmp_path / "mine"
    (mine / "assets").mkdir(parents=True)
    (mine / "README.md").write_text("my notes")
    (mine / "assets" / "pretrain_loss.png").write_bytes(b"\x89PNG mine")
    mine_before = snapshot(mine)
    assert "holds files that are not a report-assets's output (pretrain_loss.png)" in refused(new_run, mine, capsys)
    assert snapshot(mine) == mine_before and sorted(os.listdir(mine / "assets")) == ["pretrain_loss.png"]


def test_a_refused_build_creates_no_folder(old_report, tmp_path, capsys):
    new_run, _, _ = old_report
    (new_run / "generations.json").unlink()
    refused(new_run, tmp_path / "fresh" / "report", capsys)
    assert not (tmp_path / "fresh").exists()


def test_the_report_set_carries_its_marker_and_leftovers_go(old_report):
    new_run, out, _ = old_report
    assert json.loads((out / "assets" / fileio.MARKER).read_text())["kind"] == "report-assets"
    killed = out / ".assets.llmhw-k1ll3d.tmp"  # what a killed build leaves beside assets/
    killed.mkdir()
    (killed / "half.png").write_bytes(b"\x89PNG")
    br.build(new_run, out)
    assert not killed.exists()


FAILING_SWEEP = ("import pathlib, sys; out = pathlib.Path(sys.argv[1]); out.mkdir(); "
                 "(out / 'r0.log').write_text('the failed run'); sys.exit(1)")


def test_a_failed_redo_keeps_the_earlier_output(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(pipeline, "stage_commands", fake_stages(run, {}))
    assert pipeline.main(["--run_dir", str(run)]) == 0
    before = snapshot(run / "sweep")
    assert set(before) == {".llmhw-output", "summary.json", "r0.log"}
    monkeypatch.setattr(pipeline, "stage_commands", fake_stages(run, {"sweep": FAILING_SWEEP}))
    assert pipeline.main(["--run_dir", str(run), "--only", "sweep", "--redo", "sweep"]) == 1
    assert snapshot(run / "sweep") == before   # summary.json kept, r0.log not overwritten
    assert "unfinished output stays in" in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "stage_commands", fake_stages(run, {}))
    assert pipeline.main(["--run_dir", str(run), "--only", "sweep"]) == 0   # the next start removes the leftover
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")] and snapshot(run / "sweep") == before


def test_a_stage_output_that_is_not_ours_is_never_replaced(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(pipeline, "stage_commands", fake_stages(run, {}))
    assert pipeline.main(["--run_dir", str(run)]) == 0
    (run / "baselines.json").write_text('{"mine": 1}')   # a user's file and folder where the stages write
    (run / "sweep" / fileio.MARKER).unlink()
    sweep = snapshot(run / "sweep")
    for stage, words in (("baselines", "is a file this command did not write"),
                         ("sweep", "holds files that are not a fake's output")):
        assert pipeline.main(["--run_dir", str(run), "--only", stage, "--redo", stage]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert words in err[0] and "[pipeline] error: " in err[0], err
        assert (run / "baselines.json").read_text() == '{"mine": 1}' and snapshot(run / "sweep") == sweep


def test_a_killed_pipeline_takes_its_running_stage_with_it(tmp_path):
    run, here, pid_file = tmp_path / "run", Path(__file__).resolve().parent, tmp_path / "stage.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    driver = (f"import sys; sys.path[:0] = [{str(here.parent)!r}, {str(here)!r}]\n"
              "import pipeline, test_pipeline\n"
              f"pipeline.stage_commands = test_pipeline.fake_stages(pipeline.Path({str(run)!r}),\n"
              f"                                                    {{'bpe': {sleeper!r}}})\n"
              f"pipeline.main(['--run_dir', {str(run)!r}, '--only', 'bpe'])\n")
    parent = subprocess.Popen([sys.executable, "-c", driver])
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False
