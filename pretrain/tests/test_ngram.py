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
    kn = ngram.KneserNey(train, V=3, order=3, D=0.5)
    assert kn.lowest.tolist() == pytest.approx([0.25, 0.5, 0.25])
    prev, nxt = np.repeat(np.arange(3), 3), np.tile(np.arange(3), 3)
    want = [0.0625, 0.875, 0.0625, 0.375, 0.25, 0.375, 0.125, 0.75, 0.125]
    assert kn.prob(prev[:, None], nxt, order=2).tolist() == pytest.approx(want)
    # order 3: trigram types 010, 101, 012, 121 (each once); below the top order the bigrams count continuations,
    # N1+(. 1 0) = N1+(. 0 1) = N1+(. 1 2) = N1+(. 2 1) = 1, so p2(1|0) = (1 - D)/1 + D * 1/1 * 1/2 = 0.75 (not
    # 0.875), p2(0|0) = p2(2|0) = 0.125, and p2(.|1), p2(.|2) as above.
    # p(0|0 1) = (1 - D)/2 + D * 2/2 * p2(0|1) = 0.25 + 0.1875 = 0.4375 = p(2|0 1);  p(1|0 1) = D * 0.25 = 0.125
    # p(1|1 0) = (1 - D)/1 + D * 1/1 * p2(1|0) = 0.875;  p(0|1 0) = p(2|1 0) = D * 0.125 = 0.0625
    # context 2 2 was never seen: p2(.|2) = 0.125, 0.75, 0.125
    history = np.repeat(np.array([[0, 1], [1, 0], [2, 2]]), 3, axis=0)
    want = [0.4375, 0.125, 0.4375, 0.0625, 0.875, 0.0625, 0.125, 0.75, 0.125]
    assert kn.prob(history, np.tile(np.arange(3), 3)).tolist() == pytest.approx(want)
    # an id never seen as a context (3 in a vocabulary of 4) falls back to the continuation distribution, which
    # still gives the never-seen id 3 some mass (the uniform part)
    kn4 = ngram.KneserNey(train, V=4, order=2, D=0.5)
    assert kn4.prob(np.array([[3], [3]]), np.array([1, 3])).tolist() == pytest.approx([1.5 / 4 + 0.5 * 3 / 4 / 4,
                                                                                       0.5 * 3 / 4 / 4])
    # unigram, add-one: counts 2, 3, 1 of 6 -> (c + 1) / 9
    assert np.exp(-ngram.unigram_nll(train, np.array([0, 1, 2]), 3)).tolist() == pytest.approx([3 / 9, 4 / 9, 2 / 9])


def naive_kneser_ney(train, V, order, D):
    """The textbook recursion with dictionaries, one probability at a time: occurrence counts at the top order,
    continuation counts (distinct left neighbours) below, uniform under the lowest."""
    t = train.tolist()
    grams = {k: Counter(tuple(t[i - k + 1:i + 1]) for i in range(k - 1, len(t))) for k in range(1, order + 1)}
    cont = {k: Counter(g[1:] for g in grams[k + 1]) for k in range(1, order)}

    def p(history, w, n=order):
        if n == 1:
            return (max(cont[1][(w,)] - D, 0) + D * len(cont[1]) / V) / sum(cont[1].values())
        lower, h = p(history, w, n - 1), tuple(history[len(history) - n + 1:])
        counts = grams[n] if n == order else cont[n]
        ext = {g: c for g, c in counts.items() if g[:-1] == h and c > 0} if len(h) == n - 1 else {}
        total = sum(ext.values())
        if total == 0:
            return lower
        return max(counts.get(h + (w,), 0) - D, 0) / total + D * len(ext) / total * lower
    return p


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_kneser_ney_equals_the_naive_recursion_and_sums_to_one(order):
    rng = np.random.default_rng(order)
    V = 12
    train = rng.zipf(1.6, 1500) % (V - 2)  # skewed, repeating n-grams, and ids V-2, V-1 never occur
    val = np.concatenate([rng.zipf(1.6, 150) % V, train[100:150]])  # unseen ids and contexts, and seen ones
    kn, naive = ngram.KneserNey(train, V, 5), naive_kneser_ney(train, V, order, ngram.DISCOUNT)
    want = [-math.log(naive(val[max(0, i - order + 1):i].tolist(), int(val[i]))) for i in range(1, len(val))]
    assert kn.nll(val, order).tolist() == pytest.approx(want, rel=1e-12)  # per token, the short first histories too
    for i in (0, 3, 60, 170, 190):  # a distribution for every context: over the whole vocabulary it sums to 1
        history = np.repeat(np.concatenate([[-1] * 4, val])[None, i:i + order - 1], V, axis=0)
        p = kn.prob(history, np.arange(V), order)
        assert p.sum() == pytest.approx(1, abs=1e-12) and (p > 0).all()


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
    assert r["kind"] == "llmhw-ngram-baselines" and list(b) == ["1-gram", "2-gram", "3-gram", "4-gram", "5-gram"]
    assert b["3-gram"]["nats_per_token"] < b["2-gram"]["nats_per_token"] < b["1-gram"]["nats_per_token"]
    # bits per byte = nats per token * tokens / bytes / ln 2
    assert b["2-gram"]["bits_per_byte"] == pytest.approx(
        b["2-gram"]["nats_per_token"] * r["val_tokens"] / r["val_bytes"] / math.log(2))
    args = ["--data", str(tmp_path / "d"), "--orders", "3", "1", "--out", str(tmp_path / "b.json")]
    with pytest.raises(SystemExit):  # an earlier output is replaced only with --overwrite
        ngram.main(args)
    assert list(ngram.main([*args, "--overwrite"])["baselines"]) == ["1-gram", "3-gram"]
    assert list(json.loads((tmp_path / "b.json").read_text())["baselines"]) == ["1-gram", "3-gram"]


def test_scan_trains_a_candidate_by_train_py_and_scores_it_beside_the_counts(shakespeare, tmp_path, capsys):
    import scan

    out, spec = tmp_path / "scan", "L1-d32-T16-B2-lr3e-3-muon"
    r = scan.main(["--data", str(shakespeare), "--out_dir", str(out), "--seconds", "0.01", "--candidates", spec])
    assert r["best"] == spec and json.loads((out / "scan.json").read_text()) == r
    row = r["candidates"][0]
    assert row["steps"] == 10 and row["tokens"] == 10 * 2 * 16 and row["optimizer"] == "muon" and row["lr"] == 3e-3
    assert list(r["baselines"]["baselines"]) == ["1-gram", "2-gram", "3-gram", "4-gram", "5-gram"]
    assert f"| {spec} | " in (out / "scan.md").read_text() and "| vs counts |" in (out / "scan.md").read_text()
    with pytest.raises(SystemExit):  # an earlier scan is replaced only with --overwrite
        scan.main(["--data", str(shakespeare), "--out_dir", str(out), "--candidates", spec])
    assert "holds an earlier run's llmhw-scan output" in capsys.readouterr().err
