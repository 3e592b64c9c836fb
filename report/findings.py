"""The homework's finetuning findings (its report, sections 4.2-4.3), decided from the run's logs: pure functions of
numbers returning the deciding numbers plus ``reproduced``; sections.py turns them into sentences."""
import math
import statistics

RISE_TOL = 0.01       # nats: a rise of eval loss above its minimum smaller than this is flat, not a turn
TREND_WINDOW = 0.2    # fraction of the run's steps averaged at each end of a train-loss trend
ALIKE_FACTOR = 2.0    # ranks are alike if their spread is at most this many times the two-seed spread
MIN_PAIRS = 4         # instructions whose lengths are compared, at least (fewer decide nothing)


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the log rows that carry ``key``, in log order."""
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
    return [s for s, _ in pts], [v for _, v in pts]


def window_mean(steps: list[int], values: list[float], lo: float, hi: float) -> float:
    """Mean of the values whose step lies in [lo, hi] (the nearest value if none does)."""
    inside = [v for s, v in zip(steps, values) if lo <= s <= hi]
    nearest = min(zip(steps, values), key=lambda sv: abs(sv[0] - (lo + hi) / 2))[1]
    return statistics.fmean(inside) if inside else nearest


def train_trend(rows: list[dict], start: int) -> dict:
    """Train loss averaged over a window at ``start`` and over the last window of the run: is it still falling?"""
    steps, loss = series(rows, "train_loss")
    last, width = steps[-1], max(1, round(TREND_WINDOW * steps[-1]))
    at_start = window_mean(steps, loss, start - width / 2, start + width / 2)
    at_end = window_mean(steps, loss, last - width, last)
    return {"train_at_min": at_start, "train_final": at_end, "train_change": at_end - at_start,
            "train_falling": at_end < at_start}


def eval_shape(rows: list[dict]) -> dict:
    """Where the eval curve has its minimum and how far it ends above it."""
    steps, ev = series(rows, "eval_loss")
    i = min(range(len(ev)), key=ev.__getitem__)
    return {"eval_first": ev[0], "min_step": steps[i], "min_eval": ev[i], "final_eval": ev[-1],
            "final_step": steps[-1], "rise": ev[-1] - ev[i], "n_evals": len(ev)}


def full_overfits_verdict(rows: list[dict]) -> dict:
    """Reproduced if eval loss has its minimum before the last evaluation, ends more than RISE_TOL above it, and
    train loss after the minimum keeps falling."""
    shape = eval_shape(rows)
    trend = train_trend(rows, shape["min_step"])
    turned = shape["min_step"] < shape["final_step"] and shape["rise"] > RISE_TOL
    return {**shape, **trend, "turned": turned, "reproduced": turned and trend["train_falling"]}


def lora_follows_verdict(runs: dict[str, list[dict]]) -> dict:
    """Reproduced if, for every LoRA run, eval loss ends below where it started, within RISE_TOL of its minimum,
    and train loss fell over the run."""
    per_run = {}
    for name, rows in runs.items():
        shape = eval_shape(rows)
        steps, _ = series(rows, "train_loss")
        trend = train_trend(rows, steps[0])
        follows = shape["final_eval"] < shape["eval_first"] and shape["rise"] <= RISE_TOL and trend["train_falling"]
        per_run[name] = {**shape, **trend, "follows": follows}
    failing = sorted(name for name, v in per_run.items() if not v["follows"])
    return {"runs": per_run, "failing": failing, "max_rise": max(v["rise"] for v in per_run.values()),
            "reproduced": not failing}


def ranks_alike_verdict(final_by_rank: dict[int, float], seed_pair: tuple[float, float]) -> dict:
    """Reproduced if the spread of final eval losses across ranks is at most ALIKE_FACTOR x the spread between two
    seeds of one rank (seed-to-seed noise is the yardstick; ``relative_spread`` says how much the spread matters)."""
    finals = list(final_by_rank.values())
    spread, seed_spread, mean = max(finals) - min(finals), abs(seed_pair[0] - seed_pair[1]), statistics.fmean(finals)
    return {"ranks": sorted(final_by_rank), "spread": spread, "seed_spread": seed_spread,
            "bound": ALIKE_FACTOR * seed_spread, "mean": mean, "relative_spread": spread / mean,
            "best_rank": min(final_by_rank, key=final_by_rank.get),
            "worst_rank": max(final_by_rank, key=final_by_rank.get),
            "ratio": spread / seed_spread if seed_spread > 0 else math.inf,
            "reproduced": spread <= ALIKE_FACTOR * seed_spread + 1e-9}  # 1e-9: float rounding of loss differences


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def lora_longer_verdict(lengths: dict[str, list[int]], lora: str, full: str, base: str,
                        ended: dict[str, list[bool]] | None = None) -> dict:
    """Reproduced if LoRA's answers are longer than full finetuning's by more than two standard errors of the paired
    difference. With ``ended`` (per model, which answers ended by themselves), only instructions both answered to the
    end count (a cut answer's length is the limit's); fewer than MIN_PAIRS such pairs decide nothing."""
    stats = {name: mean_se(v) for name, v in lengths.items()}
    keep = range(len(lengths[lora]))
    if ended is not None:
        keep = [i for i in keep if ended[lora][i] and ended[full][i]]
    diffs = [lengths[lora][i] - lengths[full][i] for i in keep]
    d, d_se = mean_se(diffs) if diffs else (math.nan, math.nan)
    decided = len(diffs) >= MIN_PAIRS
    return {"mean": {k: m for k, (m, _) in stats.items()}, "se": {k: s for k, (_, s) in stats.items()},
            "n": len(diffs), "n_all": len(lengths[lora]), "diff": d, "diff_se": d_se, "base": base, "lora": lora,
            "full": full, "only_ended": ended is not None,
            "ended": {k: sum(v) for k, v in ended.items()} if ended is not None else None,
            "mean_ended": ({k: mean_se([lengths[k][i] for i in keep])[0] for k in (lora, full)} if diffs else None),
            "decided": decided, "reproduced": decided and d > 2 * d_se and d > 0}


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n independent items."""
    return math.sqrt(p * (1 - p) / n) if n > 0 else math.nan
