"""ddp.py's watchdog with 2 gloo ranks on CPU: a rank stopped with SIGSTOP ends its peer within the watchdog's limit
(not after --ddp_timeout), while a slow but alive rank and a rank that finished first end nobody."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ddp

HERE = Path(__file__).resolve().parents[1]
LIMIT_S = 2.0
SCRIPT = f"""import os, signal, sys, time
sys.path.insert(0, {str(HERE)!r})
import torch, ddp
d = ddp.setup_ddp("cpu", timeout_s=120, watchdog_s={LIMIT_S})
mode, t = sys.argv[1], torch.ones(1)
ddp.all_reduce_sum(t, d)                      # both ranks are up
if d.rank == 1 and mode == "stop":
    os.kill(os.getpid(), signal.SIGSTOP)      # frozen, not dead: the collective below would wait 120 s
if d.rank == 1 and mode == "slow":
    end = time.monotonic() + 3 * {LIMIT_S}    # a slow step in pure Python, longer than the limit
    while time.monotonic() < end:
        sum(range(1000))
ddp.all_reduce_sum(t, d)
if d.rank == 0 and mode == "slow":
    time.sleep(3 * {LIMIT_S})                 # rank 0 still works (a final export) after rank 1 finished
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


def finish(procs, timeout):
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # SIGKILL ends a stopped process too
                p.wait()


def test_a_stopped_rank_ends_its_peer_within_the_watchdog_limit(tmp_path):
    procs = start_ranks(tmp_path, "stop")
    start = time.monotonic()
    _, err0 = procs[0].communicate(timeout=60)
    elapsed = time.monotonic() - start
    procs[1].kill()  # SIGKILL ends a stopped process (torchrun does the same after its grace period)
    procs[1].communicate()
    assert procs[0].returncode == ddp.WATCHDOG_EXIT, err0[-2000:]
    assert elapsed < 30  # process start + LIMIT_S, against the collective's 120 s
    lines = [line for line in err0.splitlines() if line.startswith("error:")]
    assert lines == [f"error: rank 0: rank 1 has given no sign of life for {LIMIT_S:g} s (stopped, frozen or cut off);"
                     f" ending this rank ({ddp.WATCHDOG_ENV}={LIMIT_S:g})"]


def test_a_slow_or_finished_rank_ends_nobody(tmp_path):
    results = finish(start_ranks(tmp_path, "slow"), 60)
    for out, err in results:
        assert out == "done 4\n", err[-2000:]
        assert "error" not in err


@pytest.mark.parametrize("value, limit", [("", ddp.DEFAULT_WATCHDOG_S), ("0", 0.0), ("12.5", 12.5)])
def test_watchdog_limit_setting(monkeypatch, value, limit):
    monkeypatch.setenv(ddp.WATCHDOG_ENV, value)
    assert ddp.watchdog_limit(None) == limit and ddp.watchdog_limit(7) == 7.0


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_watchdog_setting_is_one_line(monkeypatch, value):
    monkeypatch.setenv(ddp.WATCHDOG_ENV, value)
    with pytest.raises(ValueError, match=f"^{ddp.WATCHDOG_ENV}='{value}': must be a number of seconds >= 0"):
        ddp.setup_ddp("cpu")
