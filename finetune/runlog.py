"""The run log ``log.jsonl`` (one JSON object per line, fields: the trainer's README), live logging, its plot.
One identical copy in pretrain/ and finetune/, canonical here. Only the master rank writes. A resumed run first rewrites
the log (atomically) up to the checkpoint's step: lines are never logged twice. NaN/inf are written as null.
Live logging, off by default: ``wandb`` (``WANDB_MODE=offline`` works without a network) or ``tensorboard``
(``<out>/tb``), imported only when asked.
"""
import json
import math
from pathlib import Path

import numpy as np

from fileio import _write_error, atomic_write, atomic_write_text

LIVE_CHOICES = ("none", "wandb", "tensorboard")


class LiveLogError(RuntimeError):
    """The live logger that was asked for cannot start; the message says what to install."""


def read_log(path) -> list[dict]:
    """The records of a log.jsonl, up to a last line cut off by a crash."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


class RunLog:
    def __init__(self, path, master: bool = True, resume_step: int | None = None, live: str = "none",
                 run_name: str | None = None, config: dict | None = None):
        self.path, self.master, self.records = Path(path), master, []
        if not master:
            return
        if resume_step is not None and self.path.exists():
            self.records = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._file = open(self.path, "a", encoding="utf-8")
        self._live, self._close_live = _start_live(live, self.path.parent, run_name, config or {})

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
        self._live(record)

    def close(self) -> None:
        if self.master:
            self._file.close()
            self._close_live()


def _start_live(kind: str, out: Path, run_name: str | None, config: dict):
    """(log, close): log(record) sends the record's numbers to W&B or TensorBoard; both do nothing for "none"."""
    if kind == "none":
        return (lambda record: None), (lambda: None)
    try:
        if kind == "wandb":
            import wandb
            run = wandb.init(project="llmhw", name=run_name, config=config, dir=str(out))
            return (lambda r: run.log({k: v for k, v in r.items() if isinstance(v, (int, float))}, step=r["step"]),
                    run.finish)
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir=str(out / "tb"))
    except ImportError:
        raise LiveLogError(f"--live {kind}: the {kind} package is not installed (pip install {kind})") from None

    def log(record):  # TensorBoard's scalars: numbers but no booleans
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                writer.add_scalar(k, v, record["step"])
    return log, writer.close


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that carry ``key`` (null values, e.g. a diverged loss, are left out)."""
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [s for s, _ in pts], [v for _, v in pts]


def plot_losses(runs: dict[str, list[dict]], path, title: str, keys: tuple[str, ...]) -> None:
    """One panel per logged ``keys`` (the first, the noisy train loss, as a trailing moving average), one colour per
    run; written atomically as PNG."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing to close

    keys = [k for k in keys if any(series(rows, k)[0] for rows in runs.values())]
    fig = Figure(figsize=(6 * len(keys), 4.5))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        smooth = key == keys[0]
        for i, (label, rows) in enumerate(runs.items()):
            s, v = series(rows, key)
            if smooth:  # mean of the last k points (of all points so far at the start)
                k, total, n = max(1, len(v) // 30), np.cumsum([0.0, *v]), np.arange(1, len(v) + 1)
                v = (total[n] - total[np.maximum(n - k, 0)]) / np.minimum(n, k)
            style = dict(lw=1) if smooth else dict(lw=2, marker="o", ms=3)
            ax.plot(s, v, color=f"C{i % 10}", label=label, **style)
        ax.set(xlabel="optimizer step", ylabel=key + (" (moving average)" if smooth else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format="png")
