"""Hand-made finetuning logs, as finetune/train.py writes log.jsonl."""


def log(train: list[float], evals: list[float], every: int) -> list[dict]:
    """A train line per step 1..N and an eval line at step 0, every, 2 * every, ..."""
    rows = [{"step": 0, "eval_loss": evals[0]}]
    for step, loss in enumerate(train, 1):
        rows.append({"step": step, "train_loss": loss, "lr": 1e-3})
        if step % every == 0:
            rows.append({"step": step, "eval_loss": evals[step // every]})
    return rows
