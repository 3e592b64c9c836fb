"""Faults at every write of bpe/train.py's output set: a kill, a full disk, corrupt or foreign files, bad outputs.

Each case starts from a finished run's folder and asserts that the earlier set survives byte for byte (never files
of two tokenizers side by side), no temp file or folder is left, and the next start gives one line.
"""
import contextlib
import errno
import itertools
import json
import os
import shutil
from pathlib import Path

import pytest

import fileio
import train
from tokenizer import Tokenizer


class Killed(BaseException):
    """Stands for a kill: not an Exception, so no handler on the way may swallow it."""


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "in" / "corpus.txt"
    path.parent.mkdir()
    path.write_text("low lower lowest newer wider 北京大学\n" * 40, encoding="utf-8")
    return path


def run(corpus, out, *extra):
    return train.main(["--input", str(corpus), "--vocab_size", "300", "--out_dir", str(out), *extra])


def snapshot(folder: Path) -> dict:
    """Every entry of the folder and its bytes (not the one-writer lock, which names the process holding it)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != fileio.LOCK}


def leftovers(folder: Path) -> list:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")] + \
        [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name not in (fileio.MARKER, fileio.LOCK)]


@pytest.fixture
def earlier(corpus, tmp_path):
    out = tmp_path / "out"
    run(corpus, out)
    return out, snapshot(out)


def fail_at(monkeypatch, k: int, error: BaseException):
    """Make the k-th rename (os.replace, 1-based) raise ``error``; the others work."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == k:
            raise error
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_a_kill_at_any_rename_keeps_the_earlier_set(monkeypatch, corpus, earlier, user_error):
    # a kill at each rename of the run: each file of the set written aside, then the swap's renames (the old set
    # moved aside, the new one moved in). The earlier set survives byte for byte, or, if the kill fell between the
    # swap's renames, the next start puts it back; that start is one line, and no temp file is left.
    out, before = earlier
    for k in itertools.count(1):
        calls = fail_at(monkeypatch, k, Killed())
        with contextlib.suppress(Killed):
            run(corpus, out, "--vocab_size", "280", "--overwrite")
        monkeypatch.undo()
        if len(calls) < k:  # no k-th rename: the run went through
            break
        assert not out.exists() or snapshot(out) == before, k
        user_error(["--input", str(corpus), "--vocab_size", "300", "--out_dir", str(out)],
                   "earlier run's bpe-tokenizer output")
        assert snapshot(out) == before and not leftovers(out), k
    assert k > len(train.FILES) + 2  # every file and both renames of the swap were hit
    assert Tokenizer.load(out / "tokenizer.model").vocab_size == 280


@pytest.mark.parametrize("k", [1, len(train.FILES)])
def test_disk_full_is_one_line_and_removes_temp_files(monkeypatch, corpus, earlier, k, user_error):
    out, before = earlier
    fail_at(monkeypatch, k, OSError(errno.ENOSPC, "No space left on device"))
    user_error(["--input", str(corpus), "--vocab_size", "280", "--out_dir", str(out), "--overwrite"], "no space left")
    monkeypatch.undo()
    assert snapshot(out) == before and not leftovers(out)


def test_overwrite_replaces_the_whole_set(corpus, earlier):
    out, before = earlier
    run(corpus, out, "--vocab_size", "280", "--overwrite")
    after = snapshot(out)
    assert set(after) == set(before) and after["tokenizer.model"] != before["tokenizer.model"]
    assert Tokenizer.load(out / "tokenizer.model").vocab_size == 280


@pytest.mark.parametrize("damage", [b"", b'{"format": "llmhw-bpe", "vers', b"\x80\x81 binary", b'{"format": "other"}'])
def test_corrupt_or_foreign_model_file(corpus, earlier, damage, user_error):
    out, _ = earlier
    (out / "tokenizer.model").write_bytes(damage)
    with pytest.raises(ValueError) as e:
        Tokenizer.load(out / "tokenizer.model")
    assert str(out / "tokenizer.model") in str(e.value) and "\n" not in str(e.value)
    # the next start refuses in one line ...
    user_error(["--input", str(corpus), "--out_dir", str(out)], "--overwrite")
    run(corpus, out, "--overwrite")  # ... and replaces the damaged set when told
    Tokenizer.load(out / "tokenizer.model")


def test_bad_outputs_refused_before_training(corpus, tmp_path, user_error):
    def refused(out, words, *flags):
        assert "bpe merges" not in user_error(["--input", str(corpus), "--out_dir", str(out), *flags], words)

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    refused(a_file, "is a file")
    refused(corpus.parent, "holds (or is inside) the input")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.md").write_text("mine")
    refused(foreign, "not a bpe-tokenizer's output", "--overwrite")
    assert (foreign / "notes.md").read_text() == "mine"
    unmarked = tmp_path / "unmarked"  # a tokenizer set's names without the marker (a copy, say): never ours
    unmarked.mkdir()
    for name in train.FILES.values():
        (unmarked / name).write_text("mine")
    refused(unmarked, "not a bpe-tokenizer's output", "--overwrite")
    assert sorted(p.name for p in unmarked.iterdir()) == sorted(train.FILES.values())
    assert all((unmarked / name).read_text() == "mine" for name in train.FILES.values())
    data = tmp_path / "data"  # another kind of output, under a name a tokenizer set has too: the marker tells
    data.mkdir()
    (data / "summary.json").write_text("{}")
    (data / fileio.MARKER).write_text('{"kind": "pretrain-dataset"}')
    refused(data, "holds a pretrain-dataset", "--overwrite")
    assert (data / "summary.json").read_text() == "{}"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        refused(locked / "out", "cannot write")


def test_bad_inputs_are_one_line_naming_them(corpus, tmp_path, user_error):
    out = str(tmp_path / "out")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    user_error(["--input", str(empty), "--out_dir", out], f"{empty} is empty")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    user_error(["--input", str(latin1), "--out_dir", out], f"{latin1} is not UTF-8 text (byte 3")
    user_error(["--input", str(tmp_path), "--out_dir", out], "is a folder")
    user_error(["--input", "no/such.txt", "--out_dir", out], "no/such.txt")
    user_error(["--input", str(latin1), "--chinese", str(empty), "--out_dir", out], "is not UTF-8")
    user_error(["--english", "no/such/sample.txt", "--out_dir", out], "no/such/sample")  # found before training
    user_error(["--input", str(corpus), "--special", "A", "--out_dir", out],
               "same byte-level spelling")  # "A" is byte 65's token: HF cannot hold it; found before writing
    for argv, words in ((["--vocab_size", "255"], "--vocab_size 255 is out of range"),
                        (["--vocab_size", str(1 << 25)], "--vocab_size"),
                        (["--vocab_size", "many"], "invalid int value"),  # argparse's own errors: one line too
                        (["--special", "<s>", "<s>"], "--special"), (["--special", " "], "--special"),
                        (["--special", ""], "--special"), (["--model_max_length", "0"], "--model_max_length")):
        user_error(argv + ["--out_dir", out], words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "in", "latin1.txt"]  # nothing written


def test_missing_gpt2_files_are_one_line_before_training(corpus, tmp_path, monkeypatch, user_error):
    monkeypatch.setenv("LLMHW_DATA_DIR", str(tmp_path / "empty_data"))
    monkeypatch.setenv("LLMHW_OFFLINE", "1")
    err = user_error(["--input", str(corpus), "--english", str(corpus), "--chinese", str(corpus),
                      "--out_dir", str(tmp_path / "out")], "not found")
    assert "bpe merges" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["encoder.json", "vocab.bpe"])
@pytest.mark.parametrize("damage", [b"", b"\xff\xfe\x00 binary", b'{"a": 1', b"[1, 2]", b'{"!": 0}'])
def test_corrupt_gpt2_files_are_one_line_naming_them(tmp_path, which, damage):
    # e.g. a data set's tokenizer/ folder with a damaged encoder.json: gpt2_encoding reads them (from_gpt2_files too)
    files = {"encoder.json": fileio.find("gpt2/encoder.json"), "vocab.bpe": fileio.find("gpt2/vocab.bpe")}
    files[which] = tmp_path / "tokenizer" / which
    files[which].parent.mkdir()
    files[which].write_bytes(damage)
    with pytest.raises(ValueError) as e:
        Tokenizer.from_gpt2_files(files["encoder.json"], files["vocab.bpe"])
    msg = str(e.value)
    assert msg.startswith(f"{files['encoder.json']} + {files['vocab.bpe']}: not GPT-2's") and "\n" not in msg, msg


def test_unreadable_input_is_one_line(corpus, tmp_path, monkeypatch, user_error):
    real = Path.read_bytes

    def read_bytes(self):
        if self == corpus:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    user_error(["--input", str(corpus), "--out_dir", str(tmp_path / "out")], f"{corpus}: cannot read it")


def model_dict(tmp_path):
    tok = Tokenizer("gpt2").train("low lower lowest newer wider " * 20, 270, special_tokens=["<|endoftext|>"])
    tok.save(tmp_path / "good.model")
    return json.loads((tmp_path / "good.model").read_text())


DAMAGES = {  # what a hand-edited or foreign model file may hold -> the words of its one line
    "merge of an unknown id": (lambda d: d["merges"][0].__setitem__(0, 999), "no byte or earlier merge made"),
    "merge before its input": (lambda d: d["merges"].reverse(), "no byte or earlier merge made"),
    "merge result of other bytes": (lambda d: d["merges"][1].__setitem__(2, d["merges"][0][2]),
                                    "bytes are not token"),
    "token no merge makes": (lambda d: d["merges"].pop(), "no merge makes it"),
    "merge not a triple": (lambda d: d["merges"].__setitem__(0, [1, 2]), "is not [left id, right id, new id]"),
    "special_tokens a list": (lambda d: d.__setitem__("special_tokens", ["<|endoftext|>"]),
                              "special_tokens must map strings to ids"),
    "special id a string": (lambda d: d["special_tokens"].__setitem__("<|endoftext|>", "269"),
                            "special_tokens must map strings to ids"),
    "special id a bool": (lambda d: d["special_tokens"].__setitem__("<|endoftext|>", True),
                          "special_tokens must map strings to ids"),
    "vocab entry a dict": (lambda d: d["vocab"].__setitem__(0, {"id": 0}), "is not [id, hex bytes]"),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_inconsistent_model_files_are_one_line(tmp_path, name):
    damage, words = DAMAGES[name]
    d = model_dict(tmp_path)
    Tokenizer.load(tmp_path / "good.model")  # the undamaged file loads
    damage(d)
    (tmp_path / "bad.model").write_text(json.dumps(d))
    with pytest.raises(ValueError) as e:
        Tokenizer.load(tmp_path / "bad.model")
    msg = str(e.value)
    assert msg.startswith(f"tokenizer file {tmp_path / 'bad.model'} is corrupt") and words in msg, msg
    assert "\n" not in msg


def test_a_gpt2_file_changed_at_the_same_path_is_read_anew(tmp_path, monkeypatch):
    # tiktoken caches the files it reads keyed by their path, not their content; gpt2_encoding turns the cache off
    from tokenizer import gpt2_encoding
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    files = {"encoder.json": tmp_path / "encoder.json", "vocab.bpe": fileio.find("gpt2/vocab.bpe")}
    files["encoder.json"].write_text("{}")
    with pytest.raises(ValueError, match="the two files disagree"):
        gpt2_encoding(files=files)
    files["encoder.json"].write_bytes(fileio.find("gpt2/encoder.json").read_bytes())
    assert gpt2_encoding(files=files).encode_ordinary("Hello world") == [15496, 995]
    assert not (tmp_path / "cache").exists()


def test_out_dir_that_is_a_symlink_loop_is_one_line(corpus, tmp_path, user_error):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for out in (tmp_path / "a", tmp_path / "a" / "out"):
        user_error(["--input", str(corpus), "--out_dir", str(out)], "a symlink loop?")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "in"]


def test_a_refused_run_leaves_no_folder(corpus, tmp_path, user_error):
    out = tmp_path / "new" / "deeper" / "out"
    user_error(["--input", str(corpus), "--out_dir", str(out), "--vocab_size", "300",
                "--chinese", str(tmp_path / "missing.txt")], "missing.txt")
    assert not (tmp_path / "new").exists()


def test_leftovers_of_a_killed_run_are_removed_by_the_next_start(monkeypatch, corpus, earlier):
    out, before = earlier
    entries = set(out.parent.iterdir())
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # a real kill cleans nothing up
    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)
    fail_at(monkeypatch, 3, Killed())
    with pytest.raises(Killed):
        run(corpus, out, "--vocab_size", "280", "--overwrite")
    monkeypatch.undo()
    left = set(out.parent.iterdir()) - entries
    assert left and snapshot(out) == before  # the killed run's temp folder (and its temp files inside)
    (out.parent / ".out.notes.tmp").write_text("not ours")
    run(corpus, out, "--vocab_size", "280", "--overwrite")
    assert not any(p.exists() for p in left) and (out.parent / ".out.notes.tmp").exists()
    assert set(out.parent.iterdir()) == entries | {out.parent / ".out.notes.tmp"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*train.FILES.values(), fileio.MARKER])
