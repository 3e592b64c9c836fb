"""Save/load round trip, corrupt and wrong-version files, the readable vocab, and train.py end to end."""
import json
import os
import re
from pathlib import Path

import pytest

import fileio
import train
from tokenizer import FORMAT_VERSION, Tokenizer

ROOT = Path(__file__).resolve().parents[2]


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
    # GPT-2's 50,000 merges pass load's consistency check (each merge joins earlier ids into its token)
    gpt2_tok.save(tmp_path / "gpt2.model")
    back = Tokenizer.load(tmp_path / "gpt2.model")
    assert back.encode("Hello world<|endoftext|>", allowed_special="all") == [15496, 995, 50256]
    assert back.merges == gpt2_tok.merges


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
    assert sorted(p.name for p in out.iterdir()) == sorted([*train.FILES.values(), fileio.MARKER])
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


def test_default_run_compares_with_gpt2_and_the_homework(tmp_path, user_error):
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
    h = s["homework"]
    assert h["schema"] == "llmhw-bpe-homework/1" and h["reproduces_published"] is True
    variants = {v["name"]: v for v in h["variants"]}
    assert (variants["homework"]["english"], variants["homework"]["chinese"]) == (938, 113)  # the re-run itself
    assert h["alphabet"]["first_tokens_match_published"] and h["alphabet"]["last_tokens_match_published"]
    assert h["merges"]["homework"] == 1024 - h["alphabet"]["size"] and h["merges"]["ours"] == 768
    assert h["missing_bytes"]["english"]["chars"] == {"j": 3, "z": 1} and h["missing_bytes"]["chinese"]["bytes"] == 0
    for k in ("english", "chinese"):
        assert variants["ours"][k] == c[k]["ours"]
        # the effects telescope: together they are exactly homework - ours
        assert sum(e[k] for e in h["effects"].values()) == variants["homework"][k] - variants["ours"][k]
        assert h["merge_order_encode"][k] == variants["homework_rank_encode"][k]
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    log = (out / "output.log").read_text()
    assert "homework   938" in log and "gpt2   185" in log and "effect dropped_bytes" in log
    user_error(["--out_dir", str(out)], "--overwrite")  # a second run never replaces the first one unasked


@pytest.fixture(scope="module")
def pipeline_tokenizer(tmp_path_factory):
    """The pretraining tokenizer as the pipeline makes it: several inputs (a data-directory name and a path), GPT-2
    pattern, an end-of-text special, vocab 4096."""
    tmp = tmp_path_factory.mktemp("pipe")
    extra = tmp / "pretrain_text.txt"
    extra.write_text(fileio.find("tinyshakespeare.txt").read_text(encoding="utf-8")[:200000], encoding="utf-8")
    out = tmp / "tok"
    s = train.main(["--input", "webtext/wikitext2_valid.txt", str(extra), "--vocab_size", "4096", "--pattern", "gpt2",
                    "--special", "<|endoftext|>", "--out_dir", str(out)])
    text = fileio.find("webtext/wikitext2_valid.txt").read_text(encoding="utf-8") + "\n" + extra.read_text()
    return out, s, text


def test_pipeline_tokenizer_is_what_prepare_needs(pipeline_tokenizer):
    # pretrain/prepare.py reads tokenizer.json with HF `tokenizers`: the end-of-text id, the vocabulary size, a
    # pre-tokenizer that splits text (so it may encode a file in pieces), and ids equal to ours
    from tokenizers import Tokenizer as HFTokenizer

    out, s, text = pipeline_tokenizer
    tok = Tokenizer.load(out / "tokenizer.model")
    hf = HFTokenizer.from_file(str(out / "tokenizer.json"))
    assert s["vocab_size"] == 4096 == hf.get_vocab_size(with_added_tokens=True) == tok.vocab_size
    assert hf.token_to_id("<|endoftext|>") == 4095 == tok.special_tokens["<|endoftext|>"]
    pre = json.loads((out / "tokenizer.json").read_text())["pre_tokenizer"]
    assert [p["type"] for p in pre["pretokenizers"]] == ["Split", "ByteLevel"]
    sample = text[:300000]
    assert hf.encode(sample, add_special_tokens=False).ids == tok.encode_ordinary(sample)
    assert s["homework"] == {"schema": "llmhw-bpe-homework/1", "skipped": train.homework.skip_reason(
        "gpt2", ["<|endoftext|>"], 0, 4096)}
    assert s["n_tokens"] == len(tok.encode_ordinary(text)) and s["roundtrip_ok"]


def test_streamed_roundtrip_equals_whole_text(pipeline_tokenizer):
    # pieces cut at a newline between non-spaces: the GPT-2 pattern splits there anyway, so the count is exact
    out, _, text = pipeline_tokenizer
    tok = Tokenizer.load(out / "tokenizer.model")
    text = text[:400000]
    check = train.roundtrip(tok, text, size=5000)
    assert check["pieces"] > 50 and check["ok"] and check["bytes"] == len(text.encode())
    assert check["tokens"] == len(tok.encode_ordinary(text))
    assert "".join(train.pieces(text, 5000)) == text


def test_hf_folder_loads_with_auto_tokenizer(pipeline_tokenizer):
    # the folder is a complete HF tokenizer: AutoTokenizer loads it (tokenizer_config.json names the class and the
    # special-token roles) and encodes and decodes as ours does, special tokens in the text recognised
    from transformers import AutoTokenizer

    out, _, text = pipeline_tokenizer
    tok = Tokenizer.load(out / "tokenizer.model")
    auto = AutoTokenizer.from_pretrained(str(out))
    assert (auto.eos_token, auto.bos_token, auto.pad_token) == ("<|endoftext|>",) * 3
    assert auto.eos_token_id == auto.pad_token_id == 4095 and auto.model_max_length == 1024
    sample = text[:2000] + "<|endoftext|>" + text[2000:4000]
    ids = auto(sample)["input_ids"]
    assert ids == tok.encode(sample, allowed_special="all") and auto.decode(ids) == sample
    batch = auto([text[:50], text[:80]], padding=True)["input_ids"]  # pad is set: batching works
    assert len(batch[0]) == len(batch[1])
    assert json.loads((out / "special_tokens_map.json").read_text())["eos_token"] == "<|endoftext|>"


# tests/run.sh builds a virtual environment with the oldest transformers requirements.txt allows and names it here.
OLDEST_PYTHON = os.environ.get("LLMHW_OLDEST_TRANSFORMERS_PYTHON")
OLD_CHECK = """import json, sys
import transformers
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.stdin.read())
print(json.dumps([transformers.__version__] + [tok(t)["input_ids"] for t in texts]
                 + [[tok.decode(tok(t)["input_ids"]) for t in texts]]))"""


@pytest.mark.skipif(not OLDEST_PYTHON, reason="LLMHW_OLDEST_TRANSFORMERS_PYTHON is not set (tests/run.sh builds that "
                                              "environment and sets it)")
def test_hf_folder_loads_with_oldest_transformers(pipeline_tokenizer):
    import subprocess

    out, _, text = pipeline_tokenizer
    tok = Tokenizer.load(out / "tokenizer.model")
    texts = [text[:5000] + "<|endoftext|> x", "北京大学 Peking's  123 \n\n end"]
    assert os.path.exists(OLDEST_PYTHON), f"{OLDEST_PYTHON} missing: tests/run.sh could not build it"
    r = subprocess.run([OLDEST_PYTHON, "-c", OLD_CHECK, str(out)], input=json.dumps(texts),
                       capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    version, *ids, decoded = json.loads(r.stdout.strip().splitlines()[-1])
    floor = re.search(r"^transformers>=([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert version.startswith(floor + "."), (version, floor)  # really the oldest requirements.txt allows
    assert ids == [tok.encode(t, allowed_special="all") for t in texts] and decoded == texts
