"""sweep.py end to end (ranks, a second seed, skip/resume/redo), generate.py on its outputs, GPU mapping with a fake
device list, a --device no run could use."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import generate
import sweep
from runlog import read_log

HERE = Path(__file__).resolve().parents[1]


def flags(model_dir, *extra):
    return ["--model_name_or_path", str(model_dir), "--max_examples", "48", "--eval_ratio", "0.25",
            "--batch_size", "4", "--eval_batch_size", "4", "--max_length", "96", "--max_steps", "2",
            "--eval_interval", "1", "--lr", "1e-2", *extra]


def run_sweep(*args):
    return subprocess.run([sys.executable, str(HERE / "sweep.py"), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_sweep_with_a_second_seed_then_generate(tiny_model_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # two runs at a time on the CPU (--jobs 2): each run's output beside its folder, the folders train.py's own
    args = ["--ranks", "0", "2", "--seed_runs", "2:7", "--jobs", "2", "--out_dir", str(sweep_dir), "--",
            *flags(tiny_model_dir)]
    r = run_sweep(*args)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert sorted(p.name for p in sweep_dir.glob("*.log")) == ["r0.log", "r2.log", "r2_seed7.log"]
    s = json.loads((sweep_dir / "summary.json").read_text())
    assert [(row["run"], row["rank"], row["seed"]) for row in s["runs"]] == [("r0", 0, 42), ("r2", 2, 42),
                                                                            ("r2_seed7", 2, 7)]
    for row in s["runs"]:
        for key in ("final_eval_loss", "best_eval_loss", "best_eval_step", "final_train_loss", "trainable_params",
                    "wall_seconds", "peak_memory_mb"):
            assert row[key] is not None, key
        log = read_log(sweep_dir / row["run"] / "log.jsonl")
        evals = [x for x in log if "eval_loss" in x]
        assert row["final_eval_loss"] == evals[-1]["eval_loss"]
        assert row["final_train_loss"] == [x for x in log if "train_loss" in x][-1]["train_loss"]
        assert (row["best_eval_loss"], row["best_eval_step"]) == min((x["eval_loss"], x["step"]) for x in evals)
    # the second seed trains on the same data (same split) with other randomness (LoRA init, order)
    a = json.loads((sweep_dir / "r2" / "config.json").read_text())
    b = json.loads((sweep_dir / "r2_seed7" / "config.json").read_text())
    assert (a["data_seed"], a["seed"], b["data_seed"], b["seed"]) == (42, 42, 42, 7)
    s2, s7 = (json.loads((sweep_dir / n / "summary.json").read_text()) for n in ("r2", "r2_seed7"))
    assert s2["initial_eval_loss"] == s7["initial_eval_loss"]  # same eval split, LoRA starts as a no-op
    assert s2["final_train_loss"] != s7["final_train_loss"]
    assert (sweep_dir / "curves.png").stat().st_size > 0 and (sweep_dir / "r0" / "model").is_dir()
    md = (sweep_dir / "summary.md").read_text()
    assert "| r0 | full | 42 |" in md and "| r2_seed7 | 2 | 7 |" in md
    # a finished run is skipped on a rerun
    mtime = (sweep_dir / "r2" / "summary.json").stat().st_mtime
    r = run_sweep(*args)
    assert r.returncode == 0 and "done already" in r.stdout
    assert (sweep_dir / "r2" / "summary.json").stat().st_mtime == mtime

    out = tmp_path / "gen.json"
    res = generate.main(["--base", str(tiny_model_dir), "--full", str(sweep_dir / "r0" / "model"),
                         "--lora", str(sweep_dir / "r2" / "adapter"), "--max_new_tokens", "5", "--greedy",
                         "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"] == res["results"] and out.with_suffix(".md").is_file()
    assert list(saved["models"]) == ["original", "full finetune", "LoRA r=2"]
    assert len(saved["results"]) == len(generate.read_instructions(None))
    for it in saved["results"]:
        assert set(it["responses"]) == {"original", "full finetune", "LoRA r=2"}
        assert it["prompt"].startswith("BEGINNING OF CONVERSATION: USER: ")


def test_sweep_resumes_an_interrupted_run_and_redoes_with_overwrite(tmp_path):
    out = tmp_path / "s"
    (out / "r4" / "ckpt").mkdir(parents=True)
    (out / "r4" / "ckpt" / "latest").write_text("ckpt_000004.pt\n")
    assert sweep.command(sweep.Run(4), out, [], redo=False)[-1] == "--resume"
    assert sweep.command(sweep.Run(4), out, [], redo=True)[-1] == "--overwrite"
    cmd = sweep.command(sweep.Run(8, 3), out, ["--seed", "1"], redo=False)
    assert [cmd[i + 1] for i, f in enumerate(cmd) if f == "--seed"] == ["1", "3"]  # the run's seed is last: it wins
    assert cmd[-2:] == ["--out_dir", str(out / "r8_seed3")]
    # a summary of an earlier run (another run_id than config.json's) does not count as finished
    (out / "r4" / "config.json").write_text(json.dumps({"run_id": "new"}))
    (out / "r4" / "summary.json").write_text(json.dumps({"run_id": "old"}))
    assert not sweep.finished(out / "r4")


def test_sweep_refuses_flags_it_sets_and_bad_seed_runs(tmp_path):
    for args, message in ((["--", "--lora_dim", "3"], "set by sweep.py"), (["--", "--resume"], "set by sweep.py"),
                          (["--seed_runs", "8"], "expected RANK:SEED")):
        r = run_sweep("--out_dir", str(tmp_path), *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_parallel_gpus_maps_through_the_parents_visible_devices(tmp_path, monkeypatch):
    """Under CUDA_VISIBLE_DEVICES=4,6 the sweep's GPUs are the machine's 4 and 6 (a child given "0" would land on the
    machine's GPU 0); without the variable, 0..n-1. A fake device list and fake processes: no GPU needed."""
    import torch

    started = []

    class FakeRun:
        def __init__(self, cmd, env, **kwargs):
            started.append(env["CUDA_VISIBLE_DEVICES"])
            self.returncode = 0

        def poll(self):
            return self.returncode

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(sweep, "start_child", FakeRun)
    monkeypatch.setattr(sweep.time, "sleep", lambda s: None)
    runs = [sweep.Run(0), sweep.Run(2), sweep.Run(4)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6,7")  # 3 listed, 2 usable: CUDA counts only those
    assert sweep.run_parallel(runs, tmp_path, [], False, sweep.slots(True, 1)) == {r: 0 for r in runs}
    assert started[:2] == ["4", "6"] and set(started) == {"4", "6"}
    started.clear()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    (tmp_path / "b").mkdir()
    sweep.run_parallel(runs, tmp_path / "b", [], False, sweep.slots(True, 1))
    assert started[:2] == ["0", "1"] and set(started) == {"0", "1"}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="needs CUDA devices"):
        sweep.slots(True, 1)


def test_cpu_jobs_run_side_by_side_with_the_cores_shared_out(tmp_path, monkeypatch):
    """--jobs 2 on 2 cores: never more than 2 runs at once, each child with OMP_NUM_THREADS=1; every run done once."""
    r = run_sweep("--jobs", "0", "--out_dir", str(tmp_path / "s"))
    assert r.returncode == 2 and "--jobs must be >= 1" in r.stderr
    live, most, started = set(), [0], []

    class FakeRun:
        def __init__(self, cmd, env, **kwargs):
            self.name = cmd[cmd.index("--out_dir") + 1]
            started.append((self.name, env["OMP_NUM_THREADS"]))
            live.add(self.name)
            most[0] = max(most[0], len(live))
            self.polls, self.returncode = 0, None

        def poll(self):
            self.polls += 1
            if self.polls >= 2:  # each run lasts two polls
                live.discard(self.name)
                self.returncode = 0
            return self.returncode

    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sweep, "start_child", FakeRun)
    monkeypatch.setattr(sweep.time, "sleep", lambda s: None)
    runs = [sweep.Run(r) for r in (0, 1, 2, 4, 8)]
    assert sweep.run_parallel(runs, tmp_path, [], False, sweep.slots(False, 2)) == {r: 0 for r in runs}
    assert most[0] == 2 and {t for _, t in started} == {"1"}
    assert sorted(n for n, _ in started) == sorted(str(tmp_path / r.name) for r in runs)


def test_a_device_every_run_would_refuse_is_one_line_before_any_run(tmp_path):
    r = run_sweep("--ranks", "2", "--out_dir", str(tmp_path / "s"), "--", "--device", "cuda:99")
    assert r.returncode == 2 and "--device cuda:99: " in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) and not (tmp_path / "s").exists()


def test_a_folder_with_a_users_file_is_refused_and_kept(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    r = run_sweep("--ranks", "2", "--out_dir", str(tmp_path / "s"), "--", "--device", "cpu")
    assert r.returncode == 2 and "not a rank sweep's output (notes.txt)" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["notes.txt"]
