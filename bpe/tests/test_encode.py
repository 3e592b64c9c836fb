"""Encoding against tiktoken (GPT-2 files and exports of our own tokenizers), round trips, special-token policy."""
import json
import lzma
import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import fileio

# every text corpus in the data directory: the ones ../shared/data/README.md lists (missing ones fail loudly) plus any
# other text file found there (not the GPT-2 vocabulary files themselves, not READMEs)
KNOWN_CORPORA = ["tinyshakespeare.txt", "bpe/manual.txt", "bpe/lunyu.txt", "webtext/wikitext2_valid.txt",
                 "hellaswag/hellaswag_val_activitynet.jsonl", "alpaca/alpaca_data.json.xz"]


def all_corpora():
    found = set()
    root = Path(os.environ.get("LLMHW_DATA_DIR", "/nonexistent")).expanduser()
    if root.is_dir():
        for p in root.rglob("*"):
            name = p.relative_to(root).as_posix()
            if p.is_file() and p.name.endswith((".txt", ".jsonl", ".json", ".json.xz")) and \
                    not name.startswith("gpt2/") and not p.name.lower().startswith("readme"):
                found.add(name)
    return KNOWN_CORPORA + sorted(found - set(KNOWN_CORPORA))


CORPORA = all_corpora()


def read_corpus(name):
    path = fileio.find(name)
    if name.endswith(".xz"):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", CORPORA)
def test_gpt2_files_match_tiktoken_on_every_corpus(name, gpt2_tok, tiktoken_gpt2):
    text = read_corpus(name)  # each corpus is encoded once, whole (the alpaca json is 22.8 MB)
    ours = gpt2_tok.encode_ordinary(text)
    ref = tiktoken_gpt2.encode_ordinary(text)
    mismatches = sum(a != b for a, b in zip(ours, ref)) + abs(len(ours) - len(ref))
    assert mismatches == 0, f"{name}: {mismatches} mismatching ids (ours {len(ours)}, tiktoken {len(ref)})"
    assert gpt2_tok.decode(ours) == text


def test_gpt2_known_ids(gpt2_tok):
    # data README: tiktoken gpt2 encodes 'Hello world' as [15496, 995]
    assert gpt2_tok.encode("Hello world") == [15496, 995]
    assert gpt2_tok.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert gpt2_tok.vocab_size == 50257


def list_merge(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    """tiktoken's merge written plainly: merge the leftmost adjacent pair of lowest rank until none is a token."""
    parts = [piece[i:i + 1] for i in range(len(piece))] if piece not in ranks else [piece]
    while len(parts) > 1:
        pair_ranks = [ranks.get(a + b, float("inf")) for a, b in zip(parts, parts[1:])]
        if (m := min(pair_ranks)) == float("inf"):
            break
        i = pair_ranks.index(m)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def test_heap_merge_equals_list_merge_and_tiktoken(gpt2_tok, tiktoken_gpt2, manual_text):
    text = manual_text[:3000].encode()
    for piece in (text, b"a" * 1000, b"ab" * 700, text[1:2001], b" hello", b"Supercalifragilistic", b"x", b"\xff\xfe"):
        heap = gpt2_tok.encode_piece(piece)
        assert heap == list_merge(gpt2_tok.ranks, piece) == tiktoken_gpt2._encode_single_piece(piece)


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=60))
def test_roundtrip_and_tiktoken_equality_random_unicode(gpt2_tok, tiktoken_gpt2, text):
    ids = gpt2_tok.encode_ordinary(text)
    assert ids == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_tok.decode(ids) == text


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80))
def test_roundtrip_random_bytes(small_trained, data):
    tok = small_trained["none"]
    text = data.decode("utf-8", errors="surrogateescape").encode("utf-8", errors="surrogateescape").decode(
        "utf-8", errors="replace")
    assert tok.decode(tok.encode(text)) == text
    # exact bytes through decode_bytes: raw bytes as ids (pattern none) and back
    assert tok.decode_bytes(tok.encode_piece(data)) == data


SPECIAL_BITS = ["<|endoftext|>", "<|pad|>", "<|endoftext", "|>", "<|"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet=st.characters(codec="utf-8"), max_size=30), st.sampled_from(SPECIAL_BITS)),
                max_size=5).map("".join), st.sampled_from(["none", "gpt2", "gpt4"]))
def test_exports_match_ours_random_text(small_trained, exports, text, pattern):
    # The exports' real semantics: the tiktoken export has our policy (encode_ordinary: specials are plain text);
    # the HF tokenizer.json recognises its special tokens (added tokens) anywhere in the text, which is ours with
    # allowed_special="all". On text without a special token the two policies coincide.
    tok = small_trained[pattern]
    ordinary, with_specials = tok.encode_ordinary(text), tok.encode(text, allowed_special="all")
    assert exports[pattern]["tiktoken"].encode_ordinary(text) == ordinary
    assert exports[pattern]["hf"].encode(text).ids == with_specials
    if not any(s in text for s in tok.special_tokens):
        assert with_specials == ordinary
    assert tok.decode(ordinary) == tok.decode(with_specials) == text


@pytest.mark.parametrize("pattern", ["none", "gpt2"])
def test_hf_export_recognises_specials_where_encode_ordinary_does_not(small_trained, exports, pattern):
    tok = small_trained[pattern]
    text = "a<|endoftext|>b <|pad|>"
    hf_ids = exports[pattern]["hf"].encode(text).ids
    assert hf_ids == tok.encode(text, allowed_special="all") != tok.encode_ordinary(text)
    assert tok.special_tokens["<|endoftext|>"] in hf_ids and tok.special_tokens["<|endoftext|>"] not in \
        tok.encode_ordinary(text)


@pytest.fixture(scope="module")
def exports(small_trained, tmp_path_factory):
    """tiktoken and HF (loaded back from a written tokenizer.json) exports of each small trained tokenizer."""
    from tokenizers import Tokenizer as HFTokenizer

    out = {}
    for pattern, tok in small_trained.items():
        path = tmp_path_factory.mktemp(pattern) / "tokenizer.json"
        tok.save_hf(path.parent)
        out[pattern] = {"tiktoken": tok.to_tiktoken(), "hf": HFTokenizer.from_file(str(path)), "path": path}
    return out


@pytest.mark.parametrize("pattern", ["none", "gpt2", "gpt4"])
def test_exports_match_ours_on_corpora(pattern, small_trained, exports):
    tok = small_trained[pattern]
    text = read_corpus("bpe/manual.txt")[50000:110000] + read_corpus("tinyshakespeare.txt")[:60000] + \
        read_corpus("bpe/lunyu.txt")[:20000]
    ours = tok.encode_ordinary(text)
    assert exports[pattern]["tiktoken"].encode_ordinary(text) == ours
    assert exports[pattern]["hf"].encode(text).ids == ours
    assert exports[pattern]["hf"].decode(ours) == text


@pytest.mark.parametrize("pattern", ["none", "gpt2"])
def test_transformers_fast_tokenizer_same_ids_and_specials(pattern, small_trained, exports):
    from transformers import PreTrainedTokenizerFast

    tok = small_trained[pattern]
    fast = PreTrainedTokenizerFast(tokenizer_file=str(exports[pattern]["path"]))
    text = "Hello<|endoftext|> 北京大学 world!\n\n<|pad|>  end"
    ours = tok.encode(text, allowed_special="all")
    assert fast(text)["input_ids"] == ours
    assert exports[pattern]["hf"].encode(text).ids == ours
    assert tok.special_tokens["<|endoftext|>"] in ours and fast.decode(ours) == text
    assert len(fast) == tok.vocab_size


def test_gpt2_exports_match_tiktoken(gpt2_tok, tiktoken_gpt2, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    text = read_corpus("webtext/wikitext2_valid.txt")[:200000] + read_corpus("bpe/manual.txt")[:20000]
    ref = tiktoken_gpt2.encode(text + "<|endoftext|>", allowed_special="all")
    assert gpt2_tok.to_tiktoken().encode(text + "<|endoftext|>", allowed_special="all") == ref
    gpt2_tok.save_hf(tmp_path)
    assert HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text + "<|endoftext|>").ids == ref


def test_special_token_policy(small_trained):
    tok = small_trained["gpt2"]
    eot, pad = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|pad|>"]
    text = "a<|endoftext|>b<|pad|>"
    with pytest.raises(ValueError, match="special token"):
        tok.encode(text)
    with pytest.raises(ValueError, match="<\\|pad\\|>"):
        tok.encode(text, allowed_special={"<|endoftext|>"})
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(eot) == 1 and ids.count(pad) == 1 and tok.decode(ids) == text
    as_text = tok.encode(text, disallowed_special=())
    assert eot not in as_text and pad not in as_text and as_text == tok.encode_ordinary(text)
    mixed = tok.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert eot in mixed and pad not in mixed and tok.decode(mixed) == text
    enc = tok.to_tiktoken()
    assert enc.encode(text, allowed_special="all") == ids
    assert enc.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=()) == mixed
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_special_not_allowed_is_ordinary_text_as_tiktoken():
    # a special that is not allowed is ordinary text and merges with its neighbours: with " <|" learned, the GPT-2
    # piece " <|" of "a <|pad|>" is one token, not " " + "<|" (as when the text is cut at every special)
    from tokenizer import Tokenizer
    tok = Tokenizer("gpt2").train("a <|b <|c <|pad|> d <|e " * 30, 290, special_tokens=["<|endoftext|>", "<|pad|>"])
    enc = tok.to_tiktoken()
    assert b" <|" in tok.vocab.values()
    for t in ("hello <|pad|> x<|endoftext|>", "<|endoftext|> <|pad|><|endoftext|><|pad|>", " <|pad|>\n"):
        for allowed in ({"<|endoftext|>"}, {"<|pad|>"}):
            ours = tok.encode(t, allowed_special=allowed, disallowed_special=())
            assert ours == enc.encode(t, allowed_special=allowed, disallowed_special=()) and tok.decode(ours) == t


def test_decode_errors_and_replacement(small_trained):
    tok = small_trained["none"]
    with pytest.raises(ValueError, match="token id 99999 is not in the vocabulary"):
        tok.decode([1, 99999])
    with pytest.raises(ValueError, match="token id -1"):
        tok.decode_bytes([-1])
    assert tok.decode(iter([104, 105])) == tok.decode((104, 105)) == "hi"
    import numpy as np
    import torch
    ids = tok.encode("北京 abc")
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == "北京 abc"
    cut = [0xe5, 0x8c]  # the first two bytes of a three-byte character
    assert tok.decode_bytes(cut) == b"\xe5\x8c"
    assert tok.decode(cut) == "\ufffd" == tok.to_tiktoken().decode(cut)


def test_hf_json_is_plain_json(exports):
    d = json.loads(exports["gpt2"]["path"].read_text())
    assert d["model"]["type"] == "BPE" and d["model"]["ignore_merges"] is True
    assert {t["content"] for t in d["added_tokens"]} == {"<|endoftext|>", "<|pad|>"}
