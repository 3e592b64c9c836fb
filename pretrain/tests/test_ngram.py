"""ngram.py: the count baselines against a hand-checked example and a naive implementation; the model scorer against
transformers' own loss; bits per byte against the text."""
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

import ngram
import prepare


def test_kneser_ney_and_unigram_equal_a_hand_checked_example():
    # train 0 1 0 1 2 1, D = 0.5. Bigram types: (0,1) x2, (1,0), (1,2), (2,1): 4 types.
    # Continuation: N1+(.0) = 1, N1+(.1) = 2, N1+(.2) = 1 -> ((n - D) + D * 3/3) / 4 = 1/4, 1/2, 1/4.
    # p(1|0) = (2 - D)/2 + D * 1/2 * 1/2 = 0.875;  p(0|0) = p(2|0) = D * 1/2 * 1/4 = 0.0625
    # p(1|2) = (1 - D)/1 + D * 1/1 * 1/2 = 0.75;    p(0|2) = p(2|2) = 0.125
    # p(0|1) = (1 - D)/2 + D * 2/2 * 1/4 = 0.375;  p(2|1) = 0.375;  p(1|1) = D * 2/2 * 1/2 = 0.25
    train = np.array([0, 1, 0, 1, 2, 1])
    kn = ngram.KneserNeyBigram(train, V=3, D=0.5)
    assert kn.continuation.tolist() == pytest.approx([0.25, 0.5, 0.25])
    prev, nxt = np.repeat(np.arange(3), 3), np.tile(np.arange(3), 3)
    want = [0.0625, 0.875, 0.0625, 0.375, 0.25, 0.375, 0.125, 0.75, 0.125]
    assert kn.prob(prev, nxt).tolist() == pytest.approx(want)
    # an id never seen as a context (3 in a vocabulary of 4) falls back to the continuation distribution, which
    # still gives the never-seen id 3 some mass (the uniform part)
    kn4 = ngram.KneserNeyBigram(train, V=4, D=0.5)
    assert kn4.prob(np.array([3, 3]), np.array([1, 3])).tolist() == pytest.approx([1.5 / 4 + 0.5 * 3 / 4 / 4,
                                                                                   0.5 * 3 / 4 / 4])
    # unigram, add-one: counts 2, 3, 1 of 6 -> (c + 1) / 9
    assert np.exp(-ngram.unigram_nll(train, np.array([0, 1, 2]), 3)).tolist() == pytest.approx([3 / 9, 4 / 9, 2 / 9])


def naive_kneser_ney(train, V, D):
    """The textbook formula with dictionaries, one probability at a time."""
    pairs = Counter(zip(train[:-1].tolist(), train[1:].tolist()))
    ctx, follow, precede = Counter(), Counter(), Counter()
    for (v, w), c in pairs.items():
        ctx[v] += c
        follow[v] += 1
        precede[w] += 1

    def p(v, w):
        cont = (max(precede[w] - D, 0) + D * len(precede) / V) / len(pairs)
        if ctx[v] == 0:
            return cont
        return max(pairs[(v, w)] - D, 0) / ctx[v] + D * follow[v] / ctx[v] * cont
    return p


def test_kneser_ney_equals_the_naive_formula_and_sums_to_one():
    rng = np.random.default_rng(0)
    V = 40
    train = rng.zipf(1.5, 3000) % (V - 3)  # skewed, and ids V-3 .. V-1 never occur
    kn, naive = ngram.KneserNeyBigram(train, V), naive_kneser_ney(train, V, ngram.DISCOUNT)
    prev, nxt = np.repeat(np.arange(V), V), np.tile(np.arange(V), V)
    fast = kn.prob(prev, nxt)
    assert fast.tolist() == pytest.approx([naive(v, w) for v, w in zip(prev.tolist(), nxt.tolist())], rel=1e-12)
    assert fast.reshape(V, V).sum(1) == pytest.approx(np.ones(V), abs=1e-12)  # a distribution for every context
    assert (fast > 0).all()


def test_model_scorer_equals_transformers_own_loss(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=50)).eval()
    model.save_pretrained(tmp_path)
    tokens = np.random.default_rng(1).integers(0, 50, 29)  # 3 full windows of 8 predictions, then 4 more
    nll = ngram.model_nll(tmp_path, tokens, batch_size=2)
    assert len(nll) == len(tokens) - 1  # every token after the first, once
    total = 0.0
    with torch.no_grad():
        for s in range(0, 28, 8):
            x = torch.tensor(tokens[s:s + 9])  # 9 tokens: 8 inputs, each predicting the next
            logits = model(x[None, :-1]).logits[0]  # (n, V)
            total += torch.nn.functional.cross_entropy(logits, x[1:], reduction="sum").item()
    assert nll.sum() == pytest.approx(total, rel=1e-5)


def test_bits_per_byte_counts_the_text_bytes_without_end_of_text(tmp_path):
    decode = lambda ids: "".join("é" if i == 1 else "ab" for i in ids)  # noqa: E731  (é is 2 UTF-8 bytes)
    assert ngram.text_bytes(np.array([0, 1, 9, 0, 9, 1]), decode, eot_id=9) == (2 + 2) + 2 + 2
    assert ngram.text_bytes(np.array([0, 1]), decode, eot_id=None) == 4


def test_baselines_on_prepared_shards(tmp_path):
    text = "the cat sat on the mat. " * 200 + "a dog ran to the log. " * 200
    (tmp_path / "t.txt").write_text(text)
    prepare.prepare(tmp_path / "d", [str(tmp_path / "t.txt")], workers=0)
    r = ngram.main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "b.json")])
    assert json.loads((tmp_path / "b.json").read_text()) == r
    b = r["baselines"]
    assert b["bigram"]["nats_per_token"] < b["unigram"]["nats_per_token"]
    # bits per byte = nats per token * tokens / bytes / ln 2
    assert b["bigram"]["bits_per_byte"] == pytest.approx(
        b["bigram"]["nats_per_token"] * r["val_tokens"] / r["val_bytes"] / math.log(2))
