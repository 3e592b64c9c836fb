"""The report's figures, drawn from log.jsonl rows: pretraining loss, all finetuning runs, full finetuning alone.

Each function takes rows (dicts) and a path, writes one PNG there and returns nothing; build_report.py writes them into
a folder built aside (fileio.atomic_dir) so the old figures stay until the new set is complete.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from findings import series  # noqa: E402


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_pretrain(rows: list[dict], path: Path, title: str, baselines: dict | None = None) -> None:
    """Train and validation loss against step; the count baselines (nats per token on the same val tokens) as
    dashed lines, so what the model learned beyond counting shows at a glance."""
    fig, ax = plt.subplots(figsize=(7, 4))
    s, v = series(rows, "loss")
    ax.plot(s, v, lw=0.8, alpha=0.6, label="train")
    s, v = series(rows, "val_loss")
    ax.plot(s, v, "o-", label="validation")
    for (name, what), color in zip((("unigram", "unigram counts"), ("bigram", "bigram counts (Kneser-Ney)")),
                                   ("tab:gray", "tab:green")):
        if baselines and name in baselines:
            ax.axhline(baselines[name]["nats_per_token"], ls="--", color=color, lw=1.2,
                       label=f"{what}: {baselines[name]['nats_per_token']:.2f}")
    ax.set(xlabel="step", ylabel="cross-entropy loss (nats)", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, path)


def smooth(values: list[float], width: int) -> list[float]:
    """Trailing mean over ``width`` points (per-step train loss jumps with each batch's examples)."""
    return [sum(values[max(0, i - width + 1):i + 1]) / len(values[max(0, i - width + 1):i + 1])
            for i in range(len(values))]


def run_style(label: str, k: int, n: int) -> dict:
    """Full finetuning in red, LoRA ranks along a colour map, a second-seed run dashed."""
    if label.startswith("full"):
        return dict(color="crimson", lw=2)
    style = dict(color=plt.get_cmap("viridis")(k / max(1, n - 1)))
    if "seed" in label:
        style["ls"] = "--"
    return style


def plot_sweep(runs: dict[str, list[dict]], path: Path) -> None:
    """Train (left) and eval (right) loss of every run, one colour per run."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for k, (label, rows) in enumerate(runs.items()):
        style = run_style(label, k, len(runs))
        s, v = series(rows, "train_loss")
        a.plot(s, smooth(v, 8), label=label, alpha=0.8, **{"lw": 1.2, **style})
        s, v = series(rows, "eval_loss")
        b.plot(s, v, marker="o", ms=3, label=label, **{"ls": "-", **style})
    a.set(title="train loss (mean of the last 8 steps)", xlabel="step", ylabel="loss (nats)")
    b.set(title="eval loss", xlabel="step")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.suptitle("LoRA ranks vs full finetuning on one fixed Alpaca subset")
    save(fig, path)


def plot_full(rows: list[dict], path: Path, min_step: int, min_eval: float) -> None:
    """The homework's Figure 6: full finetuning's train and eval loss against step, the eval minimum marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    s, v = series(rows, "train_loss")
    ax.plot(s, v, lw=0.6, alpha=0.35, color="tab:blue")
    ax.plot(s, smooth(v, 8), lw=1.5, color="tab:blue", label="train loss (mean of the last 8 steps)")
    s, v = series(rows, "eval_loss")
    ax.plot(s, v, "o-", color="crimson", label="eval loss")
    ax.plot([min_step], [min_eval], "k*", ms=12, label=f"eval minimum (step {min_step})")
    ax.set(xlabel="step", ylabel="loss (nats)", title="Full finetuning")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, path)
