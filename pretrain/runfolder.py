"""train.py's run folder and the start-up decisions global rank 0 makes for every rank: which data, may the folder
be written, does every rank see it, resume or not (and from which checkpoint).

    --out_dir: log.jsonl, summary.json, loss.png, ckpt_NNNNNN.pt + latest (checkpoint.py), tokenizer/, hf/

The folder rule is fileio.claim_output_dir's (the same for every command that writes a folder): a new or empty
folder, or one holding nothing but a pretraining run's files (``RUN_NAMES``); an earlier run only with --resume or
--overwrite; anything else (a data set, a model, a user's file) is refused in one line and nothing is deleted.
Every check runs before any work, and a refused run leaves no folder behind.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from checkpoint import CheckpointError, load_checkpoint
from config import HERE, PRESETS, ConfigError, TrainConfig
from ddp import DDP, barrier, from_rank0, gather, print0
from fileio import OutputDir, OutputError, claim_output_dir
from models import KIND
from runlog import LiveLogError
from shards import DataError

RUN_KIND = "pretrain-run"
# every entry a run writes (glob patterns): tb/ and wandb/ are --live's, ".rank0-*" the token of check_shared
RUN_NAMES = ("ckpt_*.pt", "latest", "log.jsonl", "summary.json", "loss.png", "hellaswag.json", "tokenizer", "hf",
             "tb", "wandb", ".rank0-*")
# bad input or settings: one line ("error: ...") on every rank, exit status 2, never a traceback
USER_ERRORS = (DataError, ConfigError, CheckpointError, OutputError, LiveLogError, FileNotFoundError, ValueError)


def data_folder(preset: str, tc: TrainConfig, distributed: bool) -> Path:
    """--data, else the preset's data set. One process prepares it on first use (no process group can time out on
    it); under torchrun an unprepared data set is one line naming the prepare.py command (preparing FineWeb-Edu
    takes hours, far beyond any collective's timeout)."""
    if tc.data:
        return Path(tc.data)
    path = HERE / "output" / "data" / PRESETS[preset]["data_name"]
    if (path / "meta.json").is_file():
        return path
    command = prepare_command(preset, path)
    if distributed:
        raise ConfigError(f"{path} is not prepared: prepare it first, once, without torchrun ({command}), then "
                          "start this command again")
    print0(f"preparing {path} (first use of preset {preset}; the same as {command})")
    import prepare

    prepare.prepare(path, data_dir=tc.data_dir, **PRESETS[preset]["prepare"])
    return path


def prepare_command(preset: str, path: Path) -> str:
    """The prepare.py command line that makes the preset's data set."""
    args = []
    for key, value in PRESETS[preset]["prepare"].items():
        args += ["--input" if key == "inputs" else f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    return " ".join(["python pretrain/prepare.py", *args, "--out_dir", str(path)])


def claim(tc: TrainConfig, data: Path) -> OutputDir:
    """(rank 0) The run folder checked by fileio's rule, before anything is created (OutputDir.create makes it)."""
    return claim_output_dir(tc.out_dir, RUN_KIND, RUN_NAMES, overwrite=tc.overwrite, resume=tc.resume,
                            inputs=[data])


def check_shared(out: Path, ddp: DDP) -> None:
    """Every rank must see the files rank 0 writes into out_dir (a checkpoint on node 0 is read on all nodes)."""
    if not ddp.enabled:
        return
    token = out / f".rank0-{from_rank0(uuid.uuid4().hex, ddp)}"
    if ddp.master:
        token.write_text("rank 0 was here\n")
    barrier(ddp)
    blind = [r for r, seen in enumerate(gather(token.is_file(), ddp)) if not seen]
    barrier(ddp)
    if ddp.master:
        token.unlink()
    if blind:
        raise ConfigError(f"--out_dir {out} is not shared: rank(s) {blind} do not see the files rank 0 writes there "
                          "(use a folder on a shared file system)")


def plan_resume(out: OutputDir, tc: TrainConfig) -> str | None:
    """(rank 0) The checkpoint file to resume from, checked now (a corrupt one stops every rank at once); None for
    a fresh run, whose --overwrite clears the earlier run only now that every input was checked."""
    if tc.resume and (out.path / "latest").exists():
        return load_checkpoint(out.path, KIND)["path"]
    if tc.resume:
        print0(f"--resume: no checkpoint in {out.path} yet, starting fresh")
    out.clear()  # --overwrite (claim refused an earlier run without it); --resume without a checkpoint: leftovers
    return None
