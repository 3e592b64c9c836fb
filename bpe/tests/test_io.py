"""Save/load round trip, corrupt and wrong-version files, the readable vocab, and train.py end to end."""
import json

import pytest

import train
from tokenizer import FORMAT_VERSION, Tokenizer


def test_save_load_roundtrip(small_trained, tmp_path, manual_text):
    for pattern, tok in small_trained.items():
        tok.save(tmp_path / f"{pattern}.model", tmp_path / f"{pattern}.vocab.txt")
        back = Tokenizer.load(tmp_path / f"{pattern}.model")
        assert (back.vocab, back.special_tokens, back.merges, back.pattern) == \
            (tok.vocab, tok.special_tokens, tok.merges, tok.pattern)
        text = manual_text[:3000] + "<|endoftext|>"
        assert back.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
        lines = (tmp_path / f"{pattern}.vocab.txt").read_text().splitlines()
        assert len(lines) == 1 + tok.vocab_size
        assert lines[1 + 256].split("\t")[0] == "256" and lines[-1].startswith(f"{tok.vocab_size - 1}\t<|pad|>")


def test_gpt2_save_load_roundtrip(gpt2_tok, tmp_path):
    gpt2_tok.save(tmp_path / "gpt2.model")
    back = Tokenizer.load(tmp_path / "gpt2.model")
    assert back.encode("Hello world<|endoftext|>", allowed_special="all") == [15496, 995, 50256]


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not a llmhw-bpe model"),
    ('[1, 2]', "not a llmhw-bpe model"),
    (json.dumps({"format": "llmhw-bpe", "version": FORMAT_VERSION + 1}), "format version"),
    (json.dumps({"format": "llmhw-bpe", "version": FORMAT_VERSION, "pattern_name": "none", "pattern": None,
                 "vocab": [[0, "zz"]], "special_tokens": {}, "merges": []}), "corrupt"),
    (json.dumps({"format": "llmhw-bpe", "version": FORMAT_VERSION, "pattern_name": "none", "pattern": None,
                 "vocab": [[i, bytes([i]).hex()] for i in range(255)], "special_tokens": {}, "merges": []}),
     "single-byte"),
])
def test_bad_model_files(tmp_path, content, words):
    path = tmp_path / "bad.model"
    path.write_text(content)
    with pytest.raises(ValueError, match=words) as e:
        Tokenizer.load(path)
    assert str(path) in str(e.value) or "single-byte" in str(e.value)


def test_bad_gpt2_files(tmp_path):
    (tmp_path / "enc.json").write_text("{}")
    (tmp_path / "vocab.bpe").write_text("no header\n")
    with pytest.raises(ValueError, match="vocab.bpe"):
        Tokenizer.from_gpt2_files(tmp_path / "enc.json", tmp_path / "vocab.bpe")


def test_train_cli_writes_all_outputs(tmp_path, manual_text):
    from tokenizers import Tokenizer as HFTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(manual_text[:20000] + "<|endoftext|> The end.", encoding="utf-8")
    out = tmp_path / "out"
    summary = train.main(["--input", str(corpus), "--vocab_size", "400", "--special", "<|endoftext|>",
                          "--out_dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(train.outputs.FILES.values())
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(summary))
    for key in ["vocab_size", "pattern", "train_seconds", "corpus_bytes", "n_tokens", "bytes_per_token",
                "roundtrip_ok", "first_tokens", "last_tokens", "comparison"]:
        assert key in s
    assert s["vocab_size"] == 400 and s["pattern"] == "none" and s["roundtrip_ok"] is True
    assert s["first_tokens"][0] == [0, "\\x00"] and len(s["last_tokens"]) == 10
    assert set(s["comparison"]) == {"english", "chinese"}
    assert s["comparison"]["english"]["gpt2"] < s["comparison"]["english"]["ours"]
    tok = Tokenizer.load(out / "tokenizer.model")
    text = "研究生手册 handbook<|endoftext|>"
    hf = HFTokenizer.from_file(str(out / "tokenizer.json"))
    assert hf.encode(text).ids == tok.encode(text, allowed_special="all")
    assert s["n_tokens"] == len(tok.encode(corpus.read_text(encoding="utf-8"), disallowed_special=()))
    log = (out / "output.log").read_text()
    assert "round trip" in log and "OK" in log and "gpt2" in log


def test_train_cli_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no/such/file.txt"):
        train.main(["--input", "no/such/file.txt", "--out_dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        train.main(["--vocab_size", "100", "--out_dir", str(tmp_path)])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(SystemExit, match="not UTF-8"):
        train.main(["--input", str(bad), "--out_dir", str(tmp_path)])
    good = tmp_path / "good.txt"
    good.write_text("hello world " * 20)
    with pytest.raises(SystemExit, match="no/such/sample.txt"):  # found missing before training, not after
        train.main(["--input", str(good), "--english", "no/such/sample.txt", "--out_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="same byte-level spelling"):  # "A" is byte 65's token: HF cannot hold it
        train.main(["--input", str(good), "--vocab_size", "300", "--special", "A", "--out_dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        train.main(["--input", str(good), "--special", "", "--out_dir", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "good.txt"]  # nothing written


def test_train_cli_keeps_crlf_line_ends(tmp_path):
    corpus = tmp_path / "crlf.txt"
    corpus.write_bytes(b"one line\r\nanother line\r\n" * 100)
    s = train.main(["--input", str(corpus), "--vocab_size", "300", "--out_dir", str(tmp_path / "out")])
    assert s["corpus_bytes"] == corpus.stat().st_size
    tok = Tokenizer.load(tmp_path / "out" / "tokenizer.model")
    assert any(b"\r\n" in t for t in tok.vocab.values())
    assert tok.decode_bytes(tok.encode(corpus.read_bytes().decode())) == corpus.read_bytes()


def test_default_out_dir_is_next_to_the_script():
    cfg = train.parse_args([])
    assert cfg.out_dir == str(train.HERE / "output") and cfg.inputs == ["bpe/manual.txt"]
    assert (cfg.english, cfg.chinese) == ("bpe/homework_english.txt", "bpe/homework_chinese.txt")
    assert cfg.vocab_size == 1024 and cfg.pattern == "none"


def test_default_run_compares_with_gpt2_and_the_homework(tmp_path):
    # the homework's setup on its own paragraphs: GPT-2 (tiktoken from the local files) reads 185 and 306, the
    # homework's published 938 / 113 stand beside ours, and the re-run of its tokenizer reproduces them
    out = tmp_path / "out"
    s = train.main(["--out_dir", str(out)])
    c = s["comparison"]
    assert (c["english"]["gpt2"], c["chinese"]["gpt2"]) == (185, 306)
    assert (c["english"]["homework"], c["chinese"]["homework"]) == (938, 113)
    tok = Tokenizer.load(out / "tokenizer.model")
    for k in ("english", "chinese"):
        text = open(c[k]["source"], encoding="utf-8").read()
        assert c[k]["ours"] == len(tok.encode(text)) and c[k]["chars"] == len(text)
    assert (s["format"], s["version"]) == ("llmhw-bpe-summary", 2)
    assert s["homework"]["schema"] == "llmhw-bpe-homework/1" and s["homework"]["reproduces_published"] is True
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    log = (out / "output.log").read_text()
    assert "homework   938" in log and "gpt2   185" in log and "effect dropped_bytes" in log
    with pytest.raises(SystemExit, match="--overwrite"):  # a second run never replaces the first one unasked
        train.main(["--out_dir", str(out)])
