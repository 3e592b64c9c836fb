"""The Alpaca partition: train/eval = train.py's split, held-out instructions, pretraining text with no finetuning
record in it, the CLI's files, refusals and faults."""
import json
import lzma

import pytest
from conftest import contents, user_error

import data
import partition

@pytest.mark.parametrize("n,max_examples,ratio,seed", [(1000, 200, 0.1, 3), (57, 20, 0.25, 0), (500, None, 0.05, 9)])
def test_partition_train_eval_are_train_py_split_and_parts_cover_disjointly(n, max_examples, ratio, seed):
    heldout = 10 if max_examples else 0
    parts = partition.partition(n, max_examples, ratio, seed, heldout)
    assert (parts["train"], parts["eval"]) == data.split_indices(n, ratio, seed, max_examples)
    assert parts == partition.partition(n, max_examples, ratio, seed, heldout)  # deterministic
    everything = [i for key in ("train", "eval", "heldout", "unused") for i in parts[key]]
    assert sorted(everything) == list(range(n))  # covering, and disjoint (no index twice)
    assert len(parts["heldout"]) == heldout and parts["unused"] == sorted(parts["unused"])
    if max_examples:
        assert partition.partition(n, max_examples, ratio, seed + 1, heldout)["heldout"] != parts["heldout"]


def test_partition_heldout_skips_instructions_of_the_training_splits():
    records = [{"instruction": f"task {i % 6}", "input": "", "output": str(i)} for i in range(30)]
    parts = partition.partition(30, 4, 0.25, 1, 2, records)
    train_eval = {records[i]["instruction"] for i in parts["train"] + parts["eval"]}
    assert len(parts["heldout"]) == 2 and not {records[i]["instruction"] for i in parts["heldout"]} & train_eval
    # without records the heldout is simply the next indices of the shuffle, which here repeats an instruction
    order = list(range(30))
    import random
    random.Random(1).shuffle(order)
    assert partition.partition(30, 4, 0.25, 1, 2)["heldout"] == order[4:6]
    free = 6 - len(train_eval)  # 6 distinct instructions, minus those of train/eval
    assert len(partition.partition(30, 4, 0.25, 1, free, records)["heldout"]) == free
    with pytest.raises(ValueError, match=f"only {free} records are outside the finetuning subset for {free + 1} held"):
        partition.partition(30, 4, 0.25, 1, free + 1, records)


def test_pretrain_selection_leaves_out_used_repeated_empty_and_containing_responses():
    long_eval = "An answer long enough that finding it inside another answer means the record leaked."
    records = [{"instruction": f"i{k}", "output": o} for k, o in enumerate([
        "train answer", long_eval, "held-out answer",                       # 0 train, 1 eval, 2 heldout
        "train answer", " train answer\n\n", "free answer\n\nsecond part", "free answer\nsecond part",
        "", "Before. " + long_eval + " After.", "short", "another free one"])]
    parts = {"train": [0], "eval": [1], "heldout": [2], "unused": list(range(3, 11))}
    kept, why = partition.pretrain_selection(records, parts)
    assert kept == [5, 9, 10]
    assert why == {"empty": 1, "same_as_used": 2, "repeated": 1, "contains_eval_or_heldout": 1}
    text = partition.pretrain_text(records, kept)
    assert text == "free answer\nsecond part\n\nshort\n\nanother free one\n"  # blank lines only between records


@pytest.fixture(scope="module")
def alpaca_records(alpaca_path):
    return json.load(lzma.open(alpaca_path, "rt", encoding="utf-8"))  # read here, not by data.py: a reference


@pytest.fixture(scope="module")
def alpaca_partition(tmp_path_factory, alpaca_path):
    out = tmp_path_factory.mktemp("part") / "p1000"
    split = partition.main(["--out_dir", str(out), "--max_examples", "1000", "--eval_ratio", "0.1", "--data_seed", "42",
                       "--heldout", "24"])
    return out, split


def test_partition_cli_no_finetuning_record_in_the_pretraining_text(alpaca_partition, alpaca_records):
    out, split = alpaca_partition
    records = alpaca_records
    idx = split["indices"]
    assert (idx["train"], idx["eval"]) == data.split_indices(len(records), 0.1, 42, 1000)
    assert sorted(i for v in idx.values() for i in v) == list(range(52002))
    text = (out / "pretrain_text.txt").read_text(encoding="utf-8")
    paragraphs = text[:-1].split("\n\n")
    assert text.endswith("\n") and len(paragraphs) == split["pretrain"]["records"] == len(split["pretrain"]["indices"])
    assert split["pretrain"]["bytes"] == len(text.encode()) and set(split["pretrain"]["indices"]) <= set(idx["unused"])
    # exact response strings: no used record's response is a paragraph (Alpaca shares some responses among records)
    para_set = set(paragraphs)
    for key in ("train", "eval", "heldout"):
        for i in idx[key]:
            out_text = records[i]["output"].strip()
            assert out_text not in para_set and out_text.replace("\n\n", "\n") not in para_set, (key, i)
            assert partition.paragraph(out_text) not in para_set, (key, i)
    for i in idx["eval"] + idx["heldout"]:  # nor inside one, unless it is short and generic ("Positive", "2")
        out_text = records[i]["output"].strip()
        assert len(out_text) < partition.MIN_CONTAINED_CHARS or "\n\n" in out_text or out_text not in text, i
    # an unused response does appear, verbatim
    i = split["pretrain"]["indices"][0]
    assert records[i]["output"].strip().split("\n")[0].rstrip() in text


def test_partition_cli_files_and_determinism(alpaca_partition, alpaca_records, tmp_path):
    out, split = alpaca_partition
    assert split["format"] == "llmhw-alpaca-split" and split["version"] == 1
    assert split["data"]["file"] == "alpaca_data.json.xz" and split["data"]["records"] == 52002
    assert split["data"]["sha256"] == "53adf12feb0ddc51bf8243de1b41886773f902d16f921d1b8804329c6501284d"  # data README
    assert split["settings"] == {"max_examples": 1000, "eval_ratio": 0.1, "data_seed": 42, "heldout": 24,
                                 "pretrain_bytes": None}
    assert partition.read_split(out) == split
    records = alpaca_records
    lines = [json.loads(line) for line in (out / "instructions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in lines] == split["indices"]["heldout"]
    assert all({k: r[k] for k in ("instruction", "input", "output")} == {"input": "", **records[r["index"]]}
               for r in lines)
    used = {records[i]["instruction"] for i in split["indices"]["train"] + split["indices"]["eval"]}
    assert not used & {r["instruction"] for r in lines}
    again = partition.main(["--out_dir", str(tmp_path / "again"), "--max_examples", "1000", "--eval_ratio", "0.1",
                       "--heldout", "24"])  # --data_seed 42 is the default
    assert again == split
    for name in ("split.json", "pretrain_text.txt", "instructions.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_partition_cli_refusals(alpaca_partition, tmp_path, capsys):
    out, _ = alpaca_partition
    before = (out / "split.json").read_bytes()
    small = tmp_path / "small.jsonl"
    user = tmp_path / "user"  # a partition with a user's file beside it: never deleted, --overwrite or not
    user.mkdir()
    for name in ("split.json", "notes.txt"):
        (user / name).write_bytes((out / "split.json").read_bytes() if name == "split.json" else b"mine")
    small.write_text("".join(json.dumps({"instruction": f"i{i}", "output": f"o{i}"}) + "\n" for i in range(30)))
    cases = [
        (["--out_dir", str(out), "--max_examples", "2000", "--eval_ratio", "0.1"], "holds a partition with settings"),
        (["--out_dir", str(tmp_path), "--max_examples", "10"], "not a data partition's output (small.jsonl"),
        (["--out_dir", str(user), "--max_examples", "10", "--overwrite"], "output (notes.txt)"),
        (["--out_dir", str(tmp_path / "small.jsonl"), "--max_examples", "10"], "is a file"),
        (["--max_examples", "10"], "--out_dir is required"),
        (["--out_dir", str(tmp_path / "n"), "--max_examples", "0"], "--max_examples must be > 0"),
        (["--out_dir", str(tmp_path / "n"), "--eval_ratio", "1.5"], "--eval_ratio must be in"),
        (["--out_dir", str(tmp_path / "n"), "--data_path", str(small), "--max_examples", "28", "--heldout", "3"],
         "only 2 records are outside the finetuning subset for 3"),
        (["--out_dir", str(tmp_path / "n"), "--data_path", str(small), "--heldout", "0"],
         "no records are left for the pretraining text (0 unused)"),
    ]
    for argv, message in cases:
        assert message in user_error(partition.main, argv), argv
    assert (out / "split.json").read_bytes() == before and not (tmp_path / "n").exists()
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt", "split.json"]
    bad = tmp_path / "sub" / "bad.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps([{"instruction": f"i{i}", "output": f"o{i}"} for i in range(30)]))
    assert "the input" in user_error(partition.main, ["--out_dir", str(tmp_path / "sub"), "--data_path",
                                                                  str(bad), "--max_examples", "5", "--overwrite"])


def test_pretrain_bytes_takes_a_seeded_sample_within_the_budget(tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"i{i}", "output": f"answer number {i:03d}"}) + "\n"
                           for i in range(200)))  # every paragraph 17 bytes
    argv = ["--data_path", str(src), "--max_examples", "20", "--heldout", "2", "--data_seed", "3"]
    full = partition.main(["--out_dir", str(tmp_path / "all")] + argv)
    part = partition.main(["--out_dir", str(tmp_path / "cut"), "--pretrain_bytes", "180"] + argv)
    text = (tmp_path / "cut" / "pretrain_text.txt").read_text()
    # 10 paragraphs: 10 * 17 + 9 separators * 2 + final newline = 189 > 180, so 9 fit (9 * 17 + 8 * 2 + 1 = 170)
    assert part["pretrain"]["records"] == 9 and part["pretrain"]["bytes"] == 170 == len(text.encode())
    assert part["pretrain"]["left_out"]["over_budget"] == full["pretrain"]["records"] - 9
    assert set(part["pretrain"]["indices"]) < set(full["pretrain"]["indices"])
    assert part["pretrain"]["indices"] == sorted(part["pretrain"]["indices"])
    assert part["pretrain"]["indices"] != full["pretrain"]["indices"][:9]  # a sample, not the file's first records
    assert part["indices"] == full["indices"] and part["settings"]["pretrain_bytes"] == 180


@pytest.mark.parametrize("fault", ["disk_full", "kill"])
def test_partition_fault_while_writing_keeps_the_earlier_folder(tmp_path, monkeypatch, fault):
    import errno
    from pathlib import Path

    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"i{i}", "output": f"o{i}"}) + "\n" for i in range(50)))
    argv = ["--out_dir", str(tmp_path / "p"), "--data_path", str(src), "--max_examples", "10", "--heldout", "2"]
    partition.main(argv)
    before = contents(tmp_path / "p")
    real = Path.write_text

    def failing(self, *a, **k):
        if self.name == "instructions.jsonl":  # the second of the three files: a half-written set
            raise OSError(errno.ENOSPC, "No space left on device") if fault == "disk_full" else KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "write_text", failing)
    if fault == "disk_full":
        assert "no space left on the disk" in user_error(partition.main, argv + ["--overwrite", "--data_seed", "7"])
    else:
        with pytest.raises(KeyboardInterrupt):
            partition.main(argv + ["--overwrite", "--data_seed", "7"])
    assert contents(tmp_path / "p") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "r.jsonl"]  # no temp folder left behind
