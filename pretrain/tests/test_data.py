"""prepare.py: exact tokenization, streaming, split, shard format; the loaders (ranks, shift, resume, errors)."""
import json
import shutil

import numpy as np
import pytest
import torch

import fileio
import prepare
from conftest import user_error
from prepare import DataError, ShardLoader, load_tokenizer, make_header, read_meta, read_shard


def all_tokens(folder, split):
    meta = read_meta(folder)
    return np.concatenate([read_shard(folder / name) for name in meta[split]["shards"]])


def test_prepared_tokens_equal_tiktoken_on_the_whole_text(shakespeare, tmp_path):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    # The reference is tiktoken's gpt2 as its 0.7 registry builds it (ranks from the files, r50k pattern, eot 50256).
    ranks = data_gym_to_mergeable_bpe_ranks(str(fileio.find("gpt2/vocab.bpe")), str(fileio.find("gpt2/encoder.json")))
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    enc = tiktoken.Encoding("gpt2", pat_str=pattern,
                            mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    text = fileio.find("tinyshakespeare.txt").read_text()
    want = enc.encode_ordinary(text)
    assert len(want) == 338_025  # the figure in the data README
    # small pieces in worker processes and small shards: the same ids, in order, split 90/10
    meta = prepare.prepare(tmp_path, ["tinyshakespeare.txt"], workers=2, piece_bytes=50_000, shard_tokens=100_000)
    assert len(meta["train"]["shards"]) == 4 and len(meta["val"]["shards"]) == 1
    for folder in (shakespeare, tmp_path):
        train, val = all_tokens(folder, "train"), all_tokens(folder, "val")
        assert train[0] == 50256 and train.dtype == np.uint16  # the document starts with end-of-text
        assert np.array_equal(np.concatenate([train[1:], val]), want)
        assert 0.09 < len(val) / len(want) < 0.12
    assert read_meta(tmp_path)["train"]["tokens"] == len(all_tokens(tmp_path, "train"))
    assert load_tokenizer(tmp_path / "tokenizer").encode("Hello world") == [15496, 995]


def test_gpt2_files_changed_at_the_same_path_are_read_again(tmp_path):
    """tiktoken's loader caches files by path, not content: with the cache on, the damaged pair below would still
    load the old ranks. A damaged or foreign pair is one line naming both files."""
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(fileio.find(f"gpt2/{name}"), tmp_path / name)
    assert load_tokenizer(tmp_path).encode("Hello world") == [15496, 995]
    (tmp_path / "encoder.json").write_text('{"!": 0}')
    with pytest.raises(ValueError) as e:
        load_tokenizer(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'encoder.json'} + {tmp_path / 'vocab.bpe'}: not GPT-2's") and "\n" not in msg


def test_blank_lines_end_documents_when_asked(tmp_path):
    """--doc_boundary blank_line: every paragraph (with the blank line that ends it) is a document starting with
    end-of-text, ids equal to encoding each on its own (tiktoken's gpt2), whatever the piece size; the default keeps
    one document per file."""
    paras = [f"Answer {i}: the quick brown fox\njumps over {i} lazy dogs." for i in range(300)]
    (tmp_path / "r.txt").write_text("\n\n".join(paras) + "\n")
    ref = load_tokenizer("gpt2")  # GPT-2's files, tiktoken's encoding
    want = np.concatenate([[50256] + ref.encode(p + ("\n" if i == len(paras) - 1 else "\n\n"))
                           for i, p in enumerate(paras)])
    for piece_bytes in (1 << 20, 700):  # one piece, and many pieces cut inside the file
        meta = prepare.prepare(tmp_path / f"b{piece_bytes}", [str(tmp_path / "r.txt")], val_fraction=0.0,
                               workers=0, piece_bytes=piece_bytes, doc_boundary="blank_line")
        got = all_tokens(tmp_path / f"b{piece_bytes}", "train")
        assert np.array_equal(got, want) and meta["doc_boundary"] == "blank_line"
    prepare.prepare(tmp_path / "f", [str(tmp_path / "r.txt")], val_fraction=0.0, workers=0)
    one = all_tokens(tmp_path / "f", "train")
    assert (one == 50256).sum() == 1 and (want == 50256).sum() == 300
    with pytest.raises(ValueError, match="--doc_boundary must be one of"):
        prepare.prepare(tmp_path / "x", [str(tmp_path / "r.txt")], doc_boundary="line")


def test_file_is_read_in_bounded_pieces(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"line {i} of text\n" for i in range(20_000)))
    pieces = list(prepare.file_pieces(path, 0.1, 4096))
    assert "".join(p[0] for p in pieces) == path.read_text()
    assert len(pieces) > 50 and max(len(p[0]) for p in pieces) < 4096 + 100
    assert [p[2] for p in pieces].count(True) == 1  # one document per file


def test_tokenizer_json_and_hf_dataset_source(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    docs = [f"document {i}: " + "the quick brown fox jumps over the lazy dog " * (i + 1) for i in range(10)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    out = tmp_path / "data"
    meta = prepare.prepare(out, tokenizer=str(tmp_path / "tokenizer.json"), hf_dataset="json",
                           hf_data_files=str(tmp_path / "docs.jsonl"), val_fraction=0.2, workers=0)
    eot = tok.token_to_id("<|endoftext|>")
    expect = lambda ids: [x for i in ids for x in [eot] + tok.encode(docs[i]).ids]  # noqa: E731
    # every 5th document goes to validation: documents 4 and 9
    assert all_tokens(out, "val").tolist() == expect([4, 9])
    assert all_tokens(out, "train").tolist() == expect([0, 1, 2, 3, 5, 6, 7, 8])
    assert meta["tokenizer"]["kind"] == "tokenizer.json" and meta["eot_id"] == eot
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    # a re-run into the same folder with another tokenizer leaves only the new one's files
    prepare.prepare(out, [str(tmp_path / "docs.jsonl")], workers=0)
    assert sorted(p.name for p in (out / "tokenizer").glob("[!.]*")) == ["encoder.json", "vocab.bpe"]
    assert load_tokenizer(out / "tokenizer").kind == "gpt2"
    hf_files = tmp_path / "hf_tok"
    load_tokenizer(str(tmp_path / "tokenizer.json")).write_files(hf_files, hf=True, model_max_length=64)
    load_tokenizer("gpt2").write_files(hf_files, hf=True, model_max_length=64)
    assert sorted(p.name for p in hf_files.glob("[!.]*")) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    # a row without the text field
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="row 1 has no text in field 'text'"):
        prepare.prepare(tmp_path / "bad", hf_dataset="json", hf_data_files=str(tmp_path / "bad.jsonl"), workers=0)


def test_uint32_shards_for_large_vocabularies(tmp_path):
    w = prepare.ShardWriter(tmp_path, "train", 1000, vocab_size=100_000, eot_id=None)
    w.write(np.array([70_000, 1, 99_999]))
    w.close()
    header = np.fromfile(tmp_path / "train_000000.bin", dtype="<i4", count=6)
    assert header.tolist() == [20240801, 7, 3, 4, 100_000, -1]  # llm.c's uint32 magic/version + our fields
    assert read_shard(tmp_path / "train_000000.bin").tolist() == [70_000, 1, 99_999]


def make_dataset(folder, n_tokens, shard_tokens):
    w = prepare.ShardWriter(folder, "train", shard_tokens, vocab_size=50257, eot_id=50256)
    w.write(np.arange(n_tokens) % 50000)
    w.close()
    (folder / "meta.json").write_text(json.dumps({
        "format_version": 2, "vocab_size": 50257, "eot_id": 50256, "tokenizer": {"dir": "tokenizer"},
        "train": {"shards": w.names, "tokens": w.total}, "val": {"shards": [], "tokens": 0}}))


def test_loader_ranks_disjoint_shifted_and_equal_to_one_process(tmp_path):
    make_dataset(tmp_path, 1000, 400)
    B, T = 2, 8
    single = ShardLoader(tmp_path, "train", B, T)
    ranks = [ShardLoader(tmp_path, "train", B, T, rank=r, world_size=2) for r in range(2)]
    assert isinstance(single.shards[0], np.memmap)  # memory-mapped, not read into RAM
    for _ in range(60):  # wraps around shards and epochs several times
        xs = [r.next_batch() for r in ranks]
        for x, y in xs:
            assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
        assert not set(xs[0][0].flatten().tolist()) & set(xs[1][0].flatten().tolist())
        for x, y in xs:  # one process, two accumulation steps, reads the same windows in the same order
            x1, y1 = single.next_batch()
            assert torch.equal(x, x1) and torch.equal(y, y1)
    assert single.epoch == ranks[0].epoch > 0


def test_loader_resumes_from_its_position(tmp_path):
    make_dataset(tmp_path, 1000, 300)
    a = ShardLoader(tmp_path, "train", 2, 8, rank=1, world_size=2)
    for _ in range(13):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # survives serialization
    b = ShardLoader(tmp_path, "train", 2, 8, rank=1, world_size=2)
    b.load_state_dict(state)
    for _ in range(10):
        assert all(torch.equal(u, v) for u, v in zip(a.next_batch(), b.next_batch()))


def test_short_last_shard_is_skipped_and_resume_checks_the_position(tmp_path):
    make_dataset(tmp_path, 1000, 400)  # shards of 400, 400 and 200 tokens
    loader = ShardLoader(tmp_path, "train", 2, 64, world_size=2)  # a step needs 257 tokens
    assert loader.skipped == ["train_000002.bin"] and len(loader.shards) == 2
    seen = {int(loader.next_batch()[0][0, 0]) for _ in range(6)}
    assert seen == {0, 400}  # the first window of each long shard, in turn (tokens are their positions)
    state = {"order": "sequential", "seed": None, "epoch": 0, "pos": 6}  # 6 windows: 3 steps of 1 x 2 ranks
    ShardLoader(tmp_path, "train", 1, 64, world_size=2).load_state_dict(state)  # fits
    with pytest.raises(DataError, match="does not fit"):  # the same position at a larger batch runs off the shard
        ShardLoader(tmp_path, "train", 2, 64, world_size=2).load_state_dict(state)


def test_bad_shards_give_clear_errors(tmp_path):
    make_dataset(tmp_path, 1000, 400)
    with pytest.raises(DataError, match="fewer than one step needs"):
        ShardLoader(tmp_path, "train", 4, 64, world_size=2)
    with pytest.raises(DataError, match="no val shards"):
        ShardLoader(tmp_path, "val", 2, 8)
    shard = tmp_path / "train_000001.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train_000001.bin is corrupt: header says 400 tokens"):
        ShardLoader(tmp_path, "train", 2, 8)
    shard.write_bytes(np.zeros(256, "<i4").tobytes())
    with pytest.raises(DataError, match="bad magic"):
        read_shard(shard)
    shard.write_bytes(b"xx")
    with pytest.raises(DataError, match="shorter than the 1024-byte header"):
        read_shard(shard)
    shard.unlink()
    with pytest.raises(DataError, match="train_000001.bin is missing"):
        ShardLoader(tmp_path, "train", 2, 8)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json is missing: prepare the data first"):
        ShardLoader(tmp_path, "train", 2, 8)
    assert make_header(5, np.dtype(np.uint16), 50257, 50256)[:3].tolist() == [20240520, 1, 5]


def test_prepare_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        prepare.prepare(tmp_path, ["tinyshakespeare.txt"], val_fraction=1.0)
    with pytest.raises(fileio.DataFileNotFound, match="no-such-file.txt"):
        prepare.prepare(tmp_path, ["no-such-file.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt: not UTF-8 text near byte 3"):
        prepare.prepare(tmp_path / "out", [str(tmp_path / "latin1.txt")], workers=0)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    for flag, value in (("shard_tokens", 0), ("piece_bytes", 0), ("workers", -1)):
        with pytest.raises(ValueError, match=f"--{flag} must be >="):
            prepare.prepare(tmp_path / "out", ["tinyshakespeare.txt"], **{flag: value})


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    err = user_error(prepare.main, ["--input", "no-such-file.txt", "--out_dir", str(tmp_path)], capsys)
    assert err.startswith("error: data file 'no-such-file.txt' not found")


@pytest.mark.parametrize("text", [
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 60,  # one line
    "First Citizen:\r\nBefore we proceed any further, hear me speak.\r\n\r\nAll:\r\nSpeak, speak.\r\n" * 40,  # CRLF
    " = Title = \n \n The lobster , known as <unk> , is 60 @,@ 000 years old . \n" * 40,  # WikiText's " \n" lines
])
def test_texts_without_clean_newlines_still_get_validation_tokens(text, tmp_path):
    """The val split needs a cut in the file's tail; the ids stay those of encoding the whole file (tiktoken)."""
    (tmp_path / "t.txt").write_bytes(text.encode())
    meta = prepare.prepare(tmp_path / "d", [str(tmp_path / "t.txt")], workers=0, piece_bytes=256)
    assert 0.05 < meta["val"]["tokens"] / (meta["train"]["tokens"] + meta["val"]["tokens"]) < 0.2
    ids = np.concatenate([all_tokens(tmp_path / "d", "train")[1:], all_tokens(tmp_path / "d", "val")])
    assert ids.tolist() == load_tokenizer("gpt2").encode(text)
    assert meta["train"]["max_id"] == int(all_tokens(tmp_path / "d", "train").max())


def test_wikitext_detokenizer_on_a_hand_checked_line():
    raw = ' = Homarus gammarus = \n It may grow to 60 @,@ 000 cm ( 24 in ) , a " lobster " of 1 @.@ 5 kg . \n'
    want = '= Homarus gammarus =\nIt may grow to 60,000 cm (24 in), a "lobster" of 1.5 kg.\n'
    assert prepare.detokenize_wikitext(raw, doc_start=True) == want


def test_several_english_files_with_detokenize(tmp_path):
    (tmp_path / "a.txt").write_text(" = A = \n The cat @-@ like animal , he said . \n" * 30)
    (tmp_path / "b.txt").write_text("Response one.\n\nResponse two.\n" * 30)
    meta = prepare.prepare(tmp_path / "d", [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], workers=0,
                           detokenize="wikitext")
    tok = load_tokenizer("gpt2")
    train = all_tokens(tmp_path / "d", "train").tolist()
    assert train.count(50256) == 2  # one document per file
    assert tok.decode(train).startswith("<|endoftext|>= A =\nThe cat-like animal, he said.\n")
    assert meta["detokenize"] == "wikitext" and meta["val"]["tokens"] > 0


@pytest.mark.parametrize("content, message", [
    ("{not json", "meta.json is corrupt"),
    ("[1, 2]", "holds a list, not an object"),
    ('{"format_version": 2}', "field 'vocab_size' is None, expected int"),
    ('{"format_version": 1}', r"format_version 1, expected 2 \(prepare the data again\)"),
])
def test_malformed_meta_is_one_line(content, message, tmp_path):
    (tmp_path / "meta.json").write_text(content)
    with pytest.raises(DataError, match=message) as e:
        read_meta(tmp_path)
    assert "\n" not in str(e.value)
