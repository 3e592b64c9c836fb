"""The homework's own BPE re-run and measured: why its token counts (938 / 113) and first tokens differ from ours.

The homework's tokenizer (htlou/Alignment_hw, hw1/bpe/tokenizer.py) differs from ours in four ways: (1) its alphabet
is the bytes present in the corpus (153 for manual.txt), not all 256; (2) ties go to the pair seen first in the text,
and it stops when a merge spells an existing token; (3) its encode drops bytes outside its alphabet; (4) it encodes in
left-to-right passes, not lowest rank first. ``analyse`` measures a chain of variants undoing one at a time.
"""
from collections import Counter
from pathlib import Path

import numpy as np

import fileio
from tokenizer import Tokenizer, render_token
from trainer import left_to_right, merge_pair

SCHEMA = "llmhw-bpe-homework/1"
PARAGRAPHS = {"english": "bpe/homework_english.txt", "chinese": "bpe/homework_chinese.txt"}  # in the data directory
PUBLISHED = {  # the homework's output.log: its counts, GPT-2's, its first and last 10 tokens
    "ours": {"english": 938, "chinese": 113},
    "gpt2": {"english": 185, "chinese": 306},
    "first_tokens": ["\\n", " ", "%", "&", "(", ")", "+", ",", "-", "."],
    "last_tokens": ["期限", "医院", "需要", "坚", "整", "术", "修课", "必须", "每", "会议"],
}
MAX_WORK = 10 ** 9  # bytes x vocabulary: its trainer recounts the whole text per merge (manual.txt at 1024: ~3 s)
VARIANTS = [  # the chain: each undoes one difference of the one before; the last is ours. (name, what)
    ("homework", "the homework's tokenizer re-run (corpus alphabet, first-seen ties, bytes dropped, pass encode)"),
    ("homework_keep_bytes", "same, bytes outside its alphabet kept as byte tokens instead of dropped"),
    ("homework_rank_encode", "same, encoded lowest rank first (tiktoken / minbpe) instead of in passes"),
    ("ours_same_merge_count", "our trainer (all 256 bytes, smallest-pair ties) with the homework's number of merges"),
    ("ours", "our tokenizer: 256 bytes + vocab_size - 256 merges"),
]
EFFECTS = ["dropped_bytes", "pass_encode", "tie_break", "extra_merges"]  # effect k: count(VARIANTS[k]) - count(k + 1)


def corpus_alphabet(data: bytes) -> list[int]:
    """The homework's initial vocabulary: the distinct byte values of the training data, sorted."""
    return sorted(set(data))


def train_first_seen(data: bytes, vocab_size: int) -> list[tuple[bytes, bytes]]:
    """The homework's trainer in numpy (see the module docstring): recount every pair after every merge."""
    alphabet = corpus_alphabet(data)
    seq = np.searchsorted(alphabet, np.frombuffer(data, np.uint8))  # the text as token ids (places in the alphabet)
    vocab, merges = [bytes([b]) for b in alphabet], []
    while len(vocab) < vocab_size and len(seq) > 1:
        codes = seq[:-1] * vocab_size + seq[1:]  # pair codes (ids < vocab_size)
        counts = np.bincount(codes)
        tied = np.flatnonzero(counts == counts.max())
        # Counter keeps insertion order and most_common(1) takes the first maximum: the pair seen first in the text
        best = int(tied[0] if len(tied) == 1 else codes[np.flatnonzero(np.isin(codes, tied))[0]])
        left, right = divmod(best, vocab_size)
        if vocab[left] + vocab[right] in vocab:  # the homework stops training here
            break
        merges.append((vocab[left], vocab[right]))
        vocab.append(vocab[left] + vocab[right])
        at = np.flatnonzero(codes == best)  # merged left to right: in runs of one symbol every other one
        at = at[left_to_right(np.concatenate(([False], at[1:] == at[:-1] + 1)))] if left == right else at
        seq[at] = len(vocab) - 1
        seq = np.delete(seq, at + 1)
    return merges


def encode_passes(ids: list[int], pairs: dict[tuple[int, int], int]) -> list[int]:
    """The homework's encode: left-to-right passes merging any known pair (rank ignored) until nothing changes."""
    while True:
        out, i = [], 0
        while i < len(ids):
            new = pairs.get((ids[i], ids[i + 1])) if i + 1 < len(ids) else None
            out.append(ids[i] if new is None else new)
            i += 1 if new is None else 2
        if len(out) == len(ids):
            return out
        ids = out


def encode_merge_order(ids: list[int], pairs: dict[tuple[int, int], int]) -> list[int]:
    """Apply the merges in training order, each over the whole text (minbpe's encode gives the same)."""
    for (a, b), new in pairs.items():  # dicts keep insertion (training) order
        ids = merge_pair(ids, a, b, new)
    return ids


def as_tokenizer(merges: list[tuple[bytes, bytes]]) -> Tokenizer:
    """The homework's merges over all 256 bytes (merged tokens keep their order, so their ranks)."""
    vocab = [bytes([i]) for i in range(256)] + [a + b for a, b in merges]
    ranks = {t: i for i, t in enumerate(vocab)}
    return Tokenizer("none", dict(enumerate(vocab)), merges=[(ranks[a], ranks[b], ranks[a + b]) for a, b in merges])


def count_variants(text: str, homework: Tokenizer, alphabet: set[int], ours: Tokenizer, same_budget: Tokenizer):
    """Token counts of ``text`` under each variant of the chain (VARIANTS), and the merge-order encode."""
    data = text.encode("utf-8")
    pairs = {(a, b): new for a, b, new in homework.merges}
    return {"homework": len(encode_passes([b for b in data if b in alphabet], pairs)),
            "homework_keep_bytes": len(encode_passes(list(data), pairs)),
            "homework_rank_encode": len(homework.encode_piece(data)),
            "ours_same_merge_count": len(same_budget.encode_piece(data)),
            "ours": len(ours.encode_piece(data)),
            "merge_order_encode": len(encode_merge_order(list(data), pairs))}


def missing_bytes(text: str, alphabet: set[int]) -> dict:
    """Bytes of ``text`` outside the alphabet: how many, and the characters they belong to (with counts)."""
    chars = Counter(ch for ch in text if any(b not in alphabet for b in ch.encode("utf-8")))
    return {"bytes": sum(b not in alphabet for b in text.encode("utf-8")), "chars": dict(chars)}


def analyse(data: bytes, vocab_size: int, ours: Tokenizer, paragraphs: dict[str, str], published: bool) -> dict:
    """Re-run the homework's tokenizer on ``data`` and measure every variant on ``paragraphs`` (name -> text)."""
    merges = train_first_seen(data, vocab_size)
    alphabet = corpus_alphabet(data)
    homework, same_budget = as_tokenizer(merges), Tokenizer("none").train(data, 256 + len(merges))
    counts = {p: count_variants(t, homework, set(alphabet), ours, same_budget) for p, t in paragraphs.items()}
    first, last = [render_token(bytes([b])) for b in alphabet[:10]], [render_token(a + b) for a, b in merges[-10:]]
    ours_tokens = [ours.vocab[new] for *_, new in ours.merges]
    same = next((k for k, (m, t) in enumerate(zip(merges, ours_tokens)) if m[0] + m[1] != t),
                min(len(merges), len(ours_tokens)))
    return {
        "schema": SCHEMA, "published": PUBLISHED, "paragraphs_are_published": published,
        "alphabet": {"size": len(alphabet), "first_tokens": first, "last_tokens": last,
                     "first_tokens_match_published": first == PUBLISHED["first_tokens"],
                     "last_tokens_match_published": last == PUBLISHED["last_tokens"]},
        "merges": {"homework": len(merges), "ours": len(ours.merges), "same_leading_merges": same,
                   "shared_tokens": len({a + b for a, b in merges} & set(ours_tokens))},
        "missing_bytes": {p: missing_bytes(t, set(alphabet)) for p, t in paragraphs.items()},
        "variants": [{"name": v, "what": what, **{p: counts[p][v] for p in paragraphs}} for v, what in VARIANTS],
        "merge_order_encode": {p: counts[p]["merge_order_encode"] for p in paragraphs},
        "effects": {e: {p: counts[p][VARIANTS[k][0]] - counts[p][VARIANTS[k + 1][0]] for p in paragraphs}
                    for k, e in enumerate(EFFECTS)},
        "reproduces_published": published and all(counts[p]["homework"] == PUBLISHED["ours"][p] for p in counts),
    }


def skip_reason(pattern: str, specials: list[str], corpus_bytes: int, vocab_size: int) -> str | None:
    """Why the re-run does not apply to this run (None when it does): it re-runs the homework's setup."""
    if pattern != "none" or specials:
        return "the homework trained on raw bytes without special tokens (pattern none, no --special)"
    if corpus_bytes * vocab_size > MAX_WORK or vocab_size > 4096:
        return f"corpus x vocabulary too large for the homework's recount-everything trainer (> {MAX_WORK:.0e})"
    return None


def published_paragraphs(paths: dict[str, Path], data_dir) -> bool:
    """Whether the paragraphs are the homework's own (so its published counts apply to them)."""
    try:
        return all(paths[k].read_bytes() == fileio.find(name, data_dir).read_bytes() for k, name in PARAGRAPHS.items())
    except fileio.DataFileNotFound:
        return False


def log_lines(h: dict) -> list[str]:
    """The summary's "homework" entry as lines of output.log."""
    if "skipped" in h:
        return [f"homework re-run: skipped ({h['skipped']})"]
    a, m, paragraphs = h["alphabet"], h["merges"], list(h["missing_bytes"])
    lines = [f"homework re-run (homework.py): alphabet = {a['size']} bytes present in the corpus, so "
             f"{m['homework']} merges vs our {m['ours']}; first 10 tokens {' '.join(a['first_tokens'])} "
             f"(match published: {a['first_tokens_match_published']}); reproduces 938/113: {h['reproduces_published']}"]
    lines += [f"  {v['name']:<22} " + "  ".join(f"{p} {v[p]:>5}" for p in paragraphs) + f"  {v['what']}"
              for v in h["variants"]]
    lines += [f"  effect {e:<15} " + "  ".join(f"{p} {d[p]:>+5}" for p in paragraphs) for e, d in h["effects"].items()]
    return lines + [f"  {p}: {mb['bytes']} bytes outside the homework's alphabet (chars {mb['chars']})"
                    for p, mb in h["missing_bytes"].items() if mb["bytes"]]
