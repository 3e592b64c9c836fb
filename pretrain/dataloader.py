"""The rank-strided, resumable batch loader train.py reads from token shards (format: shards.py).

Loading memory-maps every shard (resident memory does not grow with the data set). Each step every rank reads its
own B*T+1 window: rank r starts at pos + r*B*T and all ranks advance pos by B*T*world, so ranks see disjoint data and
one process with k accumulation steps sees exactly the windows k processes see in one step. The position
(shard, pos, epoch) is the resumable state, independent of the rank.
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
