"""ddp.py's collective timeout with 2 gloo ranks on CPU: a rank stopped with SIGSTOP ends its peer with one line soon
after --ddp_timeout (torch's own timeout, no watchdog thread), while a slow rank within the timeout and a rank that
finished first end nobody."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TIMEOUT_S = 3.0
SCRIPT = f"""import os, signal, sys, time
sys.path.insert(0, {str(HERE)!r})
import torch, ddp
d = ddp.setup_ddp("cpu", timeout_s={TIMEOUT_S})
mode, t = sys.argv[1], torch.ones(1)
ddp.all_reduce_sum(t, d)                      # both ranks are up
if d.rank == 1 and mode == "stop":
    os.kill(os.getpid(), signal.SIGSTOP)      # frozen, not dead
if d.rank == 1 and mode == "slow":
    time.sleep({TIMEOUT_S} / 3)               # slow, but within the timeout
ddp.all_reduce_sum(t, d)
if d.rank == 0 and mode == "slow":
    time.sleep(2 * {TIMEOUT_S})               # rank 0 still works (a final export) after rank 1 finished
print("done", int(t.item()))
ddp.cleanup_ddp()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(tmp_path, mode):
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]


def test_a_stopped_rank_ends_its_peer_after_the_timeout_in_one_line(tmp_path):
    procs = start_ranks(tmp_path, "stop")
    start = time.monotonic()
    try:
        _, err0 = procs[0].communicate(timeout=90)
    finally:
        elapsed = time.monotonic() - start
        for p in procs:
            p.kill()  # SIGKILL ends a stopped process too (torchrun does the same)
            p.communicate()
    assert procs[0].returncode == 1, err0[-2000:]
    assert elapsed < 60  # process start + TIMEOUT_S
    assert [line for line in err0.splitlines() if line.startswith("error:")] == [
        f"error: rank 0: a collective waited more than --ddp_timeout {TIMEOUT_S:g} s for the other ranks (one "
        "stopped, died or is cut off); ending this rank"]


def test_a_slow_or_finished_rank_ends_nobody(tmp_path):
    procs = start_ranks(tmp_path, "slow")
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert (p.returncode, out) == (0, "done 4\n"), err[-2000:]
        assert "error" not in err
