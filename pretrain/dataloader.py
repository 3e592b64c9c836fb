"""The resumable batch loaders train.py reads from token shards (format: shards.py): in file order or shuffled.

Both memory-map every shard (resident memory does not grow with the data set), give (x, y) of shape (B, T) with y
= x shifted by one token, and split each step's windows between the ranks so that ranks see disjoint data and one
process with k accumulation steps sees exactly the windows k processes see in one step. Their position is the
resumable state, independent of the rank.

- ``ShardLoader`` (``--data_order sequential``, nanoGPT / build-nanogpt): reads the shards in file order, one
  contiguous B*T+1 stretch per rank and step. Right for shards whose documents are already mixed (FineWeb-Edu);
  wrong for a corpus made of files of different sources, where training would see one source after the other while
  validation measures their mixture (the loss jumps each time the source changes).
- ``ShuffledLoader`` (``--data_order shuffle``): cuts the split into non-overlapping windows of T+1 tokens at a
  stride of T and reads them in a random order, a new one (and a new offset of the cuts) each epoch. Every window is
  read once per epoch, so every step draws from all sources in proportion to their size, as validation does.
  The order depends only on (seed, epoch): every rank computes the same permutation, and a checkpoint needs only
  (epoch, pos) to resume exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shards import DataError, read_meta, read_shard


class ShardLoader:
    """Batches (x, y) of shape (B, T) from one split; y is x shifted by one token."""

    def __init__(self, data: str | Path, split: str, B: int, T: int, rank: int = 0, world_size: int = 1):
        self.B, self.T, self.rank, self.world_size = B, T, rank, world_size
        meta = read_meta(data)
        names = meta.get(split, {}).get("shards", [])
        if not names:
            raise DataError(f"{data}: no {split} shards in meta.json")
        shards = [read_shard(Path(data) / name) for name in names]
        need = B * T * world_size + 1
        # A shard shorter than one step (typically the last, partial one) gives no window: skip it, as the tail
        # of every shard is skipped; an error only when no shard is long enough.
        self.shards = [s for s in shards if len(s) >= need]
        self.skipped = [name for name, s in zip(names, shards) if len(s) < need]  # for the caller to report
        if not self.shards:
            raise DataError(f"{data}: every {split} shard is shorter than one step needs (B*T*world_size+1 = "
                            f"{need} tokens; the longest has {max(map(len, shards))}); lower the batch size or "
                            "sequence length")
        self.reset()

    def batches_per_epoch(self) -> int:
        """Steps until the loader wraps around to the first shard."""
        per_step = self.B * self.T * self.world_size
        return sum((len(s) - 1) // per_step for s in self.shards)

    def reset(self):
        self.shard, self.pos, self.epoch = 0, 0, 0

    def state_dict(self) -> dict:
        return {"shard": self.shard, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict):
        if not 0 <= state["shard"] < len(self.shards) or not (
                0 <= state["pos"] and state["pos"] + self.B * self.T * self.world_size + 1 <= len(self.shards[state["shard"]])):
            raise DataError(f"data position {state} does not fit the {len(self.shards)} shards at B={self.B}, "
                            f"T={self.T}, world_size={self.world_size} (were they changed?)")
        self.shard, self.pos, self.epoch = state["shard"], state["pos"], state["epoch"]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.B, self.T
        start = self.pos + self.rank * B * T
        buf = torch.from_numpy(self.shards[self.shard][start:start + B * T + 1].astype(np.int64))
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        self.pos += B * T * self.world_size
        if self.pos + B * T * self.world_size + 1 > len(self.shards[self.shard]):  # next step would not fit
            self.pos, self.shard = 0, (self.shard + 1) % len(self.shards)
            if self.shard == 0:
                self.epoch += 1
        return x, y


class ShuffledLoader:
    """Batches (x, y) of shape (B, T): non-overlapping windows of the whole split in a seeded random order."""

    def __init__(self, data: str | Path, split: str, B: int, T: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, accum: int = 1):
        self.B, self.T, self.rank, self.world_size, self.seed = B, T, rank, world_size, seed
        # windows an optimizer step reads on all ranks together: an epoch ends on a step boundary, so that one
        # process with k accumulation steps and k processes with one see the same epochs
        self.per_step = B * world_size * accum
        meta = read_meta(data)
        names = meta.get(split, {}).get("shards", [])
        if not names:
            raise DataError(f"{data}: no {split} shards in meta.json")
        self.shards = [read_shard(Path(data) / name) for name in names]
        self.skipped = [name for name, s in zip(names, self.shards) if len(s) < T + 1]  # not one window
        self.epoch, self.pos = 0, 0
        self._plan(0)
        if len(self.order) < self.per_step:
            raise DataError(f"{data}: the {split} split has {len(self.window_start)} windows of {T + 1} tokens, "
                            f"fewer than one step needs (batch_size * world_size * accumulation = {self.per_step}); "
                            "lower the batch size or sequence length")

    def _plan(self, epoch: int) -> None:
        """This epoch's windows: starts at offset + k*T in every shard (offset in [0, T)), in a random order."""
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(self.T))  # new cuts each epoch: a token is not always at the same window position
        shard_ids, starts = [], []
        for i, s in enumerate(self.shards):
            n = max(0, (len(s) - 1 - offset) // self.T)  # windows of T+1 tokens that fit after the offset
            shard_ids.append(np.full(n, i, dtype=np.int32))
            starts.append(offset + self.T * np.arange(n, dtype=np.int64))
        self.window_shard, self.window_start = np.concatenate(shard_ids), np.concatenate(starts)
        n = len(self.window_start)
        self.order = rng.permutation(n)[:n - n % self.per_step]  # whole optimizer steps only
        self.planned_epoch = epoch

    def batches_per_epoch(self) -> int:
        """Micro-batches per rank in the current epoch."""
        return len(self.order) // (self.B * self.world_size)

    def reset(self):
        self.epoch, self.pos = 0, 0
        if self.planned_epoch != 0:
            self._plan(0)

    def state_dict(self) -> dict:
        return {"order": "shuffle", "seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict):
        if state.get("order") != "shuffle" or state.get("seed") != self.seed:
            raise DataError(f"data position {state} is not a shuffled-order position with seed {self.seed} "
                            "(the checkpoint was made with another --data_order or --seed)")
        self._plan(state["epoch"])
        if not 0 <= state["pos"] <= len(self.order) - self.B * self.world_size or state["pos"] % self.per_step:
            raise DataError(f"data position {state} does not fit the {len(self.order)} windows at B={self.B}, "
                            f"T={self.T}, world_size={self.world_size} (were the shards changed?)")
        self.epoch, self.pos = state["epoch"], state["pos"]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.B, self.T
        picked = self.order[self.pos + self.rank * B:self.pos + (self.rank + 1) * B]  # this rank's B windows
        rows = [self.shards[self.window_shard[w]][self.window_start[w]:self.window_start[w] + T + 1] for w in picked]
        buf = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T+1)
        self.pos += B * self.world_size
        if self.pos == len(self.order):  # the epoch's whole steps are read: a new order
            self.epoch, self.pos = self.epoch + 1, 0
            self._plan(self.epoch)
        return buf[:, :-1], buf[:, 1:]
