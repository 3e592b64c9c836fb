"""All distributed setup in one place: `torchrun ... script.py` (one or many nodes) or plain `python` (world 1).

One identical copy of this file lives in pretrain/ and finetune/ (they share no code; a test checks the copies stay
identical; the canonical copy is finetune/ddp.py).

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE / LOCAL_WORLD_SIZE; world size 1 takes the same code path without a
process group. Backend: nccl on GPU, gloo on CPU. Every collective has a timeout (``--ddp_timeout``, seconds): a
rank that dies or stops makes the others fail with a clear error instead of waiting forever.
Watchdog (``Watchdog``, started by ``setup_ddp``): a rank that is stopped (SIGSTOP, a frozen node) would keep the
others in their collective for the whole ``--ddp_timeout`` (30 min by default). Each rank's watchdog thread bumps a
counter in the rendezvous store every ``limit/10`` s, a channel apart from the collectives, so a slow but alive
step (a long checkpoint write, a compile) keeps beating; when a peer's counter has not moved for ``watchdog_s``
seconds (default 300, environment variable ``LLMHW_DDP_WATCHDOG_S``; 0 turns it off), or the store itself has not
answered for that long, the rank prints one line naming the silent rank and ends (exit code 4), and torchrun ends
the rest. A rank that finished cleanly (``cleanup_ddp``) says so in the store and is not waited for.
Multi-node rule: only global rank 0 decides (resume or not, what to prepare) and broadcasts its decision
(``from_rank0``), because a local file seen by one node may be missing on another.
"""
from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 1800  # long enough for a rank-0 data preparation or a slow checkpoint write
DEFAULT_WATCHDOG_S = 300  # a heartbeat goes every limit/10 s from its own thread: only a stopped process misses 10
WATCHDOG_ENV = "LLMHW_DDP_WATCHDOG_S"
WATCHDOG_EXIT = 4


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


def setup_ddp(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S, watchdog_s: float | None = None) -> DDP:
    """Initialise the process group when launched by torchrun; pick this rank's device; start the watchdog
    (``watchdog_s`` seconds of silence from a peer end this rank; None: $LLMHW_DDP_WATCHDOG_S or 300; 0: off)."""
    env = {k: int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1))}
    limit_s = watchdog_limit(watchdog_s)  # a bad setting is found before any rank waits for another
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
        start_watchdog(rank, world, limit_s)
    return DDP(rank, local_rank, world, local_world, dev, rank == 0)


def device_problem(spec: str) -> str | None:
    """None when ``--device spec`` can be used here, else the one line that says why not (every script that takes
    --device checks it with this at start-up, before any work; setup_ddp then picks the rank's device)."""
    if spec == "auto":
        return None
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        return f"--device {spec!r}: not a device (use auto, cpu, cuda or cuda:N)"
    if dev.type not in ("cpu", "cuda"):
        return f"--device {spec}: use auto, cpu, cuda or cuda:N"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {spec}: no CUDA device is available on this machine (use --device cpu)"
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)"
    return None


def cleanup_ddp() -> None:
    global _watchdog
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None
    if dist.is_initialized():
        dist.destroy_process_group()


def watchdog_limit(watchdog_s: float | None) -> float:
    """The watchdog's limit in seconds: the argument, else $LLMHW_DDP_WATCHDOG_S, else the default (0: off)."""
    if watchdog_s is not None:
        return float(watchdog_s)
    text = os.environ.get(WATCHDOG_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_WATCHDOG_S
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{WATCHDOG_ENV}={text!r}: must be a number of seconds >= 0 (0 turns the watchdog off)")
    return value


class Watchdog:
    """Heartbeats through the rendezvous store (not the collectives); ends this process when a peer falls silent.

    Two daemon threads: ``_beat`` does all the store I/O (bump our counter, read the peers'), ``_watch`` only compares
    clocks, so it still acts when a store call hangs (the store's host stopped). Times are this host's monotonic
    clock: nodes' clocks need not agree. A finished rank adds ``FINISHED`` to its counter."""
    PREFIX, FINISHED = "llmhw-heartbeat", 1 << 40

    def __init__(self, store, rank: int, world: int, limit_s: float):
        self.store, self.rank, self.limit = store, rank, limit_s
        self.every = max(0.05, min(limit_s / 10, 30.0))
        now = time.monotonic()
        self.peers = {r: (-1, now) for r in range(world) if r != rank}  # rank -> (last counter, when it moved)
        self.answered = now  # when the store last answered
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True, name=f"ddp-watchdog-{f.__name__}")
                        for f in (self._beat, self._watch)]

    def start(self) -> "Watchdog":
        for t in self.threads:
            t.start()
        return self

    def _beat(self) -> None:
        while not self.stopping.is_set():
            try:
                self.store.add(f"{self.PREFIX}/{self.rank}", 1)
                for peer, (count, moved) in list(self.peers.items()):
                    now_count = self.store.add(f"{self.PREFIX}/{peer}", 0)  # add 0: read without blocking
                    if now_count >= self.FINISHED:
                        self.peers.pop(peer)
                    elif now_count != count:
                        self.peers[peer] = (now_count, time.monotonic())
                self.answered = time.monotonic()
            except Exception:  # noqa: BLE001 - a store that fails is a store that does not answer: _watch decides
                pass
            self.stopping.wait(self.every)

    def _watch(self) -> None:
        while not self.stopping.wait(min(1.0, self.every)):
            now = time.monotonic()
            silent = sorted(r for r, (_, moved) in list(self.peers.items()) if now - moved > self.limit)
            if silent:
                self._end(f"rank {silent[0]} has given no sign of life for {self.limit:g} s (stopped, frozen or "
                          f"cut off)")
            elif now - self.answered > self.limit:
                self._end(f"the rendezvous store has not answered for {self.limit:g} s (its host stopped?)")

    def _end(self, why: str) -> None:
        if self.stopping.is_set():
            return
        print(f"error: rank {self.rank}: {why}; ending this rank ({WATCHDOG_ENV}={self.limit:g})", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os._exit(WATCHDOG_EXIT)  # the main thread is blocked inside a collective: only a hard exit ends it

    def stop(self) -> None:
        """A clean finish: tell the peers not to wait for us, then stop both threads."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=max(2.0, self.every * 2))
        try:
            self.store.add(f"{self.PREFIX}/{self.rank}", self.FINISHED)
        except Exception:  # noqa: BLE001 - the store may already be gone at the very end
            pass


_watchdog: Watchdog | None = None


def start_watchdog(rank: int, world: int, limit_s: float) -> None:
    """Start this process's watchdog on the default process group's store (no-op for 0 s or world size 1)."""
    global _watchdog
    if limit_s <= 0 or world <= 1 or _watchdog is not None:
        return
    get_store = getattr(dist.distributed_c10d, "_get_default_store", None)  # private in torch: guard it
    if get_store is None:
        print0(f"[ddp] this torch does not expose the process group's store: no watchdog ({WATCHDOG_ENV})")
        return
    _watchdog = Watchdog(get_store(), rank, world, limit_s).start()


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


def from_rank0(value, ddp: DDP):
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


def run_or_stop_all(fn, ddp: DDP, errors: tuple, rank0_only: bool = False):
    """fn() on every rank (or on global rank 0 only). An error of the types ``errors`` (the caller's one-line
    errors) raised on global rank 0 is raised on every rank, and a rank's own on that rank: no rank is left
    waiting at the next collective for one that has stopped."""
    result, error = None, None
    if ddp.master or not rank0_only:
        try:
            result = fn()
        except errors as e:
            if not ddp.enabled:
                raise
            error = (type(e), str(e))
    first = from_rank0(error, ddp)  # rank 0's error (or None) on every rank
    for err in (first, error):
        if err:
            raise err[0](err[1])
    return result


fail_together = run_or_stop_all
