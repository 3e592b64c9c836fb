"""Faults and mistakes: kills at each write, a full disk, corrupt or foreign files, outputs over inputs, bad values.

Each test checks that the earlier outputs survive and that the next start says what is wrong in one line.
"""
import contextlib
import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import user_error

import checkpoint
import fileio
import generate
import lora
import sweep
import train

FLAGS = ["--max_examples", "48", "--eval_ratio", "0.25", "--batch_size", "4", "--eval_batch_size", "4",
         "--max_length", "96", "--max_steps", "4", "--eval_interval", "2", "--ckpt_interval", "2", "--lr", "1e-2",
         "--device", "cpu"]


def argv(model_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--out_dir", str(out), *FLAGS, *extra]


def run(model_dir, out, *extra):
    return train.main(argv(model_dir, out, *extra))


def one_line_error(model_dir, out, *extra) -> str:
    return user_error(train.main, argv(model_dir, out, *extra))


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != fileio.LOCK}


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A finished LoRA r=2 run (4 steps, checkpoints at 2 and 4)."""
    out = tmp_path_factory.mktemp("finished") / "r2"
    run(tiny_model_dir, out, "--lora_dim", "2")
    return out


@pytest.fixture
def earlier(finished, tmp_path):
    out = tmp_path / "r2"
    shutil.copytree(finished, out)
    return out


def test_output_dir_over_an_input_is_refused_and_nothing_written(tiny_model_dir, tmp_path, alpaca_path):
    before = digest(tiny_model_dir)
    for out in (tiny_model_dir, tiny_model_dir / "sub", tiny_model_dir.parent):
        assert f"the input {tiny_model_dir}" in one_line_error(tiny_model_dir, out, "--lora_dim", "2")
    assert digest(tiny_model_dir) == before and not (tiny_model_dir / "sub").exists()
    data = tmp_path / "d" / "alpaca.json.xz"
    data.parent.mkdir()
    shutil.copy(alpaca_path, data)
    assert f"the input {data}" in one_line_error(tiny_model_dir, tmp_path / "d", "--lora_dim",
                                                                      "2", "--data_path", str(data))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["alpaca.json.xz"]


@pytest.mark.parametrize("files", [["ckpt.pt", "log.jsonl"], ["meta.json"], ["config.json"],
                                   ["log.jsonl", "notes.txt"], [".llmhw-output"]])
def test_output_dir_of_another_kind_is_refused_even_with_overwrite(tiny_model_dir, tmp_path, files):
    out = tmp_path / "other"
    out.mkdir()
    for f in files:  # a pretraining run, a shard folder, a HF config of some model, a user's file, another marker
        (out / f).write_text('{"model_type": "gpt2"}' if f != ".llmhw-output" else '{"kind": "bpe tokenizer"}')
    before = digest(out)
    assert "nothing was deleted" in one_line_error(tiny_model_dir, out, "--lora_dim", "2", "--overwrite")
    assert digest(out) == before


def test_output_dir_that_is_a_file_or_not_writable_is_one_line_at_the_start(tiny_model_dir, tmp_path):
    (tmp_path / "file").write_text("keep me")
    assert "is a file" in one_line_error(tiny_model_dir, tmp_path / "file", "--lora_dim", "2")
    assert (tmp_path / "file").read_text() == "keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: nothing to check here
            return
        assert "cannot write in" in one_line_error(tiny_model_dir, locked / "run", "--lora_dim", "2")
    finally:
        locked.chmod(0o700)


def test_fresh_run_into_an_earlier_run_refuses_unless_told(earlier, tiny_model_dir):
    before = digest(earlier)
    msg = one_line_error(tiny_model_dir, earlier, "--lora_dim", "2")
    assert "holds an earlier run" in msg and "--resume" in msg and "--overwrite" in msg
    assert digest(earlier) == before


def test_failed_overwrite_keeps_the_earlier_results(earlier, tiny_model_dir, monkeypatch):
    results = {k: v for k, v in digest(earlier).items() if k.startswith(("adapter/", "summary.json", "curve.png"))}
    calls = []

    def crash(self, batches):
        calls.append(1)
        raise RuntimeError("simulated crash in step 1")
    monkeypatch.setattr(train.Trainer, "train_step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tiny_model_dir, earlier, "--lora_dim", "2", "--overwrite")
    assert calls and {k: v for k, v in digest(earlier).items() if k in results} == results
    assert not sweep.finished(earlier)  # the summary is the earlier run's, not this one's: a sweep reruns it
    lora.load_adapter(lora.load_model(str(tiny_model_dir), torch.device("cpu")), earlier / "adapter")


def test_kill_inside_the_adapter_swap_leaves_a_loadable_adapter(earlier, tiny_model_dir, monkeypatch):
    old = digest(earlier / "adapter")
    # 1) a kill after the swap, before the old copy is removed: the new adapter is in place
    real_rmtree = shutil.rmtree

    def killed_rmtree(path, *a, **k):
        if Path(path).name == ".adapter.llmhw-old":
            raise KeyboardInterrupt("killed")
        return real_rmtree(path, *a, **k)
    monkeypatch.setattr(fileio.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model_dir, earlier, "--lora_dim", "2", "--overwrite", "--seed", "5")
    monkeypatch.setattr(fileio.shutil, "rmtree", real_rmtree)
    assert digest(earlier / "adapter") != old
    lora.load_adapter(lora.load_model(str(tiny_model_dir), torch.device("cpu")), earlier / "adapter")
    run(tiny_model_dir, earlier, "--lora_dim", "2", "--overwrite")  # the next start takes the folder as ours
    # 2) a kill between the two renames: the next start puts the earlier adapter back, then replaces it
    real_replace = os.replace

    def killed_replace(src, dst):
        if Path(dst) == earlier / "adapter":
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(src, dst)
    monkeypatch.setattr(fileio.os, "replace", killed_replace)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model_dir, earlier, "--lora_dim", "2", "--overwrite")
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert not (earlier / "adapter").exists() and (earlier / ".adapter.llmhw-old").is_dir()
    run(tiny_model_dir, earlier, "--lora_dim", "2", "--overwrite")
    lora.load_adapter(lora.load_model(str(tiny_model_dir), torch.device("cpu")), earlier / "adapter")
    assert not (earlier / ".adapter.llmhw-old").exists()


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def full_disk(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the checkpoint at step 4
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    assert "no space left on the disk" in one_line_error(tiny_model_dir, out, "--lora_dim", "2")
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["ckpt_000002.pt", "latest"]  # no temp file
    assert checkpoint.load_checkpoint(out / "ckpt", train.CKPT_FORMAT)["step"] == 2
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert run(tiny_model_dir, out, "--lora_dim", "2", "--resume")["steps"] == 4


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/llmhw_finetune_pwned",))


@pytest.mark.parametrize("corrupt, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated or not a PyTorch checkpoint"),
    (lambda p: p.write_bytes(b""), "truncated or not a PyTorch checkpoint (0 bytes)"),
    (lambda p: p.write_bytes(pickle.dumps({"format": train.CKPT_FORMAT, "x": Exploit()})),
     "refused: holds Python objects"),
    (lambda p: torch.save({"model": {}}, p), f"expected '{train.CKPT_FORMAT}'"),
    (lambda p: torch.save({"format": "llmhw-finetune-ckpt", "format_version": 2, "step": 4}, p),
     "not a checkpoint of this trainer (format 'llmhw-finetune-ckpt'"),  # the layout before this one
    (lambda p: p.unlink(), "not a pointer to a checkpoint here"),
    (lambda p: (p.parent / "latest").write_text("{"), "not a pointer to a checkpoint here"),
])
def test_corrupt_checkpoint_is_one_line_on_resume(earlier, tiny_model_dir, corrupt, message):
    Path("/tmp/llmhw_finetune_pwned").unlink(missing_ok=True)
    corrupt(checkpoint.latest(earlier / "ckpt"))
    before = digest(earlier)
    assert message in one_line_error(tiny_model_dir, earlier, "--lora_dim", "2", "--resume")
    assert not Path("/tmp/llmhw_finetune_pwned").exists()  # the crafted pickle never ran
    assert digest(earlier) == before


def test_corrupt_weights_files_are_one_line(earlier, tiny_model_dir, tmp_path):
    bad_adapter = tmp_path / "bad_adapter"
    shutil.copytree(earlier / "adapter", bad_adapter)
    (bad_adapter / "lora_weights.safetensors").write_bytes(b"\x00" * 7)
    assert "not a readable safetensors file" in one_line_error(
        tiny_model_dir, tmp_path / "o1", "--lora_dim", "2", "--lora_load_path", str(bad_adapter))
    bad_model = tmp_path / "bad_model"
    shutil.copytree(tiny_model_dir, bad_model)
    weights = bad_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert f"cannot load model '{bad_model}'" in one_line_error(bad_model, tmp_path / "o2", "--lora_dim", "2")


def test_rank_beyond_a_target_module_is_refused_at_startup(tiny_model_dir, tmp_path):
    msg = one_line_error(tiny_model_dir, tmp_path / "o", "--lora_dim", "17")  # n_embd 16
    assert "lora_dim 17 exceeds min(in, out) of module 'transformer.h.0.attn.c_attn' (weight (16, 48))" in msg
    assert not (tmp_path / "o" / "log.jsonl").exists()


def test_adapter_of_another_base_model_is_refused_unless_told(earlier, tiny_model_dir, tmp_path, capsys):
    other = tmp_path / "other_base"
    shutil.copytree(tiny_model_dir, other)
    with pytest.raises(SystemExit) as e:  # found at start-up, before any model loads
        run(other, tmp_path / "o", "--lora_dim", "2", "--lora_load_path", str(earlier / "adapter"), "--max_steps", "1")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and not (tmp_path / "o").exists()
    assert f"was trained on {tiny_model_dir.resolve()}, but --model_name_or_path is {other}" in err
    run(other, tmp_path / "o", "--lora_dim", "2", "--lora_load_path", str(earlier / "adapter"), "--max_steps", "1",
        "--allow_other_base")
    assert (tmp_path / "o" / "summary.json").is_file()


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--grad_clip", "nan"),
                                         ("--weight_decay", "-1"), ("--dtype", "float16"), ("--live", "mlflow"),
                                         ("--ddp_timeout", "0"), ("--keep_checkpoints", "0")])
def test_bad_values_are_usage_errors(tiny_model_dir, tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        run(tiny_model_dir, tmp_path / "o", "--lora_dim", "2", flag, value)
    assert e.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_grad_clip_zero_means_off(tiny_model_dir, tmp_path):
    # reference: a clip threshold no gradient reaches
    run(tiny_model_dir, tmp_path / "off", "--lora_dim", "2", "--grad_clip", "0", "--lr", "0.5")
    run(tiny_model_dir, tmp_path / "huge", "--lora_dim", "2", "--grad_clip", "1e30", "--lr", "0.5")
    run(tiny_model_dir, tmp_path / "tight", "--lora_dim", "2", "--grad_clip", "1e-3", "--lr", "0.5")
    losses = {n: [r["train_loss"] for r in map(json.loads, (tmp_path / n / "log.jsonl").read_text().splitlines())
                  if "train_loss" in r] for n in ("off", "huge", "tight")}
    assert losses["off"] == losses["huge"] and losses["off"] != losses["tight"]


def test_overwrite_checks_the_new_data_before_deleting_anything(earlier, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"instruction\": \"a\"}]")
    before = digest(earlier)
    assert "record 0 has no 'output'" in one_line_error(tiny_model_dir, earlier, "--lora_dim", "2", "--overwrite",
                                                        "--data_path", str(bad))
    assert "fewer than one batch" in one_line_error(tiny_model_dir, earlier, "--lora_dim", "2", "--overwrite",
                                                    "--batch_size", "40")  # a split smaller than one batch
    assert digest(earlier) == before  # ckpt/ included: the earlier run can still be resumed


def test_refused_run_leaves_no_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "new" / "run"
    assert "fewer than one batch" in one_line_error(tiny_model_dir, out, "--lora_dim", "2", "--batch_size", "64")
    assert not (tmp_path / "new").exists()


def test_resume_on_other_data_is_refused_unless_told(tiny_model_dir, tmp_path, alpaca_path, monkeypatch, capsys):
    import lzma

    records = json.load(lzma.open(alpaca_path, "rt", encoding="utf-8"))
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(records[:60]))
    other = tmp_path / "r2"
    real_step = train.Trainer.train_step

    def crash_at_step_3(self, batches):
        if self.step == 2:
            raise RuntimeError("simulated crash in step 3")
        return real_step(self, batches)
    monkeypatch.setattr(train.Trainer, "train_step", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tiny_model_dir, other, "--lora_dim", "2", "--data_path", str(data))
    monkeypatch.setattr(train.Trainer, "train_step", real_step)
    data.write_text(json.dumps(records[60:120]))  # the same file name, the same tokenizer, other records
    before = digest(other)
    msg = one_line_error(tiny_model_dir, other, "--lora_dim", "2", "--data_path", str(data), "--resume")
    assert "was trained on other data" in msg and "--allow_new_data" in msg and digest(other) == before
    capsys.readouterr()
    s = run(tiny_model_dir, other, "--lora_dim", "2", "--data_path", str(data), "--resume", "--allow_new_data")
    assert s["steps"] == 4 and "the data differ from the checkpoint's (--allow_new_data)" in capsys.readouterr().out


def test_crafted_pickle_in_a_model_folder_is_one_line_without_weights_only_advice(tiny_model_dir, tmp_path, capsys):
    crafted = tmp_path / "crafted"
    shutil.copytree(tiny_model_dir, crafted)
    (crafted / "model.safetensors").unlink()
    (crafted / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Exploit()}))
    Path("/tmp/llmhw_finetune_pwned").unlink(missing_ok=True)
    msg = one_line_error(crafted, tmp_path / "o", "--lora_dim", "2")
    assert "holds Python objects, not only tensors: refused" in msg and "weights_only" not in msg
    assert "weights_only" not in capsys.readouterr().err and not Path("/tmp/llmhw_finetune_pwned").exists()
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_cuda_without_cuda_is_one_line(tiny_model_dir, tmp_path, device, capsys):
    with pytest.raises(SystemExit) as e:
        run(tiny_model_dir, tmp_path / "o", "--lora_dim", "2", "--device", device)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--device {device}: no CUDA device is available" in err and "Traceback" not in err


def test_leftovers_of_killed_writes_are_removed_by_the_next_start(earlier, tiny_model_dir):
    leftovers = [earlier / ".adapter.llmhw-k1ll3d.tmp", earlier / "ckpt" / ".ckpt_000006.pt.llmhw-x9.tmp",
                 earlier / ".summary.json.llmhw-a1.tmp", earlier.parent / f".{earlier.name}.llmhw-b2.tmp"]
    for p in leftovers:
        if p.name.startswith(".adapter"):
            shutil.copytree(earlier / "adapter", p)
        else:
            p.write_bytes(b"half a file")
    (earlier / "ckpt" / ".notes.tmp").write_text("not ours: kept")
    run(tiny_model_dir, earlier, "--lora_dim", "2", "--resume")
    assert not any(p.exists() for p in leftovers) and (earlier / "ckpt" / ".notes.tmp").is_file()


def test_a_diverged_run_writes_standard_json(tiny_model_dir, tmp_path):
    s = run(tiny_model_dir, tmp_path / "o", "--lora_dim", "2", "--lr", "1e30", "--grad_clip", "0")
    assert s["final_eval_loss"] is None  # NaN: not a number JSON can hold
    for name in ("summary.json", "config.json", "adapter/lora_config.json"):
        json.loads((tmp_path / "o" / name).read_text(), parse_constant=lambda c: pytest.fail(f"{name}: {c}"))


# -- sweep.py: children tied to the sweep, one writer per run folder, a failed rerun keeps the earlier results ------

HERE = Path(__file__).resolve().parents[1]


def sweep_cmd(*args):
    return [sys.executable, str(HERE / "sweep.py"), *args]


def earlier_sweep(folder: Path) -> None:
    folder.mkdir()
    (folder / fileio.MARKER).write_text(json.dumps({"kind": sweep.SWEEP_KIND}))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_a_killed_sweep_takes_its_running_trainers_with_it(tiny_model_dir, tmp_path):
    proc = subprocess.Popen(sweep_cmd("--ranks", "2", "--out_dir", str(tmp_path / "s"), "--",
                                      *argv(tiny_model_dir, tmp_path)[:2], *FLAGS, "--max_steps", "100000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children, deadline = [], time.time() + 120
    while not children and time.time() < deadline:
        time.sleep(0.2)
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    try:
        assert children, "the sweep started no run"
        proc.kill()  # SIGKILL: the sweep cannot clean up; the kernel tells its children (PR_SET_PDEATHSIG)
        proc.wait()
        deadline = time.time() + 60
        while alive(children[0]) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(children[0]), "the run outlived its sweep"
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_sweep_beside_a_live_trainer_of_its_run_reports_it_in_one_line(tiny_model_dir, tmp_path):
    earlier_sweep(tmp_path / "s")
    hold = (f"import sys, time; sys.path.insert(0, {str(HERE)!r}); import fileio; "
            f"fileio.claim_output_dir({str(tmp_path / 's' / 'r2')!r}, 'finetuning run', ['*']).create(); "
            "print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run(sweep_cmd("--ranks", "2", "--out_dir", str(tmp_path / "s"), "--",
                                     *argv(tiny_model_dir, tmp_path)[:2], *FLAGS), capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in r.stdout.splitlines() if "FAILED" in line]
    assert r.returncode == 1 and len(lines) == 1 and f"in use by PID {holder.pid}" in lines[0], r.stdout
    assert not (tmp_path / "s" / "summary.json").exists()


def test_a_failed_sweep_rerun_keeps_the_earlier_complete_summary_and_logs(tmp_path):
    earlier_sweep(tmp_path / "s")
    earlier = {"summary.json": '{"format": "llmhw-sweep-summary"}\n', "summary.md": "# LoRA rank sweep\n",
               "curves.png": "a figure", "r2.log": "the complete log of r2\n"}
    for name, text in earlier.items():
        (tmp_path / "s" / name).write_text(text)
    r = subprocess.run(sweep_cmd("--ranks", "2", "--redo", "--out_dir", str(tmp_path / "s"), "--",
                                 "--model_name_or_path", str(tmp_path / "no_model"), "--device", "cpu"),
                       capture_output=True, text=True)
    assert r.returncode == 1 and {n: (tmp_path / "s" / n).read_text() for n in earlier} == earlier
    assert "cannot load model" in (tmp_path / "s" / "r2.failed.log").read_text()
    assert [line for line in r.stdout.splitlines() if "FAILED" in line and "cannot load model" in line]


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "inf", "--temperature must be a finite number >= 0"), ("--temperature", "nan", "finite"),
    ("--temperature", "-1", "finite number >= 0"), ("--top_p", "nan", "--top_p must be in (0, 1]"),
    ("--top_p", "0", "--top_p must be in (0, 1]"), ("--top_p", "inf", "(0, 1]"), ("--top_k", "-1", "--top_k must be"),
])
def test_generate_refuses_bad_sampling_values_before_loading_a_model(tmp_path, monkeypatch, flag, value, message):
    def no_loading(*a, **k):
        raise AssertionError("a model was read before the flags were checked")
    monkeypatch.setattr(generate, "model_shape", no_loading)
    monkeypatch.setattr(generate, "load_model", no_loading)
    assert message in user_error(generate.main, ["--base", str(tmp_path / "no_model"), flag, value, "--out",
                                                 str(tmp_path / "g.json")])


def test_generate_replaces_only_its_own_earlier_output(tiny_model_dir, tmp_path):
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    argv = ["--base", str(tiny_model_dir), "--max_new_tokens", "1", "--out"]
    assert "did not write" in user_error(generate.main, argv + [str(mine), "--overwrite"])
    generate.main(argv + [str(tmp_path / "g.json")])
    assert "pass --overwrite" in user_error(generate.main, argv + [str(tmp_path / "g.json")])
    generate.main(argv + [str(tmp_path / "g.json"), "--overwrite"])
    assert mine.read_text() == '{"my": "notes"}'
