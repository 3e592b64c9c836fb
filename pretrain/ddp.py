"""Distributed set-up: `torchrun ... script.py` (one or many nodes) or plain `python` (world size 1: the same code,
no process group, the collectives below do nothing). One identical copy in pretrain/ and finetune/, canonical here.
Every collective waits at most ``--ddp_timeout`` s: a rank that stopped or died makes its peers print one line and
exit, and torchrun ends the rest (so nothing may run on one rank alone that long). Multi-node: only global rank 0
decides (``from_rank0``): a file one node sees may be missing on another.
"""
import datetime
import os
import re
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
    device: torch.device
    master: bool           # global rank 0: the only process that writes files
    enabled: bool          # world_size > 1: there is a process group


def device_problem(spec: str) -> str | None:
    """None when ``--device spec`` can be used here, else the one line saying why not (checked at start-up)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        return f"--device {spec!r}: use auto, cpu, cuda or cuda:N"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {spec}: no CUDA device is available on this machine (use --device cpu)"
    if spec.startswith("cuda:") and int(spec[5:]) >= torch.cuda.device_count():
        return f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)"
    return None


def setup_ddp(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DDP:
    """Join torchrun's process group (if any; it sets RANK, LOCAL_RANK, WORLD_SIZE) and pick this rank's device."""
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type == "cuda":  # torchrun: one GPU per local rank; one process keeps the index it was given
        dev = torch.device("cuda", local_rank) if world > 1 or dev.index is None else dev
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
        default_hook = sys.excepthook

        def one_line_timeout(kind, error, tb):  # torch's timeout error is a page of C++ context: say it in one line
            if "timed out" in str(error).lower() or "timeout" in type(error).__name__.lower():
                print(f"error: rank {rank}: a collective waited more than --ddp_timeout {timeout_s:g} s for the "
                      "other ranks (one stopped, died or is cut off); ending this rank", file=sys.stderr, flush=True)
                os._exit(1)  # skip the process group's teardown, which would wait on the silent rank again
            default_hook(kind, error, tb)
        sys.excepthook = one_line_timeout
    return DDP(rank, local_rank, world, dev, master=rank == 0, enabled=world > 1)


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
        dist.all_reduce(t)  # op SUM
    return t


def barrier(ddp: DDP) -> None:
    if ddp.enabled:
        dist.barrier()


def gather(value, ddp: DDP) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    out = [value] * ddp.world_size
    if ddp.enabled:
        dist.all_gather_object(out, value)
    return out


def from_rank0(value, ddp: DDP):
    """Global rank 0's ``value`` on every rank (a picklable object made by our own rank 0, never read from a file)."""
    return gather(value, ddp)[0]


def fail_together(fn, ddp: DDP, errors: tuple, rank0_only: bool = False):
    """fn() on every rank (or rank 0 only). An error of the types ``errors`` on rank 0 is raised on every rank, and
    a rank's own on that rank: no rank is left waiting at the next collective for one that stopped."""
    result = error = None
    try:
        if ddp.master or not rank0_only:
            result = fn()
    except errors as e:
        if not ddp.enabled:
            raise
        error = (type(e), str(e))
    for err in (from_rank0(error, ddp), error):
        if err:
            raise err[0](err[1])
    return result
