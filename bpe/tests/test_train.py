"""The incremental trainer against a naive (minbpe-style, recount-everything) reference and hand-checked examples."""
import random
from collections import Counter
from unittest import mock

import pytest
import regex
from hypothesis import given, settings, strategies as st

from tokenizer import PATTERNS, Tokenizer, train_merges
from trainer import merge_pair, naive_train_merges


def naive_train(text, vocab_size, pattern="none", specials=()):
    """Reference trainer: recount every pair of every chunk occurrence after each merge (O(merges * corpus)).

    Same documented contract as Tokenizer.train: highest count, ties -> smallest (left id, right id); occurrences
    merged left to right; a merge whose bytes already exist reuses that id; specials split the text and are not
    learned. Chunks are kept once per occurrence (no deduplication), so it also checks the weighting."""
    if isinstance(text, bytes):
        assert pattern == "none" and not specials
        return _naive_merges([list(text)], vocab_size)
    pieces = regex.split("|".join(regex.escape(s) for s in specials), text) if specials else [text]
    chunks = []
    for piece in pieces:
        if piece:
            chunks += [list(c.encode()) for c in (regex.findall(PATTERNS[pattern], piece) if PATTERNS[pattern]
                                                  else [piece])]
    return _naive_merges(chunks, vocab_size - len(specials))


def _naive_merges(chunks, n_tokens):
    """Every chunk occurrence kept separately (no counts): recount all pairs, merge the best everywhere."""
    vocab = [bytes([i]) for i in range(256)]
    merges = []
    while len(vocab) < n_tokens:
        stats = Counter(pair for ids in chunks for pair in zip(ids, ids[1:]))
        if not stats:
            break
        (a, b) = min(stats, key=lambda p: (-stats[p], p))
        if vocab[a] + vocab[b] not in vocab:  # else its existing id is reused
            vocab.append(vocab[a] + vocab[b])
        merges.append((a, b, vocab.index(vocab[a] + vocab[b])))
        chunks = [merge_pair(ids, *merges[-1]) for ids in chunks]
    return merges, vocab


def test_wikipedia_example():
    # https://en.wikipedia.org/wiki/Byte_pair_encoding: aaabdaaabac -> Z=aa, Y=ab, X=ZY -> XdXac
    tok = Tokenizer().train("aaabdaaabac", 259)
    assert tok.merges == [(97, 97, 256), (97, 98, 257), (256, 257, 258)]
    assert [tok.vocab[i] for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert tok.decode(tok.encode("aaabdaaabac")) == "aaabdaaabac"


def test_overlapping_pairs_merge_left_to_right():
    tok = Tokenizer().train("aaa", 257)
    assert tok.merges == [(97, 97, 256)]
    assert tok.encode("aaa") == [256, 97]


def test_tie_break_is_smallest_pair():
    # every pair occurs once: (a,b), (b,c), (c,d) -> (a,b) first, then (ab, c) vs (c, d): (c, d) has smaller ids
    tok = Tokenizer().train("abcd", 258)
    assert tok.merges == [(97, 98, 256), (99, 100, 257)]


def test_existing_bytes_are_reused_not_duplicated():
    # If a merge spells bytes that are already a token, the trainer reuses that id (a duplicate byte string would
    # have two ranks). Plain training rarely meets this, so start from a vocabulary that already holds 'ab'.
    vocab = [bytes([i]) for i in range(256)] + [b"ab"]
    merges = train_merges({b"abab": 3, b"xy": 1}, vocab, 2)
    assert merges[0] == (97, 98, 256)        # 'ab' reused: no new token
    assert merges[1] == (256, 256, 257)      # 'abab' is new
    assert merges[2] == (120, 121, 258)      # 'xy': second new token, then stop
    assert len(merges) == 3 and vocab[256:] == [b"ab", b"abab", b"xy"]
    assert len(set(vocab)) == len(vocab)


@pytest.mark.parametrize("pattern", ["none", "gpt2", "gpt4"])
def test_matches_naive_on_real_text(pattern, manual_text):
    text = manual_text[1000:2500] + " The quick brown fox's 123,456 jumps;\n\n  over   it. " * 5
    merges, vocab = naive_train(text, 256 + 120, pattern)
    tok = Tokenizer(pattern).train(text, 256 + 120)
    assert tok.merges == merges
    assert [tok.vocab[i] for i in range(len(vocab))] == vocab


def test_matches_naive_with_specials():
    text = "hello<|endoftext|>hello world<|sep|>low lower lowest" * 4
    specials = ["<|endoftext|>", "<|sep|>"]
    merges, vocab = naive_train(text, 300, "gpt2", specials)
    tok = Tokenizer("gpt2").train(text, 300, special_tokens=specials)
    assert tok.merges == merges
    assert tok.special_tokens == {"<|endoftext|>": len(vocab), "<|sep|>": len(vocab) + 1}
    assert b"<|" not in b"".join(tok.vocab[m[2]] for m in tok.merges), "specials must not be learned"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="aabbc d\n", min_size=1, max_size=80), st.integers(257, 300),
       st.sampled_from(["none", "gpt2"]))
def test_matches_naive_random_small_corpora(text, vocab_size, pattern):
    # a tiny alphabet makes many ties and overlapping runs ('aaaa', 'abab')
    merges, _ = naive_train(text, vocab_size, pattern)
    assert Tokenizer(pattern).train(text, vocab_size).merges == merges


def test_random_bytes_corpus_matches_naive():
    # raw (non-UTF-8) bytes, pattern none: compare against the naive reference on the same byte sequence
    rng = random.Random(0)
    data = bytes(rng.choice(b"abcab\x00\xff") for _ in range(3000))
    merges, _ = naive_train(data, 330)
    assert Tokenizer().train(data, 330).merges == merges


def test_trained_tokenizer_roundtrips_and_compresses(manual_text):
    tok = Tokenizer("none").train(manual_text[:30000], 512)
    ids = tok.encode(manual_text[:30000])
    assert tok.decode(ids) == manual_text[:30000]
    assert len(ids) < len(manual_text[:30000].encode()) / 1.5
    assert tok.vocab_size == 512 and len(tok.merges) == 256


def test_runs_out_of_pairs_gracefully():
    tok = Tokenizer().train("abab", 1000, special_tokens=["<s>"])
    assert tok.merges == [(97, 98, 256), (256, 256, 257)]
    assert tok.special_tokens == {"<s>": 258}
    single = Tokenizer().train("a", 300, special_tokens=["<s>"])  # no pair at all
    assert single.merges == [] and single.special_tokens == {"<s>": 256} and single.encode("a") == [97]


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=12).map(lambda b: bytes(x % 4 + 97 for x in b)),
                       st.integers(1, 9), min_size=1, max_size=8), st.integers(1, 30))
def test_fast_trainer_equals_the_reference_trainer(chunks, n_new):
    # trainer.py's two trainers on weighted chunks (many ties, runs like 'aaaa'): identical merges and vocabularies
    fast_vocab, slow_vocab = [bytes([i]) for i in range(256)], [bytes([i]) for i in range(256)]
    assert train_merges(chunks, fast_vocab, n_new) == naive_train_merges(chunks, slow_vocab, n_new)
    assert fast_vocab == slow_vocab


def test_invalid_utf8_bytes_need_pattern_none():
    with pytest.raises(ValueError, match="UTF-8"):
        Tokenizer("gpt2").train(b"\xff\xfe abc", 300)
    assert Tokenizer("none").train(b"\xff\xfe\xff\xfe", 257).merges == [(255, 254, 256)]


def test_bad_pattern():
    with pytest.raises(ValueError, match="valid regex"):
        Tokenizer("(unclosed")


def tiktoken_pattern(name: str) -> str:
    """The split regex of a tiktoken encoding from tiktoken's own source (its rank file, not available offline, is
    stubbed out: only the pattern is read)."""
    from tiktoken_ext import openai_public

    with mock.patch.object(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {}):
        return getattr(openai_public, name)()["pat_str"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list("ab1234 \t\n\r'.!é中") + ["'s", "'LL", "  ", "\n\n"]), max_size=16).map("".join))
def test_gpt4_pattern_splits_as_tiktoken_cl100k(text):
    assert regex.findall(PATTERNS["gpt4"], text) == regex.findall(tiktoken_pattern("cl100k_base"), text)


def test_gpt4_pattern_trailing_whitespace():
    # tiktoken's `\s++$` branch: whitespace ending the text stays one piece
    assert regex.findall(PATTERNS["gpt4"], "a\n ") == ["a", "\n "]


def test_pairs_counted_in_small_blocks_train_the_same(monkeypatch, manual_text):
    # count_byte_pairs works in blocks of slots (bounded memory); blocks of 7 slots cut every pair list into many
    # runs: the merges must not change
    import trainer
    text = manual_text[:3000].encode() + b"aaaaaaa abab" * 20
    merges, _ = naive_train(text, 256 + 80)
    monkeypatch.setattr(trainer.MergeState.count_byte_pairs, "__defaults__", (7,))
    assert Tokenizer().train(text, 256 + 80).merges == merges
