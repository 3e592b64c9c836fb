"""HellaSwag (Zellers et al. 2019) completion-style evaluation: acc and acc_norm, as build-nanogpt / lm-eval do it.

Each example is a context and 4 endings; the model scores each ending by the cross-entropy of its tokens given the
context (ending encoded with a leading space). acc_norm picks the ending with the lowest *mean* token loss, acc the
lowest *total* loss. Rows longer than the model's block_size keep their last block_size tokens.

Data (JSONL with `ctx`, `endings`, `label`) comes from the data directory: `hellaswag/hellaswag_val.jsonl` (the full
validation set) when present, else `hellaswag/hellaswag_val_activitynet.jsonl` (the offline ActivityNet subset, whose
scores are not comparable to published full-set numbers).

    python pretrain/hellaswag.py --model pretrain/output/tiny-cpu/hf --limit 200
    python pretrain/hellaswag.py --model pretrain/output/tiny-cpu/ckpt.pt
    python pretrain/hellaswag.py --model DIR --hf      # score with transformers' AutoModelForCausalLM instead
Prints one JSON object and writes it to --out (default: hellaswag.json beside the model).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

import datadir
import text_tokenizer

DATA_FILES = ("hellaswag/hellaswag_val.jsonl", "hellaswag/hellaswag_val_activitynet.jsonl")


def find_data(data_dir=None) -> Path:
    """The first HellaSwag file present locally; else (online) download the full set, (offline) a clear error."""
    for name in DATA_FILES:
        try:
            return datadir.find(name, data_dir, download=False)
        except datadir.DataFileNotFound:
            pass
    return datadir.find(DATA_FILES[0], data_dir)


def load_examples(path: Path, limit: int | None = None) -> list[dict]:
    """The first `limit` examples (all when None or negative), each checked for ctx, 4 endings and a label."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and 0 <= limit <= len(examples):
                break
            try:
                ex = json.loads(line)
                ok = (isinstance(ex["ctx"], str) and len(ex["endings"]) == 4 and int(ex["label"]) in range(4))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{path}:{lineno}: not a HellaSwag example (needs ctx, 4 endings, label 0-3)")
            examples.append(ex)
    return examples


def render(tok, example: dict, block_size: int):
    """(tokens (4, L), mask (4, L), label): context + each ending, mask = 1 on ending tokens, right-padded."""
    ctx = tok.encode(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        end = tok.encode(" " + ending)
        row, mask = (ctx + end)[-block_size:], ([0] * len(ctx) + [1] * len(end))[-block_size:]
        rows.append(row)
        masks.append(mask)
    L = max(len(r) for r in rows)
    tokens = torch.zeros(4, L, dtype=torch.long)
    mask = torch.zeros(4, L, dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks)):
        tokens[i, :len(r)], mask[i, :len(m)] = torch.tensor(r), torch.tensor(m)
    return tokens, mask, int(example["label"])


def score(logits, tokens, mask) -> tuple[int, int]:
    """(pred by total loss, pred by mean loss) from logits (4, L, V) of the rendered rows."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    losses = losses.view(4, -1) * mask[:, 1:]  # only the ending's tokens count; each is predicted from the left
    total = losses.sum(dim=1)
    return int(total.argmin()), int((total / mask[:, 1:].sum(dim=1)).argmin())


@torch.no_grad()
def evaluate(logits_fn, tok, examples, block_size: int, device="cpu", rank: int = 0, world_size: int = 1,
             autocast=nullcontext) -> dict:
    """Score examples[rank::world_size]; logits_fn maps tokens (B, L) to logits (B, L, V). Returns counts (sum
    them over ranks) and this rank's per-example predictions."""
    n = correct = correct_norm = 0
    preds = []
    for ex in examples[rank::world_size]:
        tokens, mask, label = render(tok, ex, block_size)
        tokens, mask = tokens.to(device), mask.to(device)
        with autocast():
            logits = logits_fn(tokens)
        pred, pred_norm = score(logits, tokens, mask)
        n, correct, correct_norm = n + 1, correct + (pred == label), correct_norm + (pred_norm == label)
        preds.append(pred_norm)
    return {"n": n, "correct": correct, "correct_norm": correct_norm, "preds_norm": preds}


def main(argv=None):
    try:
        return run(argv)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line naming it, no traceback
        raise SystemExit(f"error: {e}") from None


def run(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model directory, train.py checkpoint (ckpt.pt) or hub name")
    p.add_argument("--limit", type=int, default=-1, help="first N examples only (default: all)")
    p.add_argument("--data_dir", help="data directory (default $LLMHW_DATA_DIR)")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the model's own tokenizer files, else gpt2)")
    p.add_argument("--hf", action="store_true", help="score with transformers.AutoModelForCausalLM, not our GPT")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="JSON output (default: hellaswag.json beside the model)")
    args = p.parse_args(argv)
    from modeling_gpt2 import load_model

    model_path = Path(args.model)
    tok_dir = model_path.parent / "tokenizer" if model_path.is_file() else model_path
    spec = args.tokenizer or (tok_dir if tok_dir.is_dir() and _has_tokenizer(tok_dir) else "gpt2")
    tok = text_tokenizer.load(spec, args.data_dir)
    device = torch.device(args.device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    if args.hf:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(args.model).to(device).eval()
        block_size, logits_fn = model.config.n_positions, lambda x: model(x).logits
    else:
        model = load_model(args.model).to(device).eval()
        block_size, logits_fn = model.config.block_size, lambda x: model(x)[0]
    data = find_data(args.data_dir)
    examples = load_examples(data, args.limit)
    t0 = time.perf_counter()
    r = evaluate(logits_fn, tok, examples, block_size, device, autocast=autocast)
    result = {"model": str(args.model), "data": str(data), "n": r["n"], "acc": r["correct"] / max(1, r["n"]),
              "acc_norm": r["correct_norm"] / max(1, r["n"]), "seconds": time.perf_counter() - t0,
              "scorer": "transformers" if args.hf else "ours"}
    # --out is always written (its folder made); the default, beside the model, only for a local model
    out = Path(args.out) if args.out else (model_path.parent if model_path.is_file() else model_path) / "hellaswag.json"
    if args.out or out.parent.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, out)
    print(json.dumps(result))
    return result


def _has_tokenizer(folder: Path) -> bool:
    try:
        text_tokenizer.load(folder)
        return True
    except (FileNotFoundError, ValueError):
        return False


if __name__ == "__main__":
    main()
