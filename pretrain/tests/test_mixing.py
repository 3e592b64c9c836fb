"""prepare.ShardLoader with --data_order shuffle: every step draws from every source in proportion, every window
once per epoch, ranks disjoint and equal to one process, exact resume; a killed shuffled run resumes bit-identically."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import prepare
from conftest import HERE, TINY_ARGS, kill_after_step
from prepare import DataError, ShardLoader


def two_source_dataset(folder, n_a=3000, n_b=7000, shard_tokens=4000):
    """Train split = source A (ids 0..99, first 30 %) then source B (ids 100..199), as prepare.py writes two input
    files one after the other; a token's id tells its source."""
    rng = np.random.default_rng(0)
    tokens = np.concatenate([rng.integers(0, 100, n_a), rng.integers(100, 200, n_b)])
    w = prepare.ShardWriter(folder, "train", shard_tokens, vocab_size=256, eot_id=None)
    w.write(tokens)
    w.close()
    (folder / "meta.json").write_text(json.dumps({
        "format_version": 2, "vocab_size": 256, "eot_id": None, "tokenizer": {"dir": "tokenizer"},
        "train": {"shards": w.names, "tokens": w.total}, "val": {"shards": [], "tokens": 0}}))
    return tokens


def source_a_share(x):
    """Share of the windows (rows) that come from source A (a window is one source except at the one boundary)."""
    return float((x[:, 0] < 100).float().mean())


def test_every_step_draws_from_every_source_in_proportion(tmp_path):
    tokens = two_source_dataset(tmp_path)
    B, T, steps = 16, 16, 30  # 16 windows a step, ~624 windows an epoch
    shuffled = ShardLoader(tmp_path, "train", B, T, order="shuffle", seed=5)
    in_order = ShardLoader(tmp_path, "train", B, T)
    shares = [source_a_share(shuffled.next_batch()[0]) for _ in range(steps)]
    # each step: both sources, near the 30 % of the whole (hypergeometric spread of 16 draws: sd 0.11)
    assert all(0 < s < 1 for s in shares) and all(abs(s - 0.3) < 0.3 for s in shares)
    assert abs(np.mean(shares) - 0.3) < 0.05
    # the file-order loader (the reference this fixes) reads all of A, then all of B: most steps are one source
    ordered = [source_a_share(in_order.next_batch()[0]) for _ in range(steps)]
    assert sum(s in (0.0, 1.0) for s in ordered) >= steps - 2
    # one whole epoch reads every window exactly once: token counts equal the split's (up to the offset's ends)
    loader = ShardLoader(tmp_path, "train", B, T, order="shuffle", seed=5)
    seen = np.zeros(len(tokens), dtype=int)
    for _ in range(loader.batches_per_epoch()):
        picked = list(loader.windows(loader.order[loader.pos:loader.pos + B]))
        loader.next_batch()  # the last step of the epoch plans the next one: read this step's windows first
        for s, start in picked:
            seen[s * 4000 + start:s * 4000 + start + T] += 1  # x covers T tokens of the window
    assert seen.max() == 1 and seen.sum() == loader.batches_per_epoch() * B * T
    assert loader.epoch == 1


def test_ranks_are_disjoint_equal_to_one_process_and_new_each_epoch(tmp_path):
    two_source_dataset(tmp_path, 600, 1400, shard_tokens=900)
    B, T = 2, 8
    single = ShardLoader(tmp_path, "train", B, T, order="shuffle", seed=1, accum=2)
    ranks = [ShardLoader(tmp_path, "train", B, T, rank=r, world_size=2, order="shuffle", seed=1) for r in range(2)]
    for _ in range(3 * ranks[0].batches_per_epoch()):  # three epochs
        xs = [r.next_batch() for r in ranks]
        for x, y in xs:
            assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
        a, b = ({tuple(row) for row in x.tolist()} for x, _ in xs)
        assert not a & b  # the ranks read different windows
        for x, y in xs:  # one process with two accumulation steps reads the same windows in the same order
            x1, y1 = single.next_batch()
            assert torch.equal(x, x1) and torch.equal(y, y1)
    assert single.epoch == ranks[0].epoch == 3
    first, second = (ShardLoader(tmp_path, "train", B, T, order="shuffle", seed=s) for s in (1, 2))
    assert not torch.equal(first.next_batch()[0], second.next_batch()[0])  # the seed changes the order
    order0 = first.order.copy()
    first.reset()
    assert np.array_equal(first.order, order0) and first.pos == 0  # reset: the first epoch's order again


def test_shuffled_loader_resumes_exactly_and_checks_the_position(tmp_path):
    two_source_dataset(tmp_path, 600, 1400, shard_tokens=900)
    a = ShardLoader(tmp_path, "train", 2, 8, rank=1, world_size=2, order="shuffle", seed=3)
    for _ in range(a.batches_per_epoch() + 7):  # into the second epoch
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # survives serialization
    assert state["epoch"] == 1
    b = ShardLoader(tmp_path, "train", 2, 8, rank=1, world_size=2, order="shuffle", seed=3)
    b.load_state_dict(state)
    for _ in range(a.batches_per_epoch()):  # across the next epoch boundary too
        assert all(torch.equal(u, v) for u, v in zip(a.next_batch(), b.next_batch()))
    with pytest.raises(DataError, match="another --data_order or --seed"):
        ShardLoader(tmp_path, "train", 2, 8, order="shuffle", seed=4).load_state_dict(state)
    with pytest.raises(DataError, match="another --data_order or --seed"):
        shuffled = ShardLoader(tmp_path, "train", 2, 8, order="shuffle", seed=3)
        shuffled.load_state_dict({"order": "sequential", "seed": None, "pos": 0, "epoch": 0})
    with pytest.raises(DataError, match="does not fit"):
        ShardLoader(tmp_path, "train", 2, 8, order="shuffle", seed=3).load_state_dict({**state, "pos": 10 ** 6})
    with pytest.raises(DataError, match="fewer than one step needs"):
        ShardLoader(tmp_path, "train", 300, 8, order="shuffle")


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_killed_shuffled_run_resumes_bit_identically(shakespeare, tmp_path):
    common = ["--data", str(shakespeare), "--max_steps", "8", *TINY_ARGS, "--data_order", "shuffle",
              "--ckpt_interval", "1", "--eval_interval", "4", "--hellaswag_limit", "0"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run([sys.executable, str(HERE / "train.py"), *common, "--out_dir", str(whole)], check=True,
                   capture_output=True, timeout=300)
    cmd = [sys.executable, str(HERE / "train.py"), *common, "--out_dir", str(broken)]
    assert kill_after_step(cmd, broken / "log.jsonl", 3) == -signal.SIGKILL
    r = subprocess.run([sys.executable, str(HERE / "train.py"), *common, "--out_dir", str(broken), "--resume"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr[-2000:]
    timing = ("dt_ms", "tokens_per_s", "mfu")
    strip = lambda log: [{k: v for k, v in rec.items() if k not in timing} for rec in log]  # noqa: E731
    assert strip(read_log(broken)) == strip(read_log(whole))
    assert [rec["epoch"] for rec in read_log(whole) if "loss" in rec] == [0] * 8
