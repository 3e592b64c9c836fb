"""Alpaca loading, templates, label masking, truncation, splits and bad inputs."""
import json
import lzma

import pytest
from conftest import user_error
import torch

import data
import fileio
import partition

RECORDS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hello.", "input": "", "output": "Hello there, friend."},
    {"instruction": "Name a colour.", "output": "Blue."},  # no 'input' field at all is fine
]


def test_templates_exact():
    assert data.prompt_of(RECORDS[0]) == "BEGINNING OF CONVERSATION: USER: Add the numbers. 2 and 3 ASSISTANT:"
    assert data.prompt_of(RECORDS[1]) == "BEGINNING OF CONVERSATION: USER: Say hello. ASSISTANT:"
    assert data.target_of(RECORDS[1]) == " Hello there, friend."
    a = data.prompt_of(RECORDS[0], "alpaca")
    assert a.startswith("Below is an instruction that describes a task, paired with an input")
    assert a.endswith("### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n")
    assert data.prompt_of(RECORDS[2], "alpaca").endswith("### Instruction:\nName a colour.\n\n### Response:\n")


def test_gpt2_tokenizer_matches_tiktoken_on_local_files(gpt2_tok):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(fileio.find("gpt2/vocab.bpe")),
                                            encoder_json_file=str(fileio.find("gpt2/encoder.json")))
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # GPT-2's
    enc = tiktoken.Encoding("gpt2", pat_str=pattern, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    text = "Hello world! ASSISTANT: 3.14 héllo\n\n  indented 東京"
    assert gpt2_tok(text, add_special_tokens=False)["input_ids"] == enc.encode(text)
    assert gpt2_tok.eos_token_id == 50256


def test_label_masking_exact_on_prompt_and_padding(gpt2_tok):
    examples, dropped = data.tokenize(RECORDS, gpt2_tok, "homework", 512)
    assert dropped == 0
    for rec, ex in zip(RECORDS, examples):
        p = gpt2_tok(data.prompt_of(rec), add_special_tokens=False)["input_ids"]
        t = gpt2_tok(" " + rec["output"], add_special_tokens=False)["input_ids"] + [50256]
        assert ex.input_ids == p + t
        assert ex.labels == [-100] * len(p) + t
        # prompt + target tokenized apart equals the whole text tokenized at once (no boundary artefact)
        whole = gpt2_tok(data.prompt_of(rec) + " " + rec["output"] + "<|endoftext|>")["input_ids"]
        assert ex.input_ids == whole
    batch = data.collate(examples, pad_id=50256)
    T = max(len(e.input_ids) for e in examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, T)
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        assert batch["labels"][i, :n].tolist() == ex.labels
        assert torch.all(batch["labels"][i, n:] == -100) and torch.all(batch["attention_mask"][i, n:] == 0)
        assert torch.all(batch["attention_mask"][i, :n] == 1)


def test_truncation_and_prompt_filling_examples_dropped(gpt2_tok):
    n_prompt = len(gpt2_tok(data.prompt_of(RECORDS[1]), add_special_tokens=False)["input_ids"])
    examples, dropped = data.tokenize([RECORDS[1]], gpt2_tok, "homework", n_prompt + 2)
    assert dropped == 0 and len(examples[0].input_ids) == n_prompt + 2
    assert examples[0].labels[:n_prompt] == [-100] * n_prompt and -100 not in examples[0].labels[n_prompt:]
    examples, dropped = data.tokenize([RECORDS[1]], gpt2_tok, "homework", n_prompt)
    assert examples == [] and dropped == 1


def test_split_deterministic_disjoint_and_subset():
    tr, ev = data.split_indices(1000, 0.1, seed=3)
    assert (tr, ev) == data.split_indices(1000, 0.1, seed=3)
    assert len(ev) == 100 and len(tr) == 900 and not set(tr) & set(ev) and set(tr) | set(ev) == set(range(1000))
    assert data.split_indices(1000, 0.1, seed=4) != (tr, ev)
    tr2, ev2 = data.split_indices(1000, 0.1, seed=3, max_examples=50)
    assert len(ev2) == 5 and len(tr2) == 45 and tr2 + ev2 != [] and set(ev2 + tr2) <= set(range(1000))
    assert (tr2, ev2) == data.split_indices(1000, 0.1, seed=3, max_examples=50)


def test_check_split_errors():
    with pytest.raises(ValueError, match="the eval split is empty"):
        data.check_split("eval", 0, 4)
    with pytest.raises(ValueError, match=r"train split has 3 examples, fewer than one batch \(--batch_size 2 x 2"):
        data.check_split("train", 3, 2, world_size=2)
    data.check_split("train", 4, 2, world_size=2)


def test_train_batches_ranks_disjoint_and_deterministic(gpt2_tok):
    ex = [data.Example([i, i], [i, i]) for i in range(10)]
    seen = []
    for rank in range(2):
        batches = list(data.train_batches(ex, 2, epoch=0, seed=1, rank=rank, world_size=2))
        assert len(batches) == 2 and all(b["input_ids"].shape == (2, 2) for b in batches)
        seen += [int(v) for b in batches for v in b["input_ids"][:, 0]]
    assert len(set(seen)) == 8
    a = [b["input_ids"] for b in data.train_batches(ex, 2, 0, 1)]
    assert all(torch.equal(x, y["input_ids"]) for x, y in zip(a, data.train_batches(ex, 2, 0, 1)))
    assert torch.cat(a).tolist() != torch.cat([b["input_ids"] for b in data.train_batches(ex, 2, 1, 1)]).tolist()


def test_formats_json_jsonl_xz_give_the_same_records(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(RECORDS))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    with lzma.open(tmp_path / "b.json.xz", "wt") as f:
        json.dump(RECORDS, f)
    with lzma.open(tmp_path / "b.jsonl.xz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in RECORDS))
    for name in ("a.json", "a.jsonl", "b.json.xz", "b.jsonl.xz"):
        recs, src = data.load_records(str(tmp_path / name))
        assert recs == RECORDS and src == str(tmp_path / name)


def test_data_directory_names(alpaca_path):
    recs, src = data.load_records("alpaca/alpaca_data.json.xz")
    assert len(recs) == 52002 and src == str(alpaca_path)
    # the uncompressed name finds the compressed offline copy
    assert data.resolve_data_path("alpaca/alpaca_data.json") == alpaca_path


def test_hub_dataset_name(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: calls.append((name, split)) or RECORDS)
    recs, src = data.load_records("tatsu-lab/alpaca")
    assert recs == RECORDS and src == "hf:tatsu-lab/alpaca" and calls == [("tatsu-lab/alpaca", "train")]

    def offline(name, split):
        raise ConnectionError("no internet\nmore lines")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="cannot load Hugging Face dataset 'tatsu-lab/alpaca'"):
        data.load_records("tatsu-lab/alpaca")


def test_bad_inputs_give_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHW_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        data.load_records(str(tmp_path / "nothing.json"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.load_records("not a path or name")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "x", "output": "y"},')
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        data.load_records(str(bad))
    bad.write_text(json.dumps({"instruction": "x"}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        data.load_records(str(bad))
    recs = RECORDS + [{"instruction": "x"}, "a string", {"instruction": 3, "output": "y", "input": None}]
    bad.write_text(json.dumps(recs))
    with pytest.raises(ValueError) as e:
        data.load_records(str(bad))
    msg = str(e.value)
    assert "3 malformed record(s)" in msg and "record 3 has no 'output'" in msg and "record 4 is a str" in msg
    assert "record 5 field 'instruction' is a int" in msg and "\n" not in msg
    jl = tmp_path / "bad.jsonl"
    jl.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl: line 2 is not valid JSON"):
        data.load_records(str(jl))
    bad.write_text("[]")
    with pytest.raises(ValueError, match="no records"):
        data.load_records(str(bad))
    with pytest.raises(ValueError, match="is a folder"):
        data.load_records(str(tmp_path))


def test_group_by_length_covers_the_same_examples_with_less_padding():
    g = torch.Generator().manual_seed(0)
    ex = [data.Example([1] * n, [1] * n) for n in torch.randint(1, 200, (1000,), generator=g).tolist()]
    plain = list(data.train_batches(ex, 8, 0, 1))
    grouped = list(data.train_batches(ex, 8, 0, 1, group_by_length=True))
    assert len(plain) == len(grouped) == 125 and all(b["input_ids"].shape[0] == 8 for b in grouped)
    real = lambda bs: sorted(int(n) for b in bs for n in b["attention_mask"].sum(1))  # noqa: E731
    assert real(plain) == real(grouped)  # the same examples (by length multiset), each once
    padded = lambda bs: sum(b["input_ids"].numel() for b in bs)  # noqa: E731
    assert padded(grouped) < 0.7 * padded(plain)
    again = list(data.train_batches(ex, 8, 0, 1, group_by_length=True))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(grouped, again))


@pytest.mark.parametrize("name,content,message", [
    ("empty.json", b"", "is empty (no JSON at all)"),
    ("blank.json", b"  \n", "is empty (no JSON at all)"),
    ("empty.jsonl", b"", "no records"),
    ("truncated.json", b'[{"instruction": "a", "output": "b"', "not valid JSON"),
    ("html.json", b"<html>404</html>", "not valid JSON"),
    ("object.json", b'{"instruction": "a", "output": "b"}', "expected a JSON list of records, got dict"),
    ("keys.json", json.dumps([{"prompt": "a", "response": "b"}]).encode(), "record 0 has no 'instruction'"),
    ("keys.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "a", "answer": "b"}\n',
     "record 1 has no 'output'"),
    ("types.json", json.dumps([{"instruction": "a", "output": ["b"]}]).encode(), "record 0 field 'output' is a list"),
    ("input.json", json.dumps([{"instruction": "a", "output": "b", "input": 3}]).encode(),
     "record 0 field 'input' is a int"),
    ("noinstr.json", json.dumps([{"instruction": "  ", "output": "b"}]).encode(),
     "record 0 field 'instruction' is empty"),
    ("list.jsonl", b'["a", "b"]\n', "record 0 is a list, not an object"),
    ("latin1.json", '[{"instruction": "caf\xe9", "output": "b"}]'.encode("latin-1"), "cannot decode"),
    ("notxz.json.xz", b"plain text, not xz", "cannot decode"),
    ("gzip.json.gz", bytes([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xfe]), "cannot decode"),
])
def test_every_bad_alpaca_file_is_one_line_naming_file_and_record(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        data.load_records(str(path))
    text = str(e.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text
    # and the partition CLI says the same in one line
    assert user_error(partition.main, ["--out_dir", str(tmp_path / "out"), "--data_path", str(path),
                                       "--max_examples", "1"]) == f"error: {text}"
    assert not (tmp_path / "out").exists()


def test_truncated_xz_and_unreadable_file_are_one_line(tmp_path, monkeypatch):
    full = tmp_path / "a.json.xz"
    with lzma.open(full, "wt") as f:
        json.dump(RECORDS * 100, f)
    cut = tmp_path / "cut.json.xz"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut.json.xz: cannot decode \(EOFError"):
        data.load_records(str(cut))

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(data, "open", denied, raising=False)  # root reads everything: simulate the refusal
    with pytest.raises(ValueError, match=r"no_access.json: cannot read \(Permission denied\)"):
        data.read_records(tmp_path / "no_access.json")
