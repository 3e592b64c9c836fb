"""Distributed set-up in one place: `torchrun ... script.py` (one or many nodes) or plain `python` (world size 1).

One identical copy in pretrain/ and finetune/ (checked by tests/test_layout.py; canonical here).
torchrun sets RANK / LOCAL_RANK / WORLD_SIZE / LOCAL_WORLD_SIZE; world size 1 takes the same code path without a
process group. Backend: nccl on GPU, gloo on CPU. Every collective waits at most ``timeout_s`` (``--ddp_timeout``,
default 240 s): a rank that stopped, froze or died makes torch raise in its peers, each prints one line and exits,
and torchrun ends the rest, all within 5 minutes. So nothing may run on one rank alone, between collectives, for
that long: data preparation happens before the job, and checkpoint writes take seconds.
Multi-node rule: only global rank 0 decides (resume or not) and tells the others (``from_rank0``): a file one node
sees may be missing on another.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 240


@dataclass
class DDP:
    rank: int              # global rank: which slice of the data this process reads
    local_rank: int        # rank on this node: which GPU it uses
    world_size: int
    local_world_size: int
    device: torch.device
    master: bool           # global rank 0: the only process that writes files

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def device_problem(spec: str) -> str | None:
    """None when ``--device spec`` can be used here, else the one line saying why not (checked at start-up)."""
    try:
        dev = torch.device("cpu" if spec == "auto" else spec)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        return f"--device {spec!r}: use auto, cpu, cuda or cuda:N"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {spec}: no CUDA device is available on this machine (use --device cpu)"
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        return f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)"
    return None


def setup_ddp(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DDP:
    """Join torchrun's process group (if any) and pick this rank's device."""
    rank, local_rank, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0),
                                                                          ("WORLD_SIZE", 1)))
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type == "cuda":  # torchrun: one GPU per local rank; one process keeps the index it was given
        dev = torch.device("cuda", local_rank) if world > 1 or dev.index is None else dev
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
        sys.excepthook = _one_line_timeout(rank, timeout_s, sys.excepthook)
    return DDP(rank, local_rank, world, int(os.environ.get("LOCAL_WORLD_SIZE", world)), dev, rank == 0)


def _one_line_timeout(rank: int, timeout_s: float, hook):
    """torch's timeout error is a page of C++ context: say in one line what happened."""
    def excepthook(kind, error, tb):
        if "timed out" in str(error).lower() or "timeout" in type(error).__name__.lower():
            print(f"error: rank {rank}: a collective waited more than --ddp_timeout {timeout_s:g} s for the other "
                  "ranks (one stopped, died or is cut off); ending this rank", file=sys.stderr, flush=True)
            os._exit(1)  # skip the process group's teardown, which would wait on the silent rank again
        hook(kind, error, tb)
    return excepthook


def cleanup_ddp() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def print0(*args, **kwargs) -> None:
    """print on global rank 0 only (usable before setup_ddp)."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_sum(t: torch.Tensor, ddp: DDP) -> torch.Tensor:
    """Sum over ranks in place (gloo has no AVG)."""
    if ddp.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(ddp: DDP) -> None:
    if ddp.enabled:
        dist.barrier()


def from_rank0(value, ddp: DDP):
    """Global rank 0's ``value`` on every rank (a picklable object made by our own rank 0, never read from a file)."""
    box = [value if ddp.master else None]
    if ddp.enabled:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, ddp: DDP) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    out = [value] * ddp.world_size
    if ddp.enabled:
        dist.all_gather_object(out, value)
    return out


def fail_together(fn, ddp: DDP, errors: tuple, rank0_only: bool = False):
    """fn() on every rank (or rank 0 only). An error of the types ``errors`` on rank 0 is raised on every rank, and
    a rank's own on that rank: no rank is left waiting at the next collective for one that stopped."""
    result, error = None, None
    if ddp.master or not rank0_only:
        try:
            result = fn()
        except errors as e:
            if not ddp.enabled:
                raise
            error = (type(e), str(e))
    for err in (from_rank0(error, ddp), error):
        if err:
            raise err[0](err[1])
    return result
