"""The homework's tokenizer re-run (homework.py): hand-checked tiny examples and a literal Counter-based oracle. The
published figures (938 / 113 tokens, first and last tokens) reproduced from manual.txt: test_io.py's default run."""
from collections import Counter

from hypothesis import given, settings, strategies as st

import homework
from tokenizer import Tokenizer
from trainer import merge_pair


def counter_homework_train(data: bytes, vocab_size: int):
    """The homework's trainer written as it was (pure Python, collections.Counter): the oracle for the numpy one."""
    vocab = [bytes([b]) for b in sorted(Counter(data))]
    ids = [vocab.index(bytes([b])) for b in data]
    merges = []
    while len(vocab) < vocab_size:
        stats = Counter(zip(ids, ids[1:]))
        if not stats:
            break
        (a, b), _ = stats.most_common(1)[0]
        if vocab[a] + vocab[b] in vocab:
            break
        merges.append((vocab[a], vocab[b]))
        vocab.append(vocab[a] + vocab[b])
        ids = merge_pair(ids, a, b, len(vocab) - 1)
    return merges


def test_hand_checked_tie_break_and_alphabet():
    # "abab cab": (a, b) occurs 3 times -> "ab". Then [ab ab ' ' c ab]: four pairs, each once. The homework takes
    # the one seen first, (ab, ab); ours the smallest ids, (' ', c) = (32, 99) before any pair holding ab = 256.
    data = b"abab cab"
    assert homework.corpus_alphabet(data) == [32, 97, 98, 99]
    assert homework.train_first_seen(data, 6) == [(b"a", b"b"), (b"ab", b"ab")]
    ours = Tokenizer().train(data, 258)
    assert [ours.vocab[i] for _, _, i in ours.merges] == [b"ab", b" c"]


def test_hand_checked_pass_encode_differs_from_rank_order():
    # merges in training order: bc (rank 0), ab (1), bcd (2). "abcd":
    #   lowest rank first: a|bc|d -> a|bcd = 2 tokens; merge order gives the same
    #   the homework's passes: (a, b) is known, so ab|c|d; no known pair is left -> 3 tokens
    a, b, c, d, bc, ab, bcd = 0, 1, 2, 3, 4, 5, 6
    pairs = {(b, c): bc, (a, b): ab, (bc, d): bcd}
    assert homework.encode_passes([a, b, c, d], pairs) == [ab, c, d]
    assert homework.encode_merge_order([a, b, c, d], pairs) == [a, bcd]
    tok = homework.as_tokenizer([(b"b", b"c"), (b"a", b"b"), (b"bc", b"d")])
    assert [tok.vocab[i] for i in tok.encode_piece(b"abcd")] == [b"a", b"bcd"]


def test_missing_bytes_are_counted_and_dropped():
    alphabet = set(b"ab ")
    assert homework.missing_bytes("ab zaj 北", alphabet) == {"bytes": 5, "chars": {"z": 1, "j": 1, "北": 1}}


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=60).map(lambda b: bytes(x % 5 + 97 for x in b)), st.integers(1, 12))
def test_numpy_trainer_equals_counter_oracle(data, n_merges):
    vocab_size = len(set(data)) + n_merges
    assert homework.train_first_seen(data, vocab_size) == counter_homework_train(data, vocab_size)
