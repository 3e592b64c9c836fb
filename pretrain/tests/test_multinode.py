"""Several nodes, simulated on one host: two torchrun launchers meeting at a c10d rendezvous (gloo, 1 process
each). Rank 0 decides the resume; a run folder that the nodes do not share is refused; a stopped rank ends the others
within --ddp_timeout."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import HERE, TINY_ARGS

FAST = ["--hellaswag_limit", "0", "--sample_tokens", "0", "--val_steps", "1", "--eval_interval", "0",
        "--total_batch_size", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args_per_node, script=HERE / "train.py", nproc=1, timeout=240):
    """Start one torchrun per entry of args_per_node (its node's train.py flags); wait for all of them."""
    port, nodes = free_port(), len(args_per_node)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc_per_node", str(nproc),
         "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "test",
         "--rdzv_conf", f"is_host={int(i == 0)}", "--node_rank", str(i), "--max_restarts", "0", str(script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        for i, args in enumerate(args_per_node)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        results.append((p.returncode, out, err))
    return results


def log_of(out):
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("dt_ms", "tokens_per_s", "mfu")} for r in rows]


def test_two_nodes_train_and_resume_from_rank_0s_decision(shakespeare, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(shakespeare), "--out_dir", str(out), *TINY_ARGS, *FAST, "--max_steps", "4",
            "--ckpt_interval", "2"]
    results = torchrun([args, args])
    for rc, _, stderr in results:
        assert rc == 0, stderr[-3000:]
    assert "2 process(es) on cpu" in "".join(out for _, out, _ in results)
    full = log_of(out)
    assert [r["step"] for r in full if "loss" in r] == [1, 2, 3, 4]
    (out / "latest").write_text("ckpt_000002.pt\n")  # as if the nodes had died after step 2
    (out / "summary.json").unlink()
    for rc, stdout, stderr in torchrun([[*args, "--resume"], [*args, "--resume"]]):
        assert rc == 0, stderr[-3000:]
    assert log_of(out) == full  # steps 3 and 4 again, equal to the uninterrupted run


def test_an_out_dir_the_nodes_do_not_share_is_refused(shakespeare, tmp_path):
    common = ["--data", str(shakespeare), *TINY_ARGS, *FAST, "--max_steps", "1"]
    results = torchrun([[*common, "--out_dir", str(tmp_path / "node0")],
                        [*common, "--out_dir", str(tmp_path / "node1")]])  # same flag, different disks
    for rc, _, stderr in results:
        assert rc != 0
    errors = "".join(err for _, _, err in results)
    assert "is not shared: rank(s) [1] do not see the files rank 0 writes there" in errors
    assert not list(tmp_path.glob("node*/.rank0-*"))  # the token file is removed
    assert not any((tmp_path / n / "log.jsonl").exists() for n in ("node0", "node1"))


def test_a_stopped_rank_ends_the_others_within_the_ddp_timeout(shakespeare, tmp_path):
    """Rank 1 stops answering at step 2 (it sleeps, as a SIGSTOPped process would); rank 0's collective times out
    after --ddp_timeout 5 s and every rank ends with one line instead of waiting forever."""
    script = tmp_path / "stopping_train.py"
    script.write_text(f"""import os, sys, time
sys.path.insert(0, {str(HERE)!r})
import train
real_get_lr = train.get_lr
def get_lr(step, tc):  # called once per optimizer step, after the step's all-reduce of the loss
    if os.environ["RANK"] == "1" and step == 2:
        time.sleep(600)
    return real_get_lr(step, tc)
train.get_lr = get_lr
train.main()
""")
    args = ["--data", str(shakespeare), "--out_dir", str(tmp_path / "run"), *TINY_ARGS, *FAST, "--max_steps", "4",
            "--ddp_timeout", "5"]
    start = time.time()
    ((rc, _, stderr),) = torchrun([args], script=script, nproc=2)
    assert rc != 0 and time.time() - start < 180
    assert "error: rank 0: a collective waited more than --ddp_timeout 5 s" in stderr


def test_rank_0s_error_stops_every_rank_at_once(tiny_run, shakespeare, tmp_path):
    """A corrupt checkpoint seen by rank 0 ends both ranks with its one line, long before --ddp_timeout."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    (out / "ckpt_000006.pt").write_bytes(b"PK\x03\x04 not really")
    args = ["--data", str(shakespeare), "--out_dir", str(out), *TINY_ARGS, *FAST, "--max_steps", "8", "--resume",
            "--ddp_timeout", "900"]
    start = time.time()
    ((rc, _, stderr),) = torchrun([args], nproc=2)
    assert rc != 0 and time.time() - start < 120
    # the same line on both ranks
    assert stderr.count("ckpt_000006.pt: refused: truncated or not a PyTorch checkpoint") == 2
