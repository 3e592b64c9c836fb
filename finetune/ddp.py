"""All distributed setup in one place: `torchrun --nproc_per_node=N finetune/train.py` or plain `python` (world 1).

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; world size 1 takes the same code path without a process group.
Backend: nccl on GPU, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DDPInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    master: bool

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_ddp(device: str = "auto") -> DDPInfo:
    """Initialise the process group when launched by torchrun; pick this rank's device."""
    rank, local_rank, world = (int(os.environ.get(k, d)) for k, d in
                               (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but no CUDA device is available")
        dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DDPInfo(rank, local_rank, world, dev, rank == 0)


def cleanup_ddp() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DDPInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def print0(*args, info: DDPInfo | None = None, **kwargs) -> None:
    """print on the master rank only."""
    if info is None or info.master:
        print(*args, **kwargs, flush=True)
