"""HellaSwag (Zellers et al. 2019), completion style: acc and the two acc_norm conventions in use (CONVENTIONS;
README.md, "HellaSwag"), each with its standard error, written to --out (default: hellaswag.json beside the model).

    python pretrain/hellaswag.py --model pretrain/output/tiny-cpu --limit 200        # the run's latest checkpoint
    python pretrain/hellaswag.py --model pretrain/output/tiny-cpu/ckpt_000300.pt    # any step checkpoint
    python pretrain/hellaswag.py --model pretrain/output/tiny-cpu/hf [--hf]         # our GPT, or transformers'

The model reads context + " " + each ending (build-nanogpt), without lm-eval's other rendering. Offline data is the
ActivityNet subset (used when the full hellaswag_val.jsonl is absent): not comparable to published full-set numbers.
"""
import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import fileio
from ddp import device_problem
from fileio import OutputError, atomic_write_json, claim_output_file
from modeling_gpt2 import HUB_MODELS, autocast_for
from prepare import DataError  # also a row that cannot be scored: the message names file, line and field

DATA_FILES = ("hellaswag/hellaswag_val.jsonl", "hellaswag/hellaswag_val_activitynet.jsonl")
JSON_KIND = "pretrain-hellaswag"
# How each reported accuracy picks an ending (written into the output JSON so that the figures say what they are).
CONVENTIONS = {
    "acc": "highest total log-likelihood of the ending's tokens (lm-eval acc)",
    "acc_norm_per_token": "highest mean log-likelihood per ending token (build-nanogpt acc_norm)",
    "acc_norm_per_char": "highest log-likelihood / characters of the ending (lm-eval-harness acc_norm)",
}
COUNTS = {"acc": "correct", "acc_norm_per_token": "correct_norm", "acc_norm_per_char": "correct_norm_char"}


def find_data(data_dir=None) -> Path:
    """The first HellaSwag file present locally; else (online) download the full set, (offline) a clear error."""
    for name in DATA_FILES:
        with contextlib.suppress(fileio.DataFileNotFound):
            return fileio.find(name, data_dir, download=False)
    return fileio.find(DATA_FILES[0], data_dir)


def check_row(row, where: str) -> dict:
    """The row if it is a scorable example (ctx text, 4 ending texts, label 0-3), else DataError naming the field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: not a JSON object")
    if missing := [name for name in ("ctx", "endings", "label") if name not in row]:
        raise DataError(f"{where}: field '{missing[0]}' is missing")
    ctx, endings, label = row["ctx"], row["endings"], row["label"]
    if not isinstance(ctx, str):
        raise DataError(f"{where}: field 'ctx' is {type(ctx).__name__}, not text")
    if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) and e for e in endings):
        raise DataError(f"{where}: field 'endings' must be a list of 4 non-empty texts, got {str(endings)[:60]}")
    if isinstance(label, str) and label.strip().isdigit():  # the HF dataset stores labels as text
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or label not in range(4):
        raise DataError(f"{where}: field 'label' is {label!r}, not one of 0, 1, 2, 3")
    return {**row, "label": label}


def load_examples(path: Path, limit: int | None = None) -> list[dict]:
    """The first `limit` examples (all when None or negative), each checked; a bad row is one DataError line."""
    examples = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and 0 <= limit <= len(examples):
                break
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not JSON ({e.msg} at column {e.colno})") from None
            examples.append(check_row(row, f"{path}:{lineno}"))
    return examples


def render(tok, example: dict, block_size: int):
    """(tokens (4, L), mask (4, L), label): context + each ending, mask = 1 on ending tokens, right-padded; a row
    longer than block_size keeps its last block_size tokens."""
    ctx, rows, masks = tok.encode(example["ctx"]), [], []
    for ending in example["endings"]:
        end = tok.encode(" " + ending)  # the space belongs to the ending (GPT-2 BPE merges it into the next word)
        rows.append(torch.tensor((ctx + end)[-block_size:]))
        masks.append(torch.tensor(([0] * len(ctx) + [1] * len(end))[-block_size:]))
    pad = torch.nn.utils.rnn.pad_sequence
    return pad(rows, batch_first=True), pad(masks, batch_first=True), int(example["label"])


def score(logits, tokens, mask, n_chars) -> dict[str, int]:
    """The ending each convention picks (CONVENTIONS), from logits (4, L, V) of the rendered rows and the
    endings' lengths in characters n_chars (4,)."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    losses = losses.view(4, -1) * mask[:, 1:]  # (4, L-1): only the ending's tokens count, each predicted from the left
    total = losses.sum(dim=1).double()  # (4,) = - log-likelihood of each ending
    n_tokens = mask[:, 1:].sum(dim=1)
    n_chars = torch.as_tensor(n_chars, dtype=torch.float64, device=total.device)
    # argmin of a loss = argmax of the log-likelihood; both take the first of equal values, as np.argmax does
    return {"acc": int(total.argmin()), "acc_norm_per_token": int((total / n_tokens).argmin()),
            "acc_norm_per_char": int((total / n_chars).argmin())}


@torch.no_grad()
def evaluate(logits_fn, tok, examples, block_size: int, device="cpu", rank: int = 0, world_size: int = 1,
             autocast=contextlib.nullcontext, progress: bool = False) -> dict:
    """Score examples[rank::world_size]; logits_fn maps tokens (B, L) to logits (B, L, V). Returns counts (sum
    them over ranks): n, correct (acc), correct_norm (per token), correct_norm_char (per character); and this
    rank's picks per example by the per-token and per-character conventions (preds_norm, preds_norm_char)."""
    counts = dict.fromkeys(COUNTS.values(), 0) | {"n": 0, "preds_norm": [], "preds_norm_char": []}
    mine = examples[rank::world_size]
    if progress:
        from tqdm import tqdm
        mine = tqdm(mine, desc="hellaswag", unit="ex")
    for ex in mine:
        tokens, mask, label = (t.to(device) if torch.is_tensor(t) else t for t in render(tok, ex, block_size))
        with autocast():
            logits = logits_fn(tokens)
        picks = score(logits, tokens, mask, [len(e) for e in ex["endings"]])
        counts["n"] += 1
        for convention, key in COUNTS.items():
            counts[key] += int(picks[convention] == label)
        counts["preds_norm"].append(picks["acc_norm_per_token"])
        counts["preds_norm_char"].append(picks["acc_norm_per_char"])
    return counts


def accuracies(counts: dict) -> dict:
    """acc, acc_norm_per_token, acc_norm_per_char and their standard errors sqrt(p (1 - p) / n) from counts."""
    n, out = counts["n"], {"n": counts["n"]}
    for name, key in COUNTS.items():
        p = counts[key] / max(1, n)
        out[name], out[f"{name}_stderr"] = p, math.sqrt(p * (1 - p) / max(1, n))
    return out


def load_scorer(args):
    """(logits_fn, tokenizer, block_size) for --model: our GPT (checkpoint or GPT-2 HF folder) or, with --hf,
    transformers' AutoModelForCausalLM with our tokenizer of the folder."""
    import sample  # the one loader of models + tokenizers for the command-line tools

    if not args.hf:
        model, tok = sample.load_ours(args.model, args.device, args.tokenizer or "", args.data_dir)
        return (lambda x: model(x)[0]), tok, model.config.block_size
    tok = sample.model_tokenizer(args.model, args.tokenizer or "", args.data_dir)
    model = sample.load_hf(args.model, args.device)[0]
    return (lambda x: model(x).logits), tok, sample.hf_positions(model)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint (run folder, latest, ckpt_N.pt), HF folder or hub name")
    p.add_argument("--limit", type=int, default=-1, help="first N examples only (default: all)")
    p.add_argument("--data_dir", help="data directory (default $LLMHW_DATA_DIR)")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the model's own tokenizer files)")
    p.add_argument("--hf", action="store_true", help="score a HF folder with transformers' AutoModelForCausalLM")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="JSON output (default: hellaswag.json in the run folder or the HF folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    args = p.parse_args(argv)
    if device_problem(args.device):
        p.error(device_problem(args.device))
    if args.limit < -1:
        raise ValueError(f"--limit {args.limit}: give N >= 0, or -1 for all examples")
    if not Path(args.model).exists() and args.model not in HUB_MODELS:
        raise ValueError(f"{args.model}: no such checkpoint or model folder")
    if args.hf and not (Path(args.model) / "config.json").is_file():
        raise ValueError(f"--hf needs a HF model folder (with config.json); {args.model} is not one")
    return args


def main(argv=None) -> dict:
    """Check the inputs, load model and data, score, write the JSON; returns it."""
    try:
        args = parse_args(argv)
        # default: hellaswag.json in the run folder (for a checkpoint) or in the HF folder; none for a hub name
        where = Path(args.model).parent if Path(args.model).is_file() else Path(args.model)
        out = Path(args.out) if args.out else where / "hellaswag.json" if where.is_dir() else None
        if out is not None:  # checked before the work, not after it
            claim_output_file(out, JSON_KIND, overwrite=args.overwrite)
        data = find_data(args.data_dir)
        examples = load_examples(data, args.limit)
        logits_fn, tok, block_size = load_scorer(args)
        t0 = time.perf_counter()
        counts = evaluate(logits_fn, tok, examples, block_size, args.device,
                          autocast=autocast_for("auto", torch.device(args.device)), progress=True)
        result = {"kind": JSON_KIND, "model": str(args.model), "data": str(data),
                  **accuracies(counts), "conventions": CONVENTIONS, "seconds": time.perf_counter() - t0,
                  "scorer": "transformers" if args.hf else "ours"}
        if out is not None:
            atomic_write_json(out, result)
    except (ValueError, FileNotFoundError, OutputError) as e:  # bad input (CheckpointError too): one line
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
