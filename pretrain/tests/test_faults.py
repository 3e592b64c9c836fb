"""Faults: a kill at each write, a full disk, corrupt checkpoint / meta.json / shard / tokenizer files.
Each time the previous outputs survive (loadable, unmixed) and the next start continues or says one line."""
import errno
import json
import os
import re
import shutil

import numpy as np
import pytest

import fileio
import prepare
import train
from conftest import load_checkpoint
from export import load_model
from conftest import TINY_ARGS, user_error
from runlog import read_log

FAST = ["--hellaswag_limit", "0", "--sample_tokens", "0", "--val_steps", "1", "--eval_interval", "0"]


class Killed(BaseException):
    """Stands for SIGKILL at that instant (BaseException: no handler of ours catches it)."""


def resume(out, data, steps="7"):
    return train.main(["--data", str(data), "--out_dir", str(out), *TINY_ARGS, "--max_steps", steps, *FAST,
                       "--resume"])


def strip(log):
    return [{k: v for k, v in r.items() if k not in ("dt_ms", "tokens_per_s", "mfu")} for r in log]


@pytest.fixture(scope="module")
def finished(tiny_run, shakespeare, tmp_path_factory):
    """tiny_run extended by one step without faults: the log every faulty history must end with."""
    out = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(tiny_run, out)
    resume(out, shakespeare)
    return strip(read_log(out / "log.jsonl"))


def kill_when_replacing(monkeypatch, name):
    """Kill just before the rename that would put a complete `name` in place (a folder's old copy is aside then)."""
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if os.path.basename(dst) == name:
            raise Killed(name)
        return real_replace(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", replace)


def files(folder):
    """The files of a folder by name, without the lock a writer takes on it (it names the writer)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != fileio.LOCK}


def whole(out, name):
    """A folder of the run, or its old copy that a swap cut by a kill left aside (put back by the next start)."""
    return out / name if (out / name).exists() else out / f".{name}.llmhw-old"


@pytest.mark.parametrize("name", ["log.jsonl", "tokenizer", "ckpt_000007.pt", "latest", "hf", "summary.json"])
def test_kill_at_each_write_keeps_a_loadable_run(name, tiny_run, shakespeare, finished, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    with monkeypatch.context() as m:
        kill_when_replacing(m, name)
        with pytest.raises(Killed):
            resume(out, shakespeare)
    # what a kill leaves: the latest checkpoint loads, the log parses (no NUL padding), hf/ and tokenizer/ whole
    assert load_checkpoint(out)["step"] in (6, 7)
    assert b"\0" not in (out / "log.jsonl").read_bytes() and read_log(out / "log.jsonl")
    assert load_model(whole(out, "hf")).config.n_layer == 2 and (whole(out, "tokenizer") / "vocab.json").is_file()
    json.loads((out / "summary.json").read_text())
    resume(out, shakespeare)  # the next start continues and ends as an uninterrupted run
    assert strip(read_log(out / "log.jsonl")) == finished


def test_disk_full_while_checkpointing_is_one_line_and_leaves_no_temp_file(tiny_run, shakespeare, tmp_path,
                                                                            monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    import checkpoint
    monkeypatch.setattr(checkpoint.torch, "save", full_disk)  # the disk fills while the checkpoint is written
    with pytest.raises(SystemExit) as e:
        resume(out, shakespeare)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "ckpt_000007.pt: no space left on the disk holding" in err and "MiB free" in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".llmhw-lock", ".llmhw-output"]
    assert load_checkpoint(out)["step"] == 6


def test_disk_full_while_preparing_keeps_the_old_data_set(shakespeare, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(shakespeare, data)
    before = files(data)

    def full_disk(self, tokens):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(prepare.ShardWriter, "write", full_disk)
    err = user_error(prepare.main, ["--input", "tinyshakespeare.txt", "--out_dir", str(data), "--workers", "0"],
                     capsys)
    assert re.match(r"^error: .*data: no space left on the disk holding", err)
    assert files(data) == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the half-built folder is gone


def test_a_failing_prepare_rerun_keeps_the_old_data_set_and_refuses_its_inputs(shakespeare, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shakespeare, data)
    before = files(data)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert "latin1.txt: not UTF-8 text" in user_error(prepare.main, ["--input", str(tmp_path / "latin1.txt"),
                                                                     "--out_dir", str(data), "--workers", "0"], capsys)
    assert files(data) == before
    (data / "notes.txt").write_text("my notes")
    err = user_error(prepare.main, ["--input", str(data / "notes.txt"), "--out_dir", str(data)], capsys)
    assert re.search(r"holds \(or is inside\) the input .*notes.txt", err)
    err = user_error(prepare.main, ["--input", "tinyshakespeare.txt", "--out_dir", str(data)], capsys)
    assert "holds files that are not a pretrain-tokens's output (notes.txt)" in err


def corrupt_shard_header(data):
    h = np.fromfile(data / "val_000000.bin", dtype="<i4", count=256)
    h[4] = 100277  # another tokenizer's vocab size
    with open(data / "val_000000.bin", "r+b") as f:
        f.write(h.tobytes())


def big_id_in_val(data):
    tokens = np.memmap(data / "val_000000.bin", dtype=np.uint16, mode="r+", offset=1024)
    tokens[7] = 60000
    tokens.flush()
    meta = json.loads((data / "meta.json").read_text())
    del meta["val"]["max_id"]  # as in a data set without the recorded maximum: train.py scans the val split
    (data / "meta.json").write_text(json.dumps(meta))


def big_id_in_train(data):
    """A shard whose tokens were changed after preparation (meta.json and the header still say max_id 50256)."""
    tokens = np.memmap(data / "train_000000.bin", dtype=np.uint16, mode="r+", offset=1024)
    tokens[11] = 60000
    tokens.flush()


def header_id_beyond_the_model(data):
    h = np.fromfile(data / "train_000000.bin", dtype="<i4", count=256)
    h[6] = 50401  # max_id + 1: an id the model's 50304 rows do not have
    with open(data / "train_000000.bin", "r+b") as f:
        f.write(h.tobytes())


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "meta.json").write_text('{"format_version": 2, "vocab'), "meta.json is corrupt"),
    (lambda d: (d / "meta.json").write_text('{"format_version": 2}'), "field 'vocab_size' is None"),
    (corrupt_shard_header, "val_000000.bin: made with another tokenizer (header vocab 100277"),
    (big_id_in_val, "val_000000.bin is corrupt: holds token id 60000, above its header's max_id"),
    (big_id_in_train, "train_000000.bin is corrupt: holds token id 60000, above its header's max_id"),
    (header_id_beyond_the_model, "train_000000.bin: token id 50400 is outside its tokenizer's vocab 50257"),
    (lambda d: (d / "tokenizer" / "encoder.json").write_text((d / "tokenizer" / "encoder.json").read_text() + " "),
     "tokenizer files differ from the ones the shards were made with"),
    (lambda d: (d / "train_000000.bin").write_bytes(b"\0" * 2000), "train_000000.bin is corrupt"),
])
def test_corrupt_data_files_are_one_line_at_startup(damage, message, shakespeare, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shakespeare, data)
    damage(data)
    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(data), "--out_dir", str(tmp_path / "out"), *TINY_ARGS, "--max_steps", "1", *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "log.jsonl").exists()  # refused before any work


def test_corrupt_checkpoint_on_resume_is_one_line(tiny_run, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    ckpt = out / "ckpt_000006.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:4096])
    log = (out / "log.jsonl").read_bytes()
    with pytest.raises(SystemExit):
        resume(out, shakespeare)
    err = capsys.readouterr().err
    assert "ckpt_000006.pt: refused: truncated or not a PyTorch checkpoint (4096 bytes)" in err
    assert err.count("\n") == 1
    assert (out / "log.jsonl").read_bytes() == log  # nothing rewritten
    (out / "latest").write_text("ckpt_000003.pt\n")  # an older checkpoint still resumes
    resume(out, shakespeare, steps="6")
    assert load_checkpoint(out)["step"] == 6


# ------------------------------------------------------------------------ nothing deleted that a command did not make
def test_export_into_a_run_or_a_users_folder_is_refused_and_deletes_nothing(tiny_run, tmp_path, capsys):
    import export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = sorted(p.name for p in run.iterdir())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    for out, message in ((run, "holds (or is inside) the input"), (tmp_path / "mine", "thesis.tex")):
        with pytest.raises(SystemExit) as e:
            export.main([str(run / "ckpt_000006.pt"), "--out_dir", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1
    assert sorted(p.name for p in run.iterdir()) == before and load_checkpoint(run)["step"] == 6
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    export.main([str(run), "--out_dir", str(tmp_path / "hf")])  # a new folder; an earlier export only with --overwrite
    with pytest.raises(SystemExit):
        export.main([str(run), "--out_dir", str(tmp_path / "hf")])
    assert "pass --overwrite" in capsys.readouterr().err
    export.main([str(run), "--out_dir", str(tmp_path / "hf"), "--overwrite"])


def test_a_refused_run_leaves_no_folder_and_a_symlink_loop_is_one_line(shakespeare, tmp_path, capsys):
    new = tmp_path / "a" / "b" / "run"
    with pytest.raises(SystemExit):  # refused after the folder claim: no validation tokens with --val_steps 1
        train.main(["--data", str(shakespeare), "--out_dir", str(new), *TINY_ARGS, "--max_steps", "1", *FAST,
                    "--hellaswag_limit", "3", "--data_dir", str(tmp_path / "no_data_here")])
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "a").exists()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(SystemExit):
        train.main(["--data", str(shakespeare), "--out_dir", str(tmp_path / "loop"), *TINY_ARGS, *FAST])
    err = capsys.readouterr().err
    assert "--out_dir" in err and "cannot be resolved" in err and err.count("\n") == 1


def test_leftovers_of_killed_checkpoint_writes_are_removed_at_the_next_start(tiny_run, shakespeare, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    leftovers = [out / ".ckpt_000007.pt.llmhw-k1ll3d.tmp", out / ".latest.llmhw-k1ll3d.tmp"]
    for p in leftovers:
        p.write_bytes(b"PK\x03\x04 half a checkpoint")
    resume(out, shakespeare)
    assert not any(p.exists() for p in leftovers) and load_checkpoint(out)["step"] == 7


def test_torchs_short_write_is_named_as_a_full_disk(tiny_run, shakespeare, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)

    def short_write(obj, f, *a, **k):  # what torch raises when the disk fills under its zip writer
        f.write(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0")
    import checkpoint
    monkeypatch.setattr(checkpoint.torch, "save", short_write)
    with pytest.raises(SystemExit):
        resume(out, shakespeare)
    err = capsys.readouterr().err
    assert "ckpt_000007.pt: no space left on the disk holding" in err and "MiB free" in err and err.count("\n") == 1
    assert "inline_container" not in err and load_checkpoint(out)["step"] == 6


def test_resume_on_other_data_is_refused_unless_allowed(tiny_run, shakespeare, tmp_path, capsys):
    other = tmp_path / "other"  # the same tokenizer, another text
    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question.\n" * 400)
    prepare.prepare(other, [str(tmp_path / "text.txt")], workers=0)
    capsys.readouterr()
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    log = (out / "log.jsonl").read_bytes()
    with pytest.raises(SystemExit):
        resume(out, other)
    err = capsys.readouterr().err
    assert "trained on other data than" in err and "--allow_new_data" in err and err.count("\n") == 1
    assert (out / "log.jsonl").read_bytes() == log
    train.main(["--data", str(other), "--out_dir", str(out), *TINY_ARGS, "--max_steps", "7", *FAST, "--resume",
                "--allow_new_data"])
    assert load_checkpoint(out)["step"] == 7 and load_checkpoint(out)["data"]["train_tokens"] != \
        load_checkpoint(tiny_run)["data"]["train_tokens"]


def test_a_crafted_pytorch_model_bin_is_one_line_without_torchs_advice(tiny_run, tmp_path, capsys):
    import pickle

    import sample

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    hf = tmp_path / "hf"
    shutil.copytree(tiny_run / "hf", hf)
    (hf / "model.safetensors").unlink()
    (hf / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Exploit()}))
    for script in (sample.main, hellaswag_main):
        err = user_error(script, ["--model", str(hf), "--prompt", "Hi"] if script is sample.main else
                         ["--model", str(hf)], capsys)
        assert "pytorch_model.bin: refused: holds Python objects" in err
        assert "weights_only" not in err and "Traceback" not in err
    assert not (tmp_path / "pwned").exists()


def hellaswag_main(argv):
    import hellaswag

    return hellaswag.main([*argv, "--limit", "2"])


def test_a_preparation_stopped_by_sigterm_or_killed_leaves_nothing_hidden(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import HERE

    data = tmp_path / "data"
    cmd = [sys.executable, str(HERE / "prepare.py"), "--input", "tinyshakespeare.txt", "--out_dir", str(data),
           "--workers", "0", "--piece_bytes", "2000"]  # small pieces: a preparation of several seconds
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # stopped while it writes its first shard into the folder it builds aside
    while proc.poll() is None and not list(tmp_path.glob(".data.llmhw-*.tmp/train_*.bin")) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # as torchrun or a scheduler stops a job
    assert proc.wait(timeout=60) == 143
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the half-built folder went with it
    (tmp_path / ".data.llmhw-k1ll3d.tmp").mkdir()  # what a SIGKILL leaves: removed by the next start
    (tmp_path / ".data.llmhw-k1ll3d.tmp" / "train_000000.bin").write_bytes(b"\0" * 4096)
    prepare.main(["--input", "tinyshakespeare.txt", "--out_dir", str(data), "--workers", "0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ---------------------------------------------------------------------------- data that would fail late, found early
def test_blank_line_documents_treat_crlf_as_lf_and_blank_only_text_is_refused(tmp_path, capsys):
    """--doc_boundary blank_line: a CRLF text has the documents of its LF twin (each ending with its blank line, as
    text); a text of blank lines only would be a data set of end-of-text tokens: refused in one line."""
    paras = [f"Answer {i}: the quick brown fox\njumps over {i} lazy dogs." for i in range(60)]
    ref = prepare.load_tokenizer("gpt2")
    for eol in ("\n", "\r\n"):
        text = (eol * 2).join(p.replace("\n", eol) for p in paras) + eol
        (tmp_path / "t.txt").write_bytes(text.encode())
        prepare.prepare(tmp_path / "d", [str(tmp_path / "t.txt")], val_fraction=0.0, workers=0, piece_bytes=300,
                        doc_boundary="blank_line")
        docs = [p.replace("\n", eol) + eol * (1 if i == len(paras) - 1 else 2) for i, p in enumerate(paras)]
        want = [t for d in docs for t in [50256] + ref.encode(d)]
        got = np.concatenate([prepare.read_shard(tmp_path / "d" / n) for n in prepare.read_meta(tmp_path / "d")[
            "train"]["shards"]]).tolist()
        assert got == want and got.count(50256) == 60
    for blank in ("\n\n\n", "\r\n\r\n  \r\n\t\r\n", "  \n \n\n"):
        (tmp_path / "blank.txt").write_bytes(blank.encode())
        assert "no text to train on" in user_error(prepare.main, [
            "--input", str(tmp_path / "blank.txt"), "--out_dir", str(tmp_path / "b"), "--workers", "0",
            "--doc_boundary", "blank_line"], capsys)
        assert not (tmp_path / "b").exists()


def test_a_shuffled_epoch_too_short_for_one_step_is_found_before_the_first_step(tmp_path):
    """Each epoch cuts its windows at a new offset in [0, T): with one step's windows only at offset 0, a later
    epoch would have none left (numpy's "need at least one array to stack" mid-run); refused at the start."""
    B, T = 4, 8

    def data_set(n_tokens):
        folder = tmp_path / str(n_tokens)
        folder.mkdir()
        w = prepare.ShardWriter(folder, "train", 10 ** 6, vocab_size=256, eot_id=None)
        w.write(np.arange(n_tokens) % 256)
        w.close()
        (folder / "meta.json").write_text(json.dumps({
            "format_version": 2, "vocab_size": 256, "tokenizer": {"dir": "tokenizer"},
            "train": {"shards": w.names, "tokens": w.total}, "val": {"shards": [], "tokens": 0}}))
        return folder
    with pytest.raises(prepare.DataError, match="windows of 9 tokens in some epochs, fewer than one step") as e:
        prepare.ShardLoader(data_set(B * T + 1), "train", B, T, order="shuffle")  # 4 windows at offset 0, 3 at 7
    assert "\n" not in str(e.value)
    loader = prepare.ShardLoader(data_set(B * T + T), "train", B, T, order="shuffle")  # 4 windows at every offset
    for _ in range(40):  # many epochs, every offset
        assert loader.next_batch()[0].shape == (B, T)


def test_resume_knows_the_data_by_content(tiny_run, shakespeare, tmp_path, capsys):
    """meta.json records each shard's sha256; --resume compares the shards' contents now with the checkpoint's: a
    shard edited in place (same size, same names, same meta.json) is other data, refused unless --allow_new_data."""
    meta = prepare.read_meta(shakespeare)
    assert meta["train"]["sha256"] == [prepare.file_sha256(shakespeare / n) for n in meta["train"]["shards"]]
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(shakespeare, data)
    shutil.copytree(tiny_run, out)
    tokens = np.memmap(data / "train_000000.bin", dtype=np.uint16, mode="r+", offset=1024)
    tokens[100], tokens[101] = tokens[101], tokens[100]  # two tokens swapped: same size, same max_id
    tokens.flush()
    log = (out / "log.jsonl").read_bytes()
    with pytest.raises(SystemExit) as e:
        resume(out, data)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "trained on other data than" in err and "sha256" in err and err.count("\n") == 1
    assert (out / "log.jsonl").read_bytes() == log
    train.main(["--data", str(data), "--out_dir", str(out), *TINY_ARGS, "--max_steps", "7", *FAST, "--resume",
                "--allow_new_data"])
    assert load_checkpoint(out)["data"]["train_sha256"] == [prepare.file_sha256(data / "train_000000.bin")]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("script, args", [
    ("train", []), ("hellaswag", ["--model", "gpt2"]), ("bench", []), ("sample", ["--model", ".", "--prompt", "a"]),
])
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_a_cuda_device_without_cuda_is_one_line_in_every_script(script, args, device, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(script).main([*args, "--device", device])
    err = capsys.readouterr().err + (e.value.code if isinstance(e.value.code, str) else "")
    assert f"--device {device}: no CUDA device is available on this machine (use --device cpu)" in err
    assert "Traceback" not in err


def refused(module, argv, capsys) -> str:
    """main(argv) of `module` exits 2; returns its one error line (argparse's usage lines before it aside)."""
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    return err.strip().splitlines()[-1]


def read_only(monkeypatch, folder):
    """`folder` refuses new files, as a read-only folder does for a user other than root (tests run as root)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and not os.path.samefile(p, folder))


@pytest.mark.parametrize("seconds", ["nan", "inf", "0", "-5"])
def test_scan_refuses_seconds_that_are_not_a_positive_number(seconds, shakespeare, tmp_path, capsys):
    line = refused("scan", ["--data", shakespeare, "--out_dir", tmp_path / "s", "--seconds", seconds], capsys)
    assert f"argument --seconds: must be a finite number > 0, got {seconds}" in line
    assert not (tmp_path / "s").exists()


def test_scan_names_a_malformed_candidate(shakespeare, tmp_path, capsys):
    line = refused("scan", ["--data", shakespeare, "--out_dir", tmp_path / "s", "--candidates",
                            "L1-d32-T16-B2-lr1e-3", "L1-d32-T16-B2-lr."], capsys)
    assert "candidate 'L1-d32-T16-B2-lr.' is not of the form L<layers>-d<width>" in line


def test_scan_refuses_a_file_the_data_or_a_read_only_folder_as_out_dir(shakespeare, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("keep me")
    args = ["--data", shakespeare, "--seconds", "1", "--out_dir"]
    assert "is a file, but an output folder is needed" in refused("scan", [*args, tmp_path / "file"], capsys)
    assert (tmp_path / "file").read_text() == "keep me"
    assert "holds (or is inside) the input" in refused("scan", [*args, shakespeare], capsys)
    (tmp_path / "locked").mkdir()
    read_only(monkeypatch, tmp_path / "locked")
    assert "cannot write in" in refused("scan", [*args, tmp_path / "locked"], capsys)
    assert os.listdir(tmp_path / "locked") == []


def test_a_failing_scan_candidate_is_one_line_and_leaves_no_folder(shakespeare, tmp_path, capsys):
    # an extra flag train.py does not know: the candidate's run stops at its start, the scan with it
    line = refused("scan", ["--data", shakespeare, "--out_dir", tmp_path / "s", "--seconds", "0.01",
                            "--candidates", "L1-d32-T16-B2-lr1e-3", "--no_such_flag", "1"], capsys)
    assert line.startswith("error: candidate L1-d32-T16-B2-lr1e-3: train.py failed (exit 2): ")
    assert "--no_such_flag" in line and not (tmp_path / "s").exists()


def test_ngram_refuses_a_model_it_cannot_score_before_the_work(shakespeare, hf_tiny_dir, tmp_path, capsys,
                                                               monkeypatch):
    import ngram

    monkeypatch.setattr(ngram, "baselines", lambda *a, **k: pytest.fail("the work started"))
    config = json.loads((hf_tiny_dir / "config.json").read_text())
    cases = {"weights": ("no model.safetensors", {"config.json": json.dumps(config)}),
             "config": ("config.json: not a readable GPT-2 config", {"config.json": "{", "model.safetensors": ""}),
             "vocab": ("vocab_size 100 is smaller than the data's 50257",
                       {"config.json": json.dumps({**config, "vocab_size": 100}), "model.safetensors": ""})}
    for name, (message, files) in cases.items():
        (tmp_path / name).mkdir()
        for f, text in files.items():
            (tmp_path / name / f).write_text(text)
        assert message in refused("ngram", ["--data", shakespeare, "--model", tmp_path / name], capsys)


def test_ngram_refuses_an_out_that_is_a_folder_or_read_only_before_the_work(shakespeare, tmp_path, capsys,
                                                                            monkeypatch):
    import ngram

    monkeypatch.setattr(ngram, "baselines", lambda *a, **k: pytest.fail("the work started"))
    (tmp_path / "folder").mkdir()
    args = ["--data", shakespeare, "--out"]
    assert "is a folder, but an output file is needed" in refused("ngram", [*args, tmp_path / "folder"], capsys)
    (tmp_path / "locked").mkdir()
    read_only(monkeypatch, tmp_path / "locked")
    assert "cannot write in" in refused("ngram", [*args, tmp_path / "locked" / "b.json"], capsys)
    (tmp_path / "mine.json").write_text('{"a": 1}')  # a user's JSON: refused even with --overwrite
    assert "did not write" in refused("ngram", [*args, tmp_path / "mine.json", "--overwrite"], capsys)
    assert (tmp_path / "mine.json").read_text() == '{"a": 1}'


def test_a_second_trainer_on_a_folder_in_use_is_refused(shakespeare, tmp_path, capsys):
    """One writer per folder: while a run trains, a second train.py on its folder, with --resume or --overwrite, is
    refused in one line naming the holder (fileio's lock), and the first run trains on."""
    import subprocess
    import sys
    import time

    from conftest import HERE

    out = tmp_path / "run"
    argv = ["--data", str(shakespeare), "--out_dir", str(out), *TINY_ARGS, "--max_steps", "100000", *FAST]
    first = subprocess.Popen([sys.executable, str(HERE / "train.py"), *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any('"loss"' in line for line in
                       ((out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").is_file() else [])):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start training"
            time.sleep(0.05)
        for extra in (["--resume"], ["--overwrite"]):
            line = user_error(train.main, [*argv, "--max_steps", "2", *extra], capsys)  # short, were it let in
            assert f"in use by PID {first.pid} on {os.uname().nodename}" in line, line
        assert first.poll() is None  # the first run trains on
    finally:
        first.kill()
        first.wait()
