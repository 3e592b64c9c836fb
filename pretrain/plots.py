"""Learning-curve pictures (matplotlib, Agg backend) from log.jsonl rows, for one run or several.

Same shape as finetune/plots.py: ``plot_curves(runs, path, title)`` over runlog's ``series`` / ``smooth``; pretraining's rows
name the losses ``loss`` (train) and ``val_loss``, and a HellaSwag panel is added when the rows have it.
"""
from __future__ import annotations

from pathlib import Path

from fileio import atomic_write
from runlog import series, smooth


def plot_curves(runs: dict[str, list[dict]], path: str | Path, title: str) -> Path:
    """Train loss (thin, moving average) and val loss (dots) per run, HellaSwag acc_norm if logged; atomic."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_hs = any(series(rows, "hellaswag_acc_norm")[0] for rows in runs.values())
    fig, axes = plt.subplots(1, 2 if with_hs else 1, figsize=(12 if with_hs else 7, 4.5), squeeze=False)
    loss_ax = axes[0, 0]
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        s, v = series(rows, "loss")
        if v:
            loss_ax.plot(s, smooth(v, max(1, len(v) // 50)), color=color, lw=1, label=f"{label} train")
        s, v = series(rows, "val_loss")
        if v:
            loss_ax.plot(s, v, color=color, lw=2, marker="o", ms=3, label=f"{label} val")
        s, v = series(rows, "hellaswag_acc_norm")
        if v:
            axes[0, 1].plot(s, v, color=color, marker="o", label=label)
    loss_ax.set(xlabel="optimizer step", ylabel="cross-entropy loss (nats)")
    if with_hs:
        axes[0, 1].set(xlabel="optimizer step", ylabel="HellaSwag acc_norm")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
