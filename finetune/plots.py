"""Learning-curve pictures (matplotlib, Agg backend) from log.jsonl rows, for one run or a whole sweep.

Rows come from runlog.read_log; their fields are stated in finetune/README.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from runlog import series, smooth


def plot_curves(runs: dict[str, list[dict]], path: str | Path, title: str) -> Path:
    """Train (thin) and eval (thick, dots) loss of every run, one colour per run; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        s, v = series(rows, "train_loss")
        if v:
            axes[0].plot(s, smooth(v, max(1, len(v) // 20)), color=color, lw=1, label=label)
        s, v = series(rows, "eval_loss")
        if v:
            axes[1].plot(s, v, color=color, lw=2, marker="o", ms=3, label=label)
    for ax, name in zip(axes, ("train loss (moving average)", "eval loss")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
