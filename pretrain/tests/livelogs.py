"""Reading back what --live wrote, for test_live.py: TensorBoard's event file (EventAccumulator) and an offline
W&B run's .wandb file, and what each should hold given the run's log.jsonl.

One identical copy lives in pretrain/tests/ and finetune/tests/ (tests/test_layout.py checks they stay identical;
the canonical copy is finetune/tests/livelogs.py)."""
import json
import struct

import numpy as np


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


def expected_tensorboard(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per tag, (step, value) of every record that has it: TensorBoard keeps float32 and no booleans."""
    want: dict[str, list] = {}
    for r in rows:
        for k, v in numbers(r, bools=False).items():
            if k != "step":
                want.setdefault(k, []).append((r["step"], float(np.float32(v))))
    return want


def expected_wandb(rows: list[dict]) -> list[dict]:
    """W&B's history: the numbers (booleans included) of each step's records merged into one row."""
    return [numbers(r, bools=True) for r in by_step(rows)]


def wandb_offline(monkeypatch, tmp_path) -> None:
    """W&B offline with every folder it writes under tmp_path."""
    for var, sub in (("WANDB_DIR", "wandb"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def read_wandb_run(out) -> list[dict]:
    """The history rows (W&B's own "_" keys left out) of the one offline run under the run folder ``out``."""
    (run_file,) = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    return [{k: v for k, v in h.items() if not k.startswith("_")} for h in wandb_history(run_file)]


def assert_tensorboard_holds_the_log(out, keys: set) -> None:
    """The run folder's tb/ event file holds every number of its log.jsonl, and the tags ``keys`` among them."""
    got = tensorboard_scalars(out / "tb")
    assert got == expected_tensorboard(log_rows(out)) and keys <= set(got), (sorted(got), keys)


def assert_wandb_holds_the_log(out, eval_key: str) -> None:
    """The run folder's offline W&B run holds every number of its log.jsonl, evaluations (``eval_key``) included."""
    history = read_wandb_run(out)
    assert history == expected_wandb(log_rows(out)) and any(eval_key in h for h in history)
