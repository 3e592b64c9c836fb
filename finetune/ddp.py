"""All distributed setup in one place: `torchrun ... script.py` (one or many nodes) or plain `python` (world 1).

One identical copy of this file lives in pretrain/ and finetune/ (they share no code; a test checks the copies stay
identical; the canonical copy is finetune/ddp.py).

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE / LOCAL_WORLD_SIZE; world size 1 takes the same code path without a
process group. Backend: nccl on GPU, gloo on CPU. Every collective has a timeout (``--ddp_timeout``, seconds): a
rank that dies or stops makes the others fail with a clear error instead of waiting forever.
Multi-node rule: only global rank 0 decides (resume or not, what to prepare) and broadcasts its decision
(``decide``), because a local file seen by one node may be missing on another.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 1800  # long enough for a rank-0 data preparation or a slow checkpoint write


@dataclass
class DDP:
    rank: int             # global rank: which slice of the data this process reads
    local_rank: int       # rank on this node: which GPU it uses
    world_size: int
    local_world_size: int
    device: torch.device
    master: bool          # global rank 0: the only process that writes files

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def multi_node(self) -> bool:
        return self.world_size > self.local_world_size


def setup_ddp(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DDP:
    """Initialise the process group when launched by torchrun; pick this rank's device."""
    env = {k: int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1))}
    rank, local_rank, world = env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available")
        # torchrun: one GPU per local rank. A single process keeps the index it was given (--device cuda:1).
        dev = torch.device("cuda", local_rank) if world > 1 or dev.index is None else dev
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DDP(rank, local_rank, world, local_world, dev, rank == 0)


def cleanup_ddp() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def print0(*args, **kwargs) -> None:
    """print on global rank 0 only (usable before setup_ddp: torchrun's RANK says who we are)."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_sum(t: torch.Tensor, ddp: DDP) -> torch.Tensor:
    """Sum over ranks in place (gloo has no AVG); identity for one process."""
    if ddp.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(ddp: DDP) -> None:
    if ddp.enabled:
        dist.barrier()


def decide(value, ddp: DDP):
    """Global rank 0's ``value`` on every rank (any picklable object; it comes from our own rank 0, not from a file)."""
    if not ddp.enabled:
        return value
    box = [value if ddp.master else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, ddp: DDP) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ddp.enabled:
        return [value]
    out = [None] * ddp.world_size
    dist.all_gather_object(out, value)
    return out
