"""Count baselines for a pretrained model: what n-gram tables of orders 1 to 5 learn from the same train shards.

    python pretrain/ngram.py --data SHARDS                         # orders 1-5 on every val token of a data set
    python pretrain/ngram.py --data SHARDS --orders 1 2 3          # only these orders
    python pretrain/ngram.py --data SHARDS --model RUN/hf --out baselines.json   # and a HF model, same tokens

Fitted on the train split, scored on every val token in nats/token and bits per UTF-8 byte (tokenizer-independent);
order 1 add-one smoothed, orders >= 2 Kneser-Ney. ``--model`` is scored by transformers' GPT2LMHeadModel.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from fileio import OutputError, atomic_write_json, claim_output_file
from prepare import DataError, load_tokenizer, read_meta, read_shard

DISCOUNT = 0.75  # Kneser-Ney's usual D; the exact optimum (n1 / (n1 + 2 n2)) is within a few hundredths of it
KIND = "llmhw-ngram-baselines"  # the "kind" of --out (fileio.claim_output_file)


def split_tokens(data: str | Path, split: str) -> np.ndarray:
    """All tokens of a split, concatenated in shard order (int64)."""
    shards = [read_shard(Path(data) / name) for name in read_meta(data)[split]["shards"]]
    if not shards or not sum(map(len, shards)):
        raise DataError(f"{data}: no {split} tokens (meta.json {split}.tokens 0)")
    return np.concatenate(shards).astype(np.int64)


def unigram_nll(train: np.ndarray, targets: np.ndarray, V: int) -> np.ndarray:
    """-log p(w) per target token; p(w) = (count(w) + 1) / (N + V)."""
    counts = np.bincount(train, minlength=V).astype(np.float64)
    return -np.log((counts[targets] + 1.0) / (len(train) + V))


class KneserNey:
    """Interpolated Kneser-Ney of every order 2..`order` at once, one discount D (Chen & Goodman 1998, 3.5):
        p_n(w | h) = max(c(h w) - D, 0) / c(h) + D N1+(h .) / c(h) * p_{n-1}(w | h minus its first token),
    c = occurrences at the top order, continuations N1+(. g) below; an unseen context falls back to the lower order,
    the lowest (continuation unigrams, `lowest`) is interpolated with uniform, so every token gets p > 0.
    Per order k: `keys[k]`, the sorted distinct k-grams as exact int64 keys (id of the first k-1 tokens) * V + last
    token (a k-gram's id is its index there), and `occurrences[k]`, `continuations[k]` per k-gram."""

    def __init__(self, train: np.ndarray, V: int, order: int, D: float = DISCOUNT):
        assert order >= 2, "order 1 is unigram_nll"
        self.V, self.order, self.D = V, order, D
        self.keys, self.occurrences, self.continuations, self.contexts = {}, {}, {}, {2: V}
        ids = train  # ids[i]: the (k-1)-gram ending at token i (-1: too close to the start)
        for k in range(2, order + 1):
            ok = np.flatnonzero(ids[:-1] >= 0) + 1  # positions where a k-gram ends
            self.keys[k], first, inverse, self.occurrences[k] = np.unique(
                ids[ok - 1] * V + train[ok], return_index=True, return_inverse=True, return_counts=True)
            # a distinct k-gram continues the (k-1)-gram ending where it ends: N1+(. g) of the order below
            self.continuations[k - 1] = np.bincount(ids[ok[first]], minlength=self.contexts[k] if k > 2 else V)
            self.contexts[k + 1] = len(self.keys[k])
            ids = np.full(len(train), -1, dtype=np.int64)
            ids[ok] = inverse
        cont = self.continuations.pop(1).astype(np.float64)  # N1+(. w)
        self.lowest = (np.maximum(cont - D, 0) + D * np.count_nonzero(cont) / V) / cont.sum()

    def table(self, k: int, top: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Order k's counts (occurrences at the top order, else continuations); per context their sum and count > 0."""
        counts = (self.occurrences if top else self.continuations)[k].astype(np.float64)
        context = self.keys[k] // self.V
        return (counts, np.bincount(context, weights=counts, minlength=self.contexts[k]),
                np.bincount(context, weights=counts > 0, minlength=self.contexts[k]))

    def lookup(self, k: int, context: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Ids of the k-grams (context id, w), -1 where never seen (or the context is -1)."""
        codes = context * self.V + w
        at = np.minimum(np.searchsorted(self.keys[k], codes), len(self.keys[k]) - 1)
        return np.where((context >= 0) & (self.keys[k][at] == codes), at, -1)

    def prob(self, history: np.ndarray, w: np.ndarray, order: int | None = None) -> np.ndarray:
        """p(w | history) of the model of `order` (default the largest); history (M, >= order-1) ids, -1 = none."""
        order = order or self.order
        p = self.lowest[w]
        for k in range(2, order + 1):
            h = history[:, -(k - 1)]  # the context: the last k-1 tokens of the history, as an id
            for j in range(2, k):
                h = self.lookup(j, h, history[:, j - k])
            counts, totals, types = self.table(k, top=k == order)
            g = self.lookup(k, h, w)
            c = np.where(g >= 0, counts[g], 0.0)
            total = np.where(h >= 0, totals[h], 0.0)
            safe = np.where(total > 0, total, 1.0)
            backoff = self.D * np.where(h >= 0, types[h], 0.0) / safe  # the mass the discount freed
            p = np.where(total > 0, np.maximum(c - self.D, 0) / safe + backoff * p, p)
        return p

    def nll(self, tokens: np.ndarray, order: int | None = None) -> np.ndarray:
        """-log p(t_i | t_{i-n+1} .. t_{i-1}) for i = 1 .. len(tokens)-1, n = `order` (default the largest)."""
        n = order or self.order
        padded = np.concatenate([np.full(n - 2, -1, dtype=np.int64), tokens])
        history = np.lib.stride_tricks.sliding_window_view(padded[:-1], n - 1)  # (len-1, n-1)
        return -np.log(self.prob(history, tokens[1:], n))


def text_bytes(tokens: np.ndarray, decode, eot_id: int | None) -> int:
    """UTF-8 bytes of the text the tokens spell, end-of-text separators excluded (they are not text)."""
    cuts = np.flatnonzero(tokens == eot_id).tolist() if eot_id is not None else []
    bounds = list(zip([-1, *cuts], [*cuts, len(tokens)]))  # (separator before, separator after) of each text
    return sum(len(decode(tokens[a + 1:b].tolist()).encode("utf-8")) for a, b in bounds if b > a + 1)


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


def model_problem(model: Path, vocab: int) -> str | None:
    """Why --model cannot score this data (one line), or None."""
    if not (model / "model.safetensors").is_file():
        return f"--model {model}: no model.safetensors (not a Hugging Face model folder)"
    try:
        n_vocab = int(json.loads((model / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, TypeError, KeyError) as e:
        return f"--model {model}/config.json: not a readable GPT-2 config ({type(e).__name__}: {e})"
    if n_vocab < vocab:
        return f"--model {model}: vocab_size {n_vocab} is smaller than the data's {vocab}"
    return None


def baselines(data: str | Path, model: str | Path | None = None, data_dir: str | Path | None = None,
              orders=(1, 2, 3, 4, 5)) -> dict:
    """The val figures {"<n>-gram" (and "model"): {nats_per_token, bits_per_byte}} and what they were made of."""
    meta = read_meta(data)
    V, train, val = meta["vocab_size"], split_tokens(data, "train"), split_tokens(data, "val")
    tok = load_tokenizer(Path(data) / meta["tokenizer"]["dir"], data_dir)
    n_bytes = text_bytes(val[1:], tok.decode, meta.get("eot_id"))  # the bytes of the predicted tokens
    kn = KneserNey(train, V, max(orders)) if max(orders, default=1) > 1 else None
    nlls = {f"{n}-gram": unigram_nll(train, val[1:], V) if n == 1 else kn.nll(val, n) for n in sorted(set(orders))}
    if model is not None:
        nlls["model"] = model_nll(model, val)
    result = {name: {"nats_per_token": float(v.mean()), "bits_per_byte": float(v.sum() / math.log(2) / n_bytes)}
              for name, v in nlls.items()}
    return {"kind": KIND, "data": str(data), "val_tokens": int(len(val) - 1), "val_bytes": n_bytes,
            "train_tokens": int(len(train)), "vocab_size": V, "discount": DISCOUNT, "baselines": result}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared shard folder (prepare.py --out_dir)")
    p.add_argument("--orders", type=int, nargs="+", choices=range(1, 6), default=[1, 2, 3, 4, 5], metavar="N",
                   help="n-gram orders to fit and score, 1-5 (default: all five)")
    p.add_argument("--model", type=Path, default=None, help="a Hugging Face model folder to score on the same tokens")
    p.add_argument("--out", type=Path, default=None, help="write the figures to this JSON file (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out of this command")
    p.add_argument("--data_dir", default=None, help="data directory, for a data set made with GPT-2's tokenizer "
                                                    "(default $LLMHW_DATA_DIR)")
    a = p.parse_args(argv)
    try:
        meta = read_meta(a.data)
        if a.model is not None and (why := model_problem(a.model, meta["vocab_size"])):
            p.error(why)
        if a.out is not None:
            inputs = [a.data, a.data / "meta.json"] + ([a.model] if a.model else [])
            claim_output_file(a.out, KIND, overwrite=a.overwrite, inputs=inputs)
        r = baselines(a.data, a.model, a.data_dir, a.orders)
    except (DataError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{a.data}: {r['train_tokens']:,} train tokens, {r['val_tokens']:,} val tokens ({r['val_bytes']:,} bytes)")
    for name, v in r["baselines"].items():
        print(f"  {name:8s} {v['nats_per_token']:.4f} nats/token  {v['bits_per_byte']:.4f} bits/byte")
    if a.out:
        atomic_write_json(a.out, r)
    return r


if __name__ == "__main__":
    main()
