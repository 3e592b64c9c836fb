"""The output rule (fileio.claim_output_dir / claim_output_file), one writer per folder, children that die with their
parent, and the disk-full line of every writer, against hand-built folders and files: an output is replaced only
when it holds nothing but our own kind of output; anything else is one line and nothing is deleted or left behind."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import fileio
from checkpoint import load_checkpoint, save_checkpoint

KIND, NAMES = "test-run", ["ckpt_*.pt", "log.jsonl", "summary.json", "tokenizer"]


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def earlier_run(folder, marker=True):
    folder.mkdir(parents=True)
    (folder / "ckpt_000004.pt").write_bytes(b"weights")
    (folder / "log.jsonl").write_text('{"step": 4}\n')
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    if marker:
        (folder / fileio.MARKER).write_text(json.dumps({"kind": KIND}))
    return folder


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_new_folder_is_claimed_without_creating_anything(tmp_path):
    out = fileio.claim_output_dir(tmp_path / "a" / "b", KIND, NAMES)
    assert out.path == tmp_path / "a" / "b" and out.earlier == [] and os.listdir(tmp_path) == []


def test_create_then_abandon_removes_only_what_it_made(tmp_path):
    (tmp_path / "a").mkdir()
    out = fileio.claim_output_dir(tmp_path / "a" / "b" / "c", KIND, NAMES)
    out.create()
    assert fileio._kind_of(out.path) == KIND
    out.abandon()  # a run refused after create(): no empty folder stays, the folder that was there does
    assert os.listdir(tmp_path) == ["a"] and os.listdir(tmp_path / "a") == []


def test_abandon_keeps_a_folder_that_received_output(tmp_path):
    out = fileio.claim_output_dir(tmp_path / "run", KIND, NAMES)
    out.create()
    (out.path / "log.jsonl").write_text("{}\n")
    out.abandon()
    assert sorted(os.listdir(tmp_path / "run")) == [fileio.LOCK, fileio.MARKER, "log.jsonl"]


def test_earlier_output_of_the_same_kind_needs_overwrite_or_resume(tmp_path):
    run = earlier_run(tmp_path / "run")
    with pytest.raises(fileio.OutputError) as e:
        fileio.claim_output_dir(run, KIND, NAMES, resume=False)
    assert one_line(e).startswith(f"--out_dir {run}: holds an earlier run's test-run output "
                                  "(ckpt_000004.pt, log.jsonl, tokenizer)")
    assert "--resume" in str(e.value) and "--overwrite" in str(e.value)
    with pytest.raises(fileio.OutputError, match="; pass --overwrite to replace it$"):
        fileio.claim_output_dir(run, KIND, NAMES)  # a command that cannot resume names only --overwrite
    assert fileio.claim_output_dir(run, KIND, NAMES, resume=True).earlier == ["ckpt_000004.pt", "log.jsonl",
                                                                              "tokenizer"]
    out = fileio.claim_output_dir(run, KIND, NAMES, overwrite=True)
    assert (run / "ckpt_000004.pt").exists()  # the claim deletes nothing ...
    out.create()
    out.clear()  # ... clear() does, once the new run's inputs were checked
    assert sorted(os.listdir(run)) == [fileio.LOCK, fileio.MARKER]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_file_is_refused_even_with_overwrite(tmp_path, overwrite):
    run = earlier_run(tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    before = tree(run)
    with pytest.raises(fileio.OutputError) as e:
        fileio.claim_output_dir(run, KIND, NAMES, overwrite=overwrite, resume=True)
    assert "holds files that are not a test-run's output (notes.txt)" in one_line(e)
    assert tree(run) == before and (run / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("marker", ['{"kind": "hf-model"}', "not json", '["hf-model"]'])
def test_another_kinds_or_a_damaged_marker_is_refused(tmp_path, marker):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "ckpt_000001.pt").write_bytes(b"x")  # a name this kind also writes: the marker decides
    (folder / fileio.MARKER).write_text(marker)
    with pytest.raises(fileio.OutputError) as e:
        fileio.claim_output_dir(folder, KIND, NAMES, overwrite=True)
    want = "a hf-model (its .llmhw-output says so)" if "kind" in marker else "a damaged or foreign marker"
    assert f"holds {want}, not a test-run" in one_line(e) and (folder / "ckpt_000001.pt").exists()


def test_atomic_dir_with_kind_writes_the_marker_the_claim_reads(tmp_path):
    with fileio.atomic_dir(tmp_path / "set", "bpe-tokenizer") as tmp:
        (tmp / "tokenizer.json").write_text("{}")
    assert fileio._kind_of(tmp_path / "set") == "bpe-tokenizer"
    assert fileio.claim_output_dir(tmp_path / "set", "bpe-tokenizer", ["*.json"], overwrite=True).earlier \
        == ["tokenizer.json"]
    with pytest.raises(fileio.OutputError, match="holds a bpe-tokenizer"):
        fileio.claim_output_dir(tmp_path / "set", "hf-model", ["*.json"], overwrite=True)


def test_bad_places_are_one_line_and_create_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = {tmp_path / "file": "is a file, but an output folder is needed here",
             tmp_path / "file" / "sub": "cannot write in"}
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    cases[tmp_path / "loop1" / "out"] = "a symlink loop?"
    for path, want in cases.items():
        with pytest.raises(fileio.OutputError) as e:
            fileio.claim_output_dir(path, KIND, NAMES, overwrite=True, flag="--output_dir")
        assert one_line(e).startswith("--output_dir ") and want in str(e.value), str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["file", "loop1", "loop2"]


def test_an_input_inside_or_around_the_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.bin").write_bytes(b"")
    for out, inp in ((data, data / "train.bin"), (data / "run", data), (tmp_path / "x", tmp_path / "x")):
        with pytest.raises(fileio.OutputError, match="holds \\(or is inside\\) the input"):
            fileio.claim_output_dir(out, KIND, NAMES, overwrite=True, inputs=[None, inp])


def test_leftovers_of_killed_writes_are_removed_and_only_ours(tmp_path):
    run = earlier_run(tmp_path / "run")
    ours = [tmp_path / ".run.llmhw-k1ll3d.tmp", run / ".ckpt_000008.pt.llmhw-abc_12.tmp",
            run / "tokenizer" / ".tokenizer.json.llmhw-zz.tmp"]
    ours[0].mkdir()  # a killed atomic_dir of the run folder itself
    (ours[0] / "half.bin").write_bytes(b"x")
    for p in ours[1:]:
        p.write_bytes(b"half a file")
    theirs = [tmp_path / ".run.notes.tmp", tmp_path / ".other.llmhw-abc.tmp"]  # not ours, or of another folder
    for p in theirs:
        p.write_text("keep")
    fileio.claim_output_dir(run, KIND, NAMES, resume=True)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)


def test_temp_names_are_recognizable(tmp_path):
    seen = []
    real = os.replace

    def replace(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "replace", replace)
        fileio.atomic_write_text(tmp_path / "a.json", "{}")
        with fileio.atomic_dir(tmp_path / "set", KIND):
            pass
    assert len(seen) == 2 and all(fileio.TEMP.match(n) for n in seen), seen


def test_an_interrupted_sub_folder_swap_is_undone_by_the_claim(tmp_path):
    run = earlier_run(tmp_path / "run")
    (run / "tokenizer").rename(run / ".tokenizer.llmhw-old")  # a kill between atomic_dir's two renames
    out = fileio.claim_output_dir(run, KIND, NAMES, resume=True)
    assert "tokenizer" in out.earlier and (run / "tokenizer" / "tokenizer.json").is_file()


def real_torch_write_failure(obj) -> RuntimeError:
    """The exception torch.save raises on a short write to a path (/dev/full: every write fails with ENOSPC)."""
    with pytest.raises(RuntimeError) as e:
        torch.save(obj, "/dev/full")
    return e.value


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full for torch's real message")
def test_save_checkpoint_names_a_full_disk_from_torchs_own_failure(tmp_path, monkeypatch):
    obj = {"w": torch.ones(1000)}
    failure = real_torch_write_failure(obj)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(failure))
    with pytest.raises(fileio.OutputError) as e:
        save_checkpoint(tmp_path / "ckpt", {"step": 1, **obj}, "test-format")
    msg = one_line(e)
    assert "ckpt_000001.pt: no space left on the disk holding" in msg and "MiB free" in msg
    assert "inline_container" not in msg and os.listdir(tmp_path / "ckpt") == []


@pytest.mark.parametrize("where", ["atomic_write", "atomic_dir"])
def test_enospc_is_named_by_every_writer(tmp_path, where):
    def write(f):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(fileio.OutputError) as e:
        if where == "atomic_write":
            with fileio.atomic_write(tmp_path / "x.bin") as f:
                write(f)
        else:
            with fileio.atomic_dir(tmp_path / "set", KIND) as tmp:
                write(tmp)
    assert "no space left on the disk holding" in one_line(e) and os.listdir(tmp_path) == []


def test_save_checkpoint_round_trip(tmp_path):
    save_checkpoint(tmp_path, {"step": 3, "w": torch.arange(3)}, "test-format")
    assert torch.equal(load_checkpoint(tmp_path, "test-format")["w"], torch.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000003.pt", "latest"]


def test_marker_is_json_naming_the_kind(tmp_path):
    out = fileio.claim_output_dir(tmp_path / "run", "pretrain-run", NAMES)
    out.create()
    assert json.loads((tmp_path / "run" / fileio.MARKER).read_text()) == {"kind": "pretrain-run"}


def test_our_names_without_our_marker_are_refused(tmp_path):
    run = earlier_run(tmp_path / "run", marker=False)  # every name matches, but nothing says we wrote it
    before = tree(run)
    with pytest.raises(fileio.OutputError) as e:
        fileio.claim_output_dir(run, KIND, NAMES, overwrite=True)
    assert "holds files that are not a test-run's output (ckpt_000004.pt" in one_line(e) and tree(run) == before


CLAIM = """import sys, time
sys.path.insert(0, {here!r})
import fileio
try:
    fileio.claim_output_dir(sys.argv[1], "test-run", ["*.pt", "log.jsonl"], resume=True).create()
except fileio.OutputError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
print("claimed", flush=True)
time.sleep(float(sys.argv[2]))
"""


def claimer(tmp_path, folder, seconds):
    script = tmp_path / "claim.py"
    script.write_text(CLAIM.format(here=os.path.dirname(fileio.__file__)))
    return subprocess.Popen([sys.executable, str(script), str(folder), str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_one_writer_per_folder_and_no_stale_lock(tmp_path):
    first = claimer(tmp_path, tmp_path / "run", 60)
    assert first.stdout.readline() == "claimed\n"
    out, err = claimer(tmp_path, tmp_path / "run", 0).communicate(timeout=60)
    assert err.strip() == f"--out_dir {tmp_path / 'run'}: in use by PID {first.pid} on {os.uname().nodename}; " \
                          "wait for it to end or choose another folder"
    first.kill()  # killed, not cleaned up: the lock goes with the process
    first.communicate()
    out, err = claimer(tmp_path, tmp_path / "run", 0).communicate(timeout=60)
    assert out == "claimed\n", err


def test_a_child_dies_with_its_killed_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", f"""import sys, time
sys.path.insert(0, {os.path.dirname(fileio.__file__)!r})
import fileio
child = fileio.start_child([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)"""], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        state = open(f"/proc/{child}/stat").read().split()[2] if os.path.exists(f"/proc/{child}") else "X"
        if state == "Z":  # dead, waiting for init to reap it
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the child outlived its killed parent")


def test_a_single_output_file_is_replaced_only_when_ours(tmp_path):
    mine, ours, data = tmp_path / "notes.json", tmp_path / "out.json", tmp_path / "data"
    mine.write_text('{"kind": "something else"}')
    fileio.atomic_write_json(ours, {"kind": "ngram", "x": 1})
    data.mkdir()
    assert fileio.claim_output_file(tmp_path / "new.json", "ngram") == tmp_path / "new.json"
    assert fileio.claim_output_file(ours, "ngram", overwrite=True) == ours
    cases = {(mine, True): "is a file this command did not write", (ours, False): "pass --overwrite",
             (data / "meta.json", True): "holds (or is inside) the input", (data, True): "is a folder"}
    for (path, overwrite), want in cases.items():
        with pytest.raises(fileio.OutputError) as e:
            fileio.claim_output_file(path, "ngram", overwrite=overwrite, inputs=[data])
        assert want in one_line(e)
    assert mine.read_text() == '{"kind": "something else"}'


def test_json_outputs_are_standard_json(tmp_path):
    with pytest.raises(ValueError):
        fileio.atomic_write_json(tmp_path / "x.json", {"temperature": float("inf")})
    assert os.listdir(tmp_path) == []


def test_the_run_log_names_a_full_disk(tmp_path):
    from runlog import RunLog

    log = RunLog(tmp_path / "log.jsonl")

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")
    log._file, real = FullDisk(), log._file
    with pytest.raises(fileio.OutputError) as e:
        log.write(step=1, loss=2.0)
    assert "log.jsonl: no space left on the disk holding" in one_line(e) and "MiB free" in str(e.value)
    real.close()
