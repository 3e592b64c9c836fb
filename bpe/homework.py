"""The homework's own BPE re-run and measured: why its token counts (938 / 113) and first tokens differ from ours.

The homework's tokenizer (the course's BPE assignment as solved in htlou/Alignment_hw, hw1/bpe/tokenizer.py, whose
output.log gives 938 / 113 tokens and first tokens ``\\n``, space, ``%`` ...) differs from ours in four ways:

1. **Alphabet**: its initial vocabulary is the sorted set of bytes that occur in the training file (153 for
   manual.txt), not all 256; so its first tokens are ``\\n``, space, ``%``, ... and a 1024-token vocabulary holds
   1024 - 153 = 871 merges instead of 768.
2. **Ties**: among equally frequent pairs it takes the one seen first in the text (``Counter.most_common``); ours
   takes the smallest (left id, right id). It also stops if a merge spells an existing token.
3. **Unknown bytes**: its encode silently drops bytes outside that alphabet (``j`` and ``z`` of the English paragraph).
4. **Encode order**: it merges in left-to-right passes, any known pair, until a pass changes nothing, where ours
   (like tiktoken and minbpe) always merges the pair of lowest rank first.

``analyse`` re-runs the homework's trainer and a chain of variants that undo one difference at a time, on the same
paragraphs, so each difference gets a measured token count (schema in README.md, "summary.json: homework").
"""
from __future__ import annotations

import numpy as np

from tokenizer import Tokenizer, render_token
from trainer import merge_pair

SCHEMA = "llmhw-bpe-homework/1"

# The homework's published figures (its output.log): its own counts, GPT-2's, its first and last 10 tokens.
PUBLISHED = {
    "ours": {"english": 938, "chinese": 113},
    "gpt2": {"english": 185, "chinese": 306},
    "first_tokens": ["\\n", " ", "%", "&", "(", ")", "+", ",", "-", "."],
    "last_tokens": ["期限", "医院", "需要", "坚", "整", "术", "修课", "必须", "每", "会议"],
}

# Runs larger than this (bytes x vocabulary) skip the analysis: the homework's trainer recounts the whole text per
# merge (manual.txt at 1024: ~3 s with numpy).
MAX_WORK = 10 ** 9


def corpus_alphabet(data: bytes) -> list[int]:
    """The homework's initial vocabulary: the distinct byte values of the training data, sorted."""
    return sorted(set(data))


def train_first_seen(data: bytes, vocab_size: int) -> list[tuple[bytes, bytes]]:
    """The homework's trainer: alphabet = bytes present, recount all pairs after every merge, ties to the pair
    seen first in the text, stop when a merge spells an existing token. Returns the merges as byte pairs.

    Vectorised with numpy but the same algorithm: ``seq`` is the text as token ids, recounted each step.
    """
    alphabet = corpus_alphabet(data)
    byte_to_id = np.zeros(256, np.int64)
    byte_to_id[alphabet] = np.arange(len(alphabet))
    seq = byte_to_id[np.frombuffer(data, np.uint8)]
    vocab = [bytes([b]) for b in alphabet]
    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size and len(seq) > 1:
        codes = seq[:-1] * vocab_size + seq[1:]  # pair code, ids < vocab_size
        counts = np.bincount(codes, minlength=vocab_size * vocab_size)
        best_count = counts.max()
        tied = np.flatnonzero(counts == best_count)
        # Counter keeps insertion order and most_common(1) takes the first maximum: the pair seen first in the text
        best = tied[0] if len(tied) == 1 else codes[np.flatnonzero(np.isin(codes, tied))[0]]
        left, right = divmod(int(best), vocab_size)
        token = vocab[left] + vocab[right]
        if token in vocab:  # the homework breaks out of training here
            break
        merges.append((vocab[left], vocab[right]))
        vocab.append(token)
        seq = replace_pair(seq, codes, int(best), left == right, len(vocab) - 1)
    return merges


def replace_pair(seq: np.ndarray, codes: np.ndarray, code: int, same: bool, new_id: int) -> np.ndarray:
    """Merge every occurrence of the pair ``code`` left to right (``aaa`` with (a, a) -> ``[aa, a]``)."""
    at = np.flatnonzero(codes == code)
    if same and len(at) > 1:  # runs of one symbol: keep every other occurrence, counted from each run's start
        k = np.arange(len(at))
        chained = np.concatenate(([False], at[1:] == at[:-1] + 1))
        run_start = np.maximum.accumulate(np.where(chained, 0, k))
        at = at[(k - run_start) % 2 == 0]
    seq[at] = new_id
    return np.delete(seq, at + 1)


def encode_passes(ids: list[int], pairs: dict[tuple[int, int], int]) -> list[int]:
    """The homework's encode: left-to-right passes merging any known adjacent pair until a pass changes nothing
    (the pair's rank is never consulted)."""
    changed = True
    while changed:
        changed, out, i = False, [], 0
        while i < len(ids):
            new = pairs.get((ids[i], ids[i + 1])) if i + 1 < len(ids) else None
            if new is None:
                out.append(ids[i])
                i += 1
            else:
                out.append(new)
                i += 2
                changed = True
        ids = out
    return ids


def encode_merge_order(ids: list[int], pairs: dict[tuple[int, int], int]) -> list[int]:
    """Apply the merges in training order, each over the whole text (minbpe's encode gives the same)."""
    for (a, b), new in pairs.items():  # dicts keep insertion (training) order
        ids = merge_pair(ids, a, b, new)
    return ids


def as_tokenizer(merges: list[tuple[bytes, bytes]]) -> Tokenizer:
    """The homework's merges over all 256 bytes (merged tokens keep their order, so their ranks)."""
    vocab = [bytes([i]) for i in range(256)] + [a + b for a, b in merges]
    ranks = {t: i for i, t in enumerate(vocab)}
    return Tokenizer("none", vocab=dict(enumerate(vocab)),
                     merges=[(ranks[a], ranks[b], ranks[a + b]) for a, b in merges])


def pair_table(tok: Tokenizer) -> dict[tuple[int, int], int]:
    return {(a, b): new for a, b, new in tok.merges}


def count_variants(text: str, homework: Tokenizer, alphabet: set[int], ours: Tokenizer,
                   ours_same_budget: Tokenizer) -> dict[str, int]:
    """Token counts of ``text`` under each variant of the chain (see VARIANTS)."""
    data = text.encode("utf-8")
    kept = bytes(b for b in data if b in alphabet)
    pairs = pair_table(homework)
    return {
        "homework": len(encode_passes(list(kept), pairs)),
        "homework_keep_bytes": len(encode_passes(list(data), pairs)),
        "homework_rank_encode": len(homework.encode_piece(data)),
        "homework_merge_order_encode": len(encode_merge_order(list(data), pairs)),
        "ours_same_merge_count": len(ours_same_budget.encode_piece(data)),
        "ours": len(ours.encode_piece(data)),
    }


# The chain: each variant undoes one difference of the one before it; the last is ours. (name, what changed)
VARIANTS = [
    ("homework", "the homework's tokenizer re-run: alphabet = bytes in the corpus, first-seen ties, "
                 "unknown bytes dropped, left-to-right pass encode"),
    ("homework_keep_bytes", "same, but bytes outside the alphabet kept as byte tokens instead of dropped"),
    ("homework_rank_encode", "same, encoded lowest rank first (tiktoken / minbpe) instead of in passes"),
    ("ours_same_merge_count", "our trainer (all 256 bytes, smallest-pair ties) with the homework's number of merges"),
    ("ours", "our tokenizer: 256 bytes + vocab_size - 256 merges"),
]
EFFECTS = [  # (name, variant before, variant after): tokens the difference costs = count(before) - count(after)
    ("dropped_bytes", "homework", "homework_keep_bytes"),
    ("pass_encode", "homework_keep_bytes", "homework_rank_encode"),
    ("tie_break", "homework_rank_encode", "ours_same_merge_count"),
    ("extra_merges", "ours_same_merge_count", "ours"),
]


def missing_bytes(text: str, alphabet: set[int]) -> dict:
    """Bytes of ``text`` outside the alphabet: how many, and the characters they belong to (with counts)."""
    chars: dict[str, int] = {}
    for ch in text:
        if any(b not in alphabet for b in ch.encode("utf-8")):
            chars[ch] = chars.get(ch, 0) + 1
    return {"bytes": sum(b not in alphabet for b in text.encode("utf-8")), "chars": chars}


def merges_agreement(homework: list[tuple[bytes, bytes]], ours: Tokenizer) -> dict:
    """How far the two trainers agree: leading merges identical, and merged tokens both vocabularies hold."""
    ours_tokens = [ours.vocab[a] + ours.vocab[b] for a, b, _ in ours.merges]
    prefix = 0
    for (a, b), t in zip(homework, ours_tokens):
        if a + b != t:
            break
        prefix += 1
    return {"homework": len(homework), "ours": len(ours.merges), "same_leading_merges": prefix,
            "shared_tokens": len({a + b for a, b in homework} & set(ours_tokens))}


def analyse(data: bytes, vocab_size: int, ours: Tokenizer, paragraphs: dict[str, str],
            published_paragraphs: bool) -> dict:
    """Re-run the homework's tokenizer on ``data`` and measure every variant on ``paragraphs`` (name -> text)."""
    merges = train_first_seen(data, vocab_size)
    alphabet = corpus_alphabet(data)
    homework = as_tokenizer(merges)
    same_budget = Tokenizer("none").train(data, 256 + len(merges))
    counts = {name: count_variants(text, homework, set(alphabet), ours, same_budget)
              for name, text in paragraphs.items()}
    first = [render_token(bytes([b])) for b in alphabet[:10]]
    last = [render_token(a + b) for a, b in merges[-10:]]
    return {
        "schema": SCHEMA,
        "published": PUBLISHED,
        "paragraphs_are_published": published_paragraphs,
        "alphabet": {"size": len(alphabet), "first_tokens": first, "last_tokens": last,
                     "first_tokens_match_published": first == PUBLISHED["first_tokens"],
                     "last_tokens_match_published": last == PUBLISHED["last_tokens"]},
        "merges": merges_agreement(merges, ours),
        "missing_bytes": {name: missing_bytes(text, set(alphabet)) for name, text in paragraphs.items()},
        "variants": [{"name": v, "what": what, **{p: counts[p][v] for p in paragraphs}} for v, what in VARIANTS],
        "merge_order_encode": {p: counts[p]["homework_merge_order_encode"] for p in paragraphs},
        "effects": {e: {p: counts[p][a] - counts[p][b] for p in paragraphs} for e, a, b in EFFECTS},
        "reproduces_published": published_paragraphs and all(
            counts[p]["homework"] == PUBLISHED["ours"][p] for p in ("english", "chinese") if p in counts),
    }


def skip_reason(pattern: str, specials: list[str], corpus_bytes: int, vocab_size: int) -> str | None:
    """Why the analysis does not apply to this run (None when it does): it re-runs the homework's setup."""
    if pattern != "none" or specials:
        return "the homework trained on raw bytes without special tokens (pattern none, no --special)"
    if corpus_bytes * vocab_size > MAX_WORK or vocab_size > 4096:
        return f"corpus x vocabulary too large for the homework's recount-everything trainer (> {MAX_WORK:.0e})"
    return None
