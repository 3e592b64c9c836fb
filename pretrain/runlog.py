"""The run log: ``log.jsonl`` (one JSON object per line, appended as training goes), live logging, and its plot.

One identical copy in pretrain/ and finetune/ (checked by tests/test_layout.py; canonical here). The fields of a line
are the trainer's (its README states them).
- Only the master rank writes. A resumed run first rewrites the log (atomically) keeping the lines up to the
  checkpoint's step, so a crash after a checkpoint never leaves lines twice. NaN/inf are written as null.
- Live logging, off by default: ``wandb`` (``WANDB_MODE=offline`` works without a network) or ``tensorboard`` (event
  files in ``<out>/tb``); the package is imported only when asked, a missing one is one line saying what to install.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from fileio import _write_error, atomic_write, atomic_write_text

LIVE_CHOICES = ("none", "wandb", "tensorboard")


class LiveLogError(RuntimeError):
    """The live logger that was asked for cannot start; the message says what to install or set."""


def read_log(path: str | Path) -> list[dict]:
    """The records of a log.jsonl; a last line cut off by a crash is ignored."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    return rows


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that carry ``key`` (null values, e.g. a diverged loss, are left out)."""
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def smooth(values: list[float], k: int) -> list[float]:
    """Trailing moving average over k points (raw per-step training loss is noisy)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


class RunLog:
    def __init__(self, path: str | Path, master: bool = True, resume_step: int | None = None,
                 live: str = "none", project: str = "llmhw", run_name: str | None = None,
                 config: dict | None = None):
        self.path, self.master, self.records, self._live = Path(path), master, [], None
        if not master:
            return
        if resume_step is not None and self.path.exists():
            self.records = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._file = open(self.path, "a", encoding="utf-8")
        self._live = _start_live(live, self.path.parent, project, run_name, config or {})

    def write(self, **record) -> None:
        if not self.master:
            return
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self.records.append(record)
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as e:  # appended in place (not atomic): a full disk is still one line with the MiB free
            raise (_write_error(self.path, e) or e) from None
        if self._live is not None:
            self._live(record)

    def rows(self, key: str) -> list[dict]:
        return [r for r in self.records if r.get(key) is not None]

    def close(self) -> None:
        if self.master:
            self._file.close()
            if self._live is not None:
                self._live(None)


def _start_live(kind: str, out: Path, project: str, run_name: str | None, config: dict):
    """A function record -> None that forwards numbers to W&B or TensorBoard (None closes it); None if off."""
    if kind in (None, "none"):
        return None
    if kind == "wandb":
        try:
            import wandb
        except ImportError:
            raise LiveLogError("--live wandb: the wandb package is not installed (pip install wandb)") from None
        run = wandb.init(project=project, name=run_name, config=config, dir=str(out))

        def forward(record):
            if record is None:
                run.finish()
            else:
                run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))
        return forward
    if kind == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LiveLogError("--live tensorboard: the tensorboard package is not installed "
                               "(pip install tensorboard)") from None
        writer = SummaryWriter(log_dir=str(out / "tb"))

        def forward(record):
            if record is None:
                writer.close()
                return
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.add_scalar(k, v, record.get("step", 0))
        return forward
    raise LiveLogError(f"--live must be one of {', '.join(LIVE_CHOICES)}, got {kind!r}")


def plot_losses(runs: dict[str, list[dict]], path: str | Path, title: str, keys: tuple[str, ...]) -> Path:
    """One panel per logged ``keys`` (the first, the noisy train loss, as a moving average), one colour per run;
    written atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(series(rows, k)[0] for rows in runs.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (label, rows) in enumerate(runs.items()):
            s, v = series(rows, key)
            if key == keys[0]:
                ax.plot(s, smooth(v, max(1, len(v) // 30)), color=f"C{i % 10}", lw=1, label=label)
            else:
                ax.plot(s, v, color=f"C{i % 10}", lw=2, marker="o", ms=3, label=label)
        ax.set(xlabel="optimizer step", ylabel=key + (" (moving average)" if key == keys[0] else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
