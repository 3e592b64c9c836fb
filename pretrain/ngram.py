"""Count baselines for a pretrained model: what a unigram and a bigram table learn from the same train shards.

    python pretrain/ngram.py --data SHARDS                       # unigram and bigram val loss of a prepared data set
    python pretrain/ngram.py --data SHARDS --model RUN/hf --out baselines.json   # and a HF model's, same tokens

A language model is only worth its compute if it beats counting. Both baselines are fitted on the train split and
scored on every token of the val split, in nats per token and in bits per UTF-8 byte of the val text (tokenizer-
independent: a model with a larger vocabulary predicts fewer, harder tokens):
  - unigram: add-one (Laplace) smoothed token frequencies;
  - bigram: interpolated Kneser-Ney with absolute discount D = 0.75 (Chen & Goodman 1998, eq. 26 for two orders),
    whose lowest order is itself interpolated with the uniform distribution, so unseen tokens get probability > 0.
``--model`` scores a Hugging Face model folder (transformers' GPT2LMHeadModel, not this folder's model code: an
independent implementation) on the same val tokens: windows of block_size+1 tokens at a stride of block_size, so
every val token after the first is predicted exactly once, as by the n-gram models.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from shards import DataError, read_meta, read_shard

DISCOUNT = 0.75  # Kneser-Ney's usual D; the exact optimum (n1 / (n1 + 2 n2)) is within a few hundredths of it


def split_tokens(data: str | Path, split: str) -> np.ndarray:
    """All tokens of a split, concatenated in shard order (int64)."""
    meta = read_meta(data)
    shards = [read_shard(Path(data) / name) for name in meta[split]["shards"]]
    if not shards or not sum(map(len, shards)):
        raise DataError(f"{data}: no {split} tokens (meta.json {split}.tokens 0)")
    return np.concatenate(shards).astype(np.int64)


def unigram_nll(train: np.ndarray, targets: np.ndarray, V: int) -> np.ndarray:
    """-log p(w) per target token; p(w) = (count(w) + 1) / (N + V)."""
    counts = np.bincount(train, minlength=V).astype(np.float64)
    return -np.log((counts[targets] + 1.0) / (len(train) + V))


class KneserNeyBigram:
    """Interpolated Kneser-Ney bigram model over ids 0..V-1 (sparse counts: fits GPT-2's 50k vocabulary too)."""

    def __init__(self, train: np.ndarray, V: int, D: float = DISCOUNT):
        self.V, self.D = V, D
        pairs, counts = np.unique(train[:-1] * V + train[1:], return_counts=True)  # bigram types and counts
        self.pairs, self.counts = pairs, counts.astype(np.float64)
        prev, nxt = pairs // V, pairs % V
        self.context_count = np.bincount(prev, weights=self.counts, minlength=V)  # c(v .)
        self.followers = np.bincount(prev, minlength=V).astype(np.float64)  # N1+(v .): distinct w after v
        preceders = np.bincount(nxt, minlength=V).astype(np.float64)  # N1+(. w): distinct v before w
        types = len(pairs)  # N1+(. .)
        # continuation probability, interpolated with the uniform distribution (leftover mass D * seen / types)
        self.continuation = (np.maximum(preceders - D, 0) + D * np.count_nonzero(preceders) / V) / types

    def prob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """p(nxt | prev) for arrays of ids."""
        codes = prev * self.V + nxt
        at = np.minimum(np.searchsorted(self.pairs, codes), len(self.pairs) - 1)
        c = np.where(self.pairs[at] == codes, self.counts[at], 0.0)  # c(prev, nxt), 0 if never seen
        cv = self.context_count[prev]
        seen = cv > 0
        safe = np.where(seen, cv, 1.0)
        backoff = self.D * self.followers[prev] / safe  # the mass the discount took from this context
        p = np.maximum(c - self.D, 0) / safe + backoff * self.continuation[nxt]
        return np.where(seen, p, self.continuation[nxt])  # an unseen context: the continuation distribution

    def nll(self, tokens: np.ndarray) -> np.ndarray:
        """-log p(t_i | t_{i-1}) for i = 1 .. len(tokens)-1."""
        return -np.log(self.prob(tokens[:-1], tokens[1:]))


def text_bytes(tokens: np.ndarray, decode, eot_id: int | None) -> int:
    """UTF-8 bytes of the text the tokens spell, end-of-text separators excluded (they are not text)."""
    cuts = np.flatnonzero(tokens == eot_id) if eot_id is not None else np.array([], dtype=np.int64)
    total, start = 0, 0
    for cut in [*cuts.tolist(), len(tokens)]:
        if cut > start:
            total += len(decode(tokens[start:cut].tolist()).encode("utf-8"))
        start = cut + 1
    return total


def model_nll(model_dir: str | Path, tokens: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """-log p(t_i | t_<i within its window) for i = 1 .. len(tokens)-1, by transformers' GPT2LMHeadModel."""
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(model_dir, use_safetensors=True).eval()
    T = model.config.n_positions
    starts = range(0, len(tokens) - 1, T)  # window [s, s+T] predicts tokens s+1 .. s+T (the last one may be shorter)
    full = [s for s in starts if s + T < len(tokens)]
    groups = [full[i:i + batch_size] for i in range(0, len(full), batch_size)]
    groups += [[s] for s in starts if s + T >= len(tokens)]  # the shorter last window alone
    out = []
    with torch.no_grad():
        for group in groups:
            x = torch.from_numpy(np.stack([tokens[s:s + T + 1] for s in group]))  # (b, n+1), n <= T
            logp = torch.log_softmax(model(x[:, :-1]).logits.float(), dim=-1)  # (b, n, V)
            out.append(-logp.gather(2, x[:, 1:, None])[..., 0].reshape(-1).numpy())  # (b*n,) in token order
    return np.concatenate(out).astype(np.float64)


def baselines(data: str | Path, model: str | Path | None = None, data_dir: str | Path | None = None) -> dict:
    """{name: {nats_per_token, bits_per_byte}} for unigram, bigram (and the model) on the val split."""
    import text_tokenizer

    meta = read_meta(data)
    V, train, val = meta["vocab_size"], split_tokens(data, "train"), split_tokens(data, "val")
    tok = text_tokenizer.load(Path(data) / meta["tokenizer"]["dir"], data_dir)
    n_bytes = text_bytes(val[1:], tok.decode, meta.get("eot_id"))  # the bytes of the predicted tokens
    nlls = {"unigram": unigram_nll(train, val[1:], V), "bigram": KneserNeyBigram(train, V).nll(val)}
    if model is not None:
        nlls["model"] = model_nll(model, val)
    result = {name: {"nats_per_token": float(v.mean()), "bits_per_byte": float(v.sum() / math.log(2) / n_bytes)}
              for name, v in nlls.items()}
    return {"data": str(data), "val_tokens": int(len(val) - 1), "val_bytes": n_bytes, "train_tokens": int(len(train)),
            "vocab_size": V, "bigram_discount": DISCOUNT, "baselines": result}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared shard folder (prepare.py --out_dir)")
    p.add_argument("--model", default=None, help="a Hugging Face model folder to score on the same val tokens")
    p.add_argument("--out", default=None, help="write the figures to this JSON file (atomically)")
    p.add_argument("--data_dir", default=None, help="data directory, for a data set made with GPT-2's tokenizer "
                                                    "(default $LLMHW_DATA_DIR)")
    a = p.parse_args(argv)
    if a.model is not None and not (Path(a.model) / "config.json").is_file():
        p.error(f"--model {a.model}: not a Hugging Face model folder (no config.json)")
    try:
        r = baselines(a.data, a.model, a.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{a.data}: {r['train_tokens']:,} train tokens, {r['val_tokens']:,} val tokens ({r['val_bytes']:,} bytes)")
    for name, v in r["baselines"].items():
        print(f"  {name:8s} {v['nats_per_token']:.4f} nats/token  {v['bits_per_byte']:.4f} bits/byte")
    if a.out:
        from fileio import atomic_write_json

        atomic_write_json(Path(a.out), r)
    return r


if __name__ == "__main__":
    main()
