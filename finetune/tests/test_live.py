"""--live tensorboard and --live wandb for real (both packages are in requirements-test.txt): a tiny run's event file
(read back with TensorBoard's EventAccumulator) and its offline W&B run (the run's .wandb file read back record by
record) hold exactly what log.jsonl holds; live logging is off by default and a missing package is one line."""
import json
import struct
import sys

import numpy as np
import pytest

import train


def run_args(model_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(out), "--max_examples", "48",
            "--eval_ratio", "0.25", "--train_batch_size", "4", "--eval_batch_size", "4", "--max_length", "96",
            "--max_steps", "3", "--eval_interval", "2", "--lr", "1e-2", "--lora_dim", "2", *extra]


def log_rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def numbers(row: dict, bools: bool) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and (bools or not isinstance(v, bool))}


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_history(run_file) -> list[dict]:
    """The history rows of an offline W&B run, read from its .wandb file: a LevelDB-style log (7-byte file header
    ':W&B' + magic 0xBEE1 + version 0, then 32 KiB blocks of records with a 7-byte header: crc32, length, type
    1 full / 2 first / 3 middle / 4 last) of wandb_internal_pb2.Record protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), data[:7]
    pos, pending, rows = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # no room for a record header: the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    return rows


def by_step(rows: list[dict]) -> list[dict]:
    """Records of one step merged into one row, in step order (W&B's history rows with explicit steps)."""
    merged: dict[int, dict] = {}
    for r in rows:
        merged.setdefault(r["step"], {}).update(r)
    return [merged[s] for s in sorted(merged)]


def test_tensorboard_event_file_holds_the_log(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train.main(run_args(tiny_model_dir, out, "--live", "tensorboard"))
    rows = log_rows(out)
    want: dict[str, list] = {}
    for r in rows:
        for k, v in numbers(r, bools=False).items():
            if k != "step":
                want.setdefault(k, []).append((r["step"], float(np.float32(v))))  # TensorBoard stores float32
    got = tensorboard_scalars(out / "tb")
    assert got == want and {"train_loss", "eval_loss"} <= set(got)


def test_offline_wandb_run_holds_the_log(tiny_model_dir, tmp_path, monkeypatch):
    for var, sub in (("WANDB_DIR", "wandb"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train.main(run_args(tiny_model_dir, out, "--live", "wandb"))
    (run_file,) = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    history = [{k: v for k, v in h.items() if not k.startswith("_")} for h in wandb_history(run_file)]
    want = [numbers(r, bools=True) for r in by_step(log_rows(out))]
    assert history == want and any("eval_loss" in h for h in history)


def test_live_logging_is_off_by_default_and_a_missing_package_is_one_line(tiny_model_dir, tmp_path, monkeypatch):
    for name in ("wandb", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    train.main(run_args(tiny_model_dir, tmp_path / "off", "--max_steps", "1"))  # would fail if it imported one
    assert not (tmp_path / "off" / "tb").exists() and not (tmp_path / "off" / "wandb").exists()
    for live, package in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        with pytest.raises(SystemExit) as e:
            train.main(run_args(tiny_model_dir, tmp_path / live, "--live", live))
        assert str(e.value) == f"error: --live {live}: the {package} package is not installed (pip install {package})"
