"""Faults while the report is written: a full disk, a failure while drawing, a kill at the folder swap. The earlier
report (README.md + assets/) must survive whole, no temp file may stay behind, and the next start gives one line or
recovers."""
import errno
import os

import pytest

import build_report as br
import fileio
from test_build_report import fake_run


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
    """Every file under the report folder (hidden temp files included) with its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["drawing", "readme"])
def test_full_disk_is_one_line_and_keeps_the_old_report(old_report, monkeypatch, capsys, where):
    new_run, out, before = old_report
    if where == "drawing":
        monkeypatch.setattr(br.figures, "plot_sweep", disk_full)
    else:
        monkeypatch.setattr(br.os, "fsync", disk_full)
    assert br.main(["--run_dir", str(new_run), "--out_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no space left" in err and "MiB free" in err
    assert snapshot(out) == before


def test_kill_at_the_swap_keeps_the_old_report(old_report, monkeypatch):
    new_run, out, before = old_report

    def killed(a, b):
        raise KeyboardInterrupt  # what a Ctrl-C or a kill looks like inside Python
    monkeypatch.setattr(fileio, "_exchange", killed)
    with pytest.raises(KeyboardInterrupt):
        br.build(new_run, out)
    assert snapshot(out) == before


def test_kill_between_the_two_renames_is_recovered_at_the_next_start(old_report, monkeypatch):
    # Where the one-step exchange is missing, the old folder is moved aside first: a kill right after that leaves
    # no assets/ at the path, and the next start must put the old one back before doing anything else.
    new_run, out, before = old_report
    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".assets.old"):
            real_replace(src, dst)
            raise KeyboardInterrupt
        return real_replace(src, dst)
    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        br.build(new_run, out)
    assert not (out / "assets").exists() and (out / ".assets.old").is_dir()
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    fileio.recover(out / "assets")
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
