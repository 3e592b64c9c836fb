"""BPE training, minbpe-style: ``naive_train_merges`` (the readable reference) and ``train_merges`` (the fast one).

Both extend ``vocab`` in place from the unique chunks' counts and give the same merges (left id, right id, result id):
the highest weighted count wins, ties to the smallest (left, right); occurrences merge left to right (``aaa`` ->
``[aa, a]``); a merge whose bytes already are a token reuses its id (tiktoken gives a byte string one rank).
"""
import heapq
from collections import Counter

import numpy as np

KEY = 1 << 24  # pair code = left * KEY + right: one int64 that orders like the tuple (left, right)


def naive_train_merges(chunks: dict[bytes, int], vocab: list[bytes], n_new: int) -> list[tuple[int, int, int]]:
    """minbpe's train (with weights and id reuse): recount every pair after every merge. O(merges x corpus)."""
    words = [(list(chunk), count) for chunk, count in chunks.items()]
    ranks, merges, n_vocab = {token: i for i, token in enumerate(vocab)}, [], len(vocab)
    while len(vocab) < n_vocab + n_new:
        stats = Counter()
        for ids, count in words:
            for pair in zip(ids, ids[1:]):
                stats[pair] += count
        if not stats:
            break
        left, right = min(stats, key=lambda p: (-stats[p], p))  # highest count, then smallest pair
        merges.append((left, right, token_id(vocab[left] + vocab[right], vocab, ranks)))
        words = [(merge_pair(ids, *merges[-1]), count) for ids, count in words]
    return merges


def token_id(token: bytes, vocab: list[bytes], ranks: dict[bytes, int]) -> int:
    """The id of the merged ``token``: a new one appended to ``vocab``, or the existing one if it already is a token."""
    if token not in ranks:
        ranks[token] = len(vocab)
        vocab.append(token)
    return ranks[token]


def merge_pair(ids: list[int], left: int, right: int, new: int) -> list[int]:
    """Replace each (left, right) in ``ids`` by ``new``, scanning left to right (``new`` is never ``left``)."""
    out = []
    for x in ids:
        if out and out[-1] == left and x == right:
            out[-1] = new
        else:
            out.append(x)
    return out


def group_starts(a: np.ndarray) -> np.ndarray:
    """The index where each run of equal values in ``a`` (sorted, not empty) starts."""
    return np.flatnonzero(np.concatenate(([True], a[1:] != a[:-1])))


def left_to_right(chained: np.ndarray) -> np.ndarray:
    """Occurrences of a pair (a, a) to merge (``chained[k]``: k starts where k-1 ends): every other one per run."""
    k = np.arange(len(chained))
    run_start = np.maximum.accumulate(np.where(chained, 0, k))
    return (k - run_start) % 2 == 0


def train_merges(chunks: dict[bytes, int], vocab: list[bytes], n_new: int, progress=None) -> list[tuple[int, int, int]]:
    """``naive_train_merges``'s result, each merge touching only the occurrences of the merged pair (MergeState)."""
    if not chunks or n_new <= 0:
        return []
    state, merges, n_vocab = MergeState(chunks), [], len(vocab)
    ranks = {token: i for i, token in enumerate(vocab)}
    while len(vocab) < n_vocab + n_new and (code := state.pop_best_pair()) is not None:  # None: no pair is left
        left, right = divmod(code, KEY)
        merges.append((left, right, token_id(vocab[left] + vocab[right], vocab, ranks)))
        state.merge(code, *merges[-1])
        if progress is not None:  # a tqdm bar: one step per new token
            progress.update(len(vocab) - n_vocab - progress.n)
    return merges


class MergeState:
    """The corpus as linked token positions, with weighted pair counts, a pair -> positions index and a max-heap.

    All unique chunks lie side by side in flat numpy arrays, one slot per byte: ``token`` (id; -1 a sentinel between
    chunks, -2 a slot merged away), ``next_pos``/``prev_pos`` (a linked list over live slots), ``weight`` (the chunk's
    count). An edge is a slot and its successor. ``where``: pair code -> arrays of left slots where the pair occurred
    or was created (stale ones filtered at its merge); ``heap``: (-count, code) with lazy deletion."""

    def __init__(self, chunks: dict[bytes, int]):
        lengths = np.fromiter((len(c) + 1 for c in chunks), dtype=np.int64, count=len(chunks))
        self.token = np.frombuffer(b"".join(b"\x00" + c for c in chunks) + b"\x00", dtype=np.uint8).astype(np.int32)
        self.token[np.concatenate(([0], np.cumsum(lengths)))] = -1  # a sentinel before each chunk and at the end
        counts = np.fromiter(chunks.values(), dtype=np.int64, count=len(chunks))
        # int32 weights halve the memory; a pair's summed weight is at most the corpus size, so int32 holds it
        weight_type = np.int32 if int(counts @ lengths) < 2 ** 31 else np.int64
        self.weight = np.append(np.repeat(counts.astype(weight_type), lengths), weight_type(0))
        n = len(self.token)
        self.next_pos = np.arange(1, n + 1, dtype=np.int32)
        self.prev_pos = np.arange(-1, n - 1, dtype=np.int32)
        self.counts, self.where = self.count_byte_pairs()
        self.heap = [(-c, code) for code, c in self.counts.items()]
        heapq.heapify(self.heap)

    def count_byte_pairs(self, block: int = 1 << 22) -> tuple[dict[int, int], dict[int, list[np.ndarray]]]:
        """Weighted counts and ascending slot arrays of every initial byte pair, in blocks to bound the memory."""
        token, weight, counts, where = self.token, self.weight, {}, {}
        for start in range(0, len(token) - 1, block):
            left, right = token[start:start + block], token[start + 1:start + block + 1]
            left = left[:len(right)]
            live = (left >= 0) & (right >= 0)
            slots = (np.flatnonzero(live) + start).astype(np.int32)
            codes = (left[live] * 256 + right[live]).astype(np.uint16)  # byte pairs fit 16 bits: radix sort
            order = np.argsort(codes, kind="stable")  # stable: slots stay ascending inside each pair
            codes, slots = codes[order], slots[order]
            if not len(codes):
                continue
            first = group_starts(codes)
            pair_codes = (codes[first].astype(np.int64) // 256 * KEY + codes[first] % 256).tolist()
            sums = np.add.reduceat(weight[slots], first).tolist()
            for pair, total, at in zip(pair_codes, sums, np.split(slots, first[1:])):
                counts[pair] = counts.get(pair, 0) + total
                where.setdefault(pair, []).append(at)  # blocks come in order: each pair's list stays ascending
        return counts, where

    def pop_best_pair(self) -> int | None:
        """The pair with the highest count (smallest code on ties), or None. A stale entry is dropped or pushed back
        with its true count (a count only falls between pushes, so the first valid entry is the best)."""
        while self.heap:
            neg_count, code = heapq.heappop(self.heap)
            count = self.counts.get(code, 0)
            if count == -neg_count and count > 0:
                return code
            if 0 < count < -neg_count:
                heapq.heappush(self.heap, (-count, code))
        return None

    def occurrences(self, code: int, left: int, right: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots (left, right) of every live occurrence of the pair, overlapping ones resolved left to right."""
        # ascending runs (one per block or merge that created the pair): a stable sort (timsort) merges them
        # cheaply; a slot can be listed twice (created, destroyed, created again): drop repeats
        at = np.sort(np.concatenate(self.where.pop(code)), kind="stable")
        at = at[group_starts(at)]
        at = at[self.token[at] == left]
        nxt = self.next_pos[at]
        ok = self.token[nxt] == right
        at, nxt = at[ok], nxt[ok]
        if left == right and len(at) > 1:
            keep = left_to_right(np.concatenate(([False], at[1:] == nxt[:-1])))
            at, nxt = at[keep], nxt[keep]
        return at, nxt

    def merge(self, code: int, left: int, right: int, new: int) -> None:
        """Merge every occurrence of the pair into ``new``: relink the slots and update counts, index and heap."""
        i, j = self.occurrences(code, left, right)
        token, nxt, prv = self.token, self.next_pos, self.prev_pos
        before, after = prv[i], nxt[j]
        # edges that disappear, by left slot: (before, left), (left, right), (right, after); the edge between two
        # chained occurrences (before[t] == j[t-1]) only once
        ok = token[before] >= 0
        ok[1:] &= before[1:] != j[:-1]
        removed = np.concatenate((before[ok], i, j[token[after] >= 0]))
        removed_codes = token[removed].astype(np.int64) * KEY + token[nxt[removed]]
        token[i], token[j] = new, -2
        nxt[i], prv[after] = after, i
        # edges that appear: (before, new) and (new, after); (new, new) between chained occurrences once
        before = prv[i]
        ok = token[before] >= 0
        ok[1:] &= before[1:] != i[:-1]
        created = np.concatenate((before[ok], i[token[after] >= 0]))
        created_codes = token[created].astype(np.int64) * KEY + token[nxt[created]]
        if len(removed):  # always true while counts are exact; never reduce over an empty array
            self.update_counts(removed, removed_codes, created, created_codes)
        self.counts.pop(code, None)

    def update_counts(self, removed, removed_codes, created, created_codes) -> None:
        """Apply the removed and created edges' weights per pair code; push risen counts, index created slots."""
        all_codes = np.concatenate((removed_codes, created_codes))
        order = np.argsort(all_codes, kind="stable")
        sorted_codes = all_codes[order]
        starts = group_starts(sorted_codes)
        deltas = np.add.reduceat(np.concatenate((-self.weight[removed], self.weight[created]))[order], starts)
        for pair, delta in zip(sorted_codes[starts].tolist(), deltas.tolist()):
            if not delta:
                continue
            count = self.counts.get(pair, 0) + delta
            if count > 0:
                self.counts[pair] = count
                if delta > 0:
                    heapq.heappush(self.heap, (-count, pair))
            else:
                self.counts.pop(pair, None)
                self.where.pop(pair, None)
        is_created = order >= len(removed)
        new_codes = sorted_codes[is_created]
        new_slots = np.concatenate((removed, created))[order][is_created]
        if len(new_codes):
            starts = group_starts(new_codes)
            for pair, at in zip(new_codes[starts].tolist(), np.split(new_slots, starts[1:])):
                if pair in self.counts:
                    self.where.setdefault(pair, []).append(at)
