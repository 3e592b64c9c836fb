"""The Alpaca partition: which records finetune, which are held out for generation, which make pretraining text.

    python finetune/partition.py --out_dir DIR --max_examples 2000 --eval_ratio 0.1 --data_seed 42 --heldout 24

Writes split.json, pretrain_text.txt and instructions.jsonl (formats in README.md, "Partition"). train/eval are
exactly train.py's split for the same flags, so no eval or held-out record reaches the pretraining text.
"""
import argparse
import bisect
import hashlib
import itertools
import json
import sys
from pathlib import Path

from data import DEFAULT_DATA, load_records, resolve_data_path, split_indices
from fileio import OutputError, atomic_dir, claim_output_dir

SPLIT_FORMAT, SPLIT_VERSION = "llmhw-alpaca-split", 1
PARTITION_KIND = "data partition"  # the folder's kind (fileio.claim_output_dir): it holds these three files only
SPLIT_FILE, PRETRAIN_FILE, INSTRUCTIONS_FILE = "split.json", "pretrain_text.txt", "instructions.jsonl"
# An eval/held-out response at least this long must not occur even *inside* a pretraining paragraph (shorter ones,
# like "Positive" or "2", occur inside many unrelated answers and carry no information about the record).
MIN_CONTAINED_CHARS = 40


def partition(n_records: int, max_examples: int | None, eval_ratio: float, data_seed: int, n_heldout: int,
              records: list[dict] | None = None) -> dict[str, list[int]]:
    """{"train", "eval", "heldout", "unused"}: disjoint lists of record indices covering range(n_records).
    train/eval are train.py's split; heldout: the next ``n_heldout`` records of the same shuffle, passing over (given
    ``records``) any whose (instruction, input) repeats an earlier one; unused: every other index, ascending."""
    train, evals = split_indices(n_records, eval_ratio, data_seed, max_examples)
    order, _ = split_indices(n_records, 0, data_seed)  # the very shuffle of that split: continue along it
    used = set(train) | set(evals)
    seen = {_instruction_key(records[i]) for i in used} if records is not None else set()
    heldout = []
    for i in order[len(used):]:
        if len(heldout) == n_heldout:
            break
        key = i if records is None else _instruction_key(records[i])
        if key not in seen:  # nor twice among the held-out ones
            seen.add(key)
            heldout.append(i)
    if len(heldout) < n_heldout:
        raise ValueError(f"only {len(heldout)} records are outside the finetuning subset for {n_heldout} held-out "
                         "instructions; lower --max_examples or --heldout")
    taken = used | set(heldout)
    return {"train": train, "eval": evals, "heldout": heldout,
            "unused": [i for i in range(n_records) if i not in taken]}


def _instruction_key(record: dict) -> tuple[str, str]:
    return record["instruction"].strip(), (record.get("input") or "").strip()


def paragraph(text: str) -> str:
    """A response as one paragraph: the file's only blank lines are the record boundaries."""
    return "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())


def pretrain_selection(records: list[dict], parts: dict[str, list[int]]) -> tuple[list[int], dict[str, int]]:
    """Indices of the unused records whose responses make the pretraining text, and how many were left out why:
    empty, equal to a used one, repeated, or containing an eval/held-out response (a contained train response is
    kept: the model trains on that text anyway, and scanning for 2,000 needles costs ~20 s)."""
    used = {paragraph(records[i]["output"]) for key in ("train", "eval", "heldout") for i in parts[key]}
    why = {"empty": 0, "same_as_used": 0, "repeated": 0, "contains_eval_or_heldout": 0}
    kept, seen = [], set()
    for i in parts["unused"]:
        text = paragraph(records[i]["output"])
        reason = "empty" if not text else "same_as_used" if text in used else "repeated" if text in seen else None
        if reason:
            why[reason] += 1
            continue
        seen.add(text)
        kept.append(i)
    needles = {paragraph(records[i]["output"]) for key in ("eval", "heldout") for i in parts[key]}
    hits = _containing(kept, [paragraph(records[i]["output"]) for i in kept],
                       [t for t in needles if len(t) >= MIN_CONTAINED_CHARS])
    why["contains_eval_or_heldout"] = len(hits)
    return [i for i in kept if i not in hits], why


def _containing(indices: list[int], texts: list[str], needles: list[str]) -> set[int]:
    """The indices whose text contains any needle: str.find per needle in one joined string."""
    joined = "\n\n".join(texts)
    starts = list(itertools.accumulate((len(t) + 2 for t in texts[:-1]), initial=0))  # where each text begins
    hits = set()
    for needle in needles:  # a needle never spans two texts: it has no blank line, the separator is one
        at = joined.find(needle)
        while at != -1:
            k = bisect.bisect_right(starts, at) - 1
            hits.add(indices[k])
            at = joined.find(needle, starts[k + 1]) if k + 1 < len(starts) else -1
    return hits


def within_budget(records: list[dict], indices: list[int], max_bytes: int, data_seed: int) -> list[int]:
    """The records of ``indices`` that fit ``max_bytes``, a uniform sample (the partition's shuffle order)."""
    position = {i: k for k, i in enumerate(split_indices(len(records), 0, data_seed)[0])}  # partition()'s shuffle
    taken, size = [], -1  # -1: n paragraphs have n - 1 separators, plus the final newline
    for i in sorted(indices, key=position.__getitem__):
        size += len(paragraph(records[i]["output"]).encode("utf-8")) + 2
        if size > max_bytes:
            break
        taken.append(i)
    return sorted(taken)


def pretrain_text(records: list[dict], indices: list[int]) -> str:
    return "\n\n".join(paragraph(records[i]["output"]) for i in indices) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", help="folder for split.json, pretrain_text.txt and instructions.jsonl (required)")
    p.add_argument("--data_path", default=DEFAULT_DATA, help="Alpaca file, data-directory name or HF dataset")
    p.add_argument("--data_dir", help="data directory (default $LLMHW_DATA_DIR)")
    p.add_argument("--max_examples", type=int, help="finetuning subset size (default: all records)")
    p.add_argument("--eval_ratio", type=float, default=0.01, help="eval fraction of the subset")
    p.add_argument("--data_seed", type=int, default=42, help="seed of the shuffle")
    p.add_argument("--heldout", type=int, default=24, help="instructions held out of every split, for generation")
    p.add_argument("--pretrain_bytes", type=int, help="at most this many bytes of pretraining text (a seeded sample)")
    p.add_argument("--overwrite", action="store_true", help="replace a partition folder made with other settings")
    args = p.parse_args(argv)
    for name, ok, what in (("out_dir", args.out_dir, "is required"), ("heldout", args.heldout >= 0, "must be >= 0"),
                           ("max_examples", args.max_examples is None or args.max_examples > 0, "must be > 0"),
                           ("eval_ratio", 0 < args.eval_ratio < 1, "must be in (0, 1)"),
                           ("pretrain_bytes", args.pretrain_bytes is None or args.pretrain_bytes > 0, "must be > 0")):
        if not ok:
            raise ValueError(f"--{name} {what}" + (f", got {getattr(args, name)}" if name != "out_dir" else ""))
    return args


SETTINGS = ("max_examples", "eval_ratio", "data_seed", "heldout", "pretrain_bytes")  # what makes a partition


def read_split(folder: str | Path) -> dict:
    path = Path(folder) / SPLIT_FILE
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (write it with `python finetune/partition.py --out_dir "
                                f"{folder} ...`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(split, dict) or split.get("format") != SPLIT_FORMAT or split.get("version") != SPLIT_VERSION:
        got = (split.get("format"), split.get("version")) if isinstance(split, dict) else type(split).__name__
        raise ValueError(f"{path}: not a {SPLIT_FORMAT} v{SPLIT_VERSION} file (got {got})")
    return split


def build_partition(cfg: argparse.Namespace, records: list[dict], source: str) -> tuple[dict, str]:
    """split.json's content and the pretraining text."""
    parts = partition(len(records), cfg.max_examples, cfg.eval_ratio, cfg.data_seed, cfg.heldout, records)
    selected, left_out = pretrain_selection(records, parts)
    if cfg.pretrain_bytes is not None:
        kept = within_budget(records, selected, cfg.pretrain_bytes, cfg.data_seed)
        left_out["over_budget"], selected = len(selected) - len(kept), kept
    if not selected:
        raise ValueError(f"no records are left for the pretraining text ({len(parts['unused'])} unused); "
                         "lower --max_examples")
    text = pretrain_text(records, selected)
    path = None if source.startswith("hf:") else Path(source)
    return {"format": SPLIT_FORMAT, "version": SPLIT_VERSION,
            "data": {"source": source, "file": path and path.name,
                     "sha256": path and hashlib.sha256(path.read_bytes()).hexdigest(), "records": len(records)},
            "settings": {k: getattr(cfg, k) for k in SETTINGS}, "counts": {k: len(v) for k, v in parts.items()},
            "pretrain": {"file": PRETRAIN_FILE, "records": len(selected), "bytes": len(text.encode("utf-8")),
                         "left_out": left_out, "indices": selected},
            "indices": parts}, text


def main(argv=None) -> dict:
    try:
        cfg = parse_args(argv)
        where = resolve_data_path(cfg.data_path, cfg.data_dir)
        # the output folder by fileio's rule, before the loading; one of other settings only with --overwrite
        out = claim_output_dir(cfg.out_dir, PARTITION_KIND, (SPLIT_FILE, PRETRAIN_FILE, INSTRUCTIONS_FILE),
                               overwrite=True, inputs=[where if isinstance(where, Path) else None]).path
        settings = {k: getattr(cfg, k) for k in SETTINGS}
        old = read_split(out).get("settings") if (out / SPLIT_FILE).is_file() and not cfg.overwrite else settings
        if old != settings:
            raise ValueError(f"--out_dir {cfg.out_dir} holds a partition with settings {old}, not {settings}; pass "
                             "--overwrite to replace it or choose another folder")
        records, source = load_records(cfg.data_path, cfg.data_dir)
        split, text = build_partition(cfg, records, source)
        heldout = [{"index": i, "instruction": records[i]["instruction"], "input": records[i].get("input") or "",
                    "output": records[i]["output"]} for i in split["indices"]["heldout"]]
        with atomic_dir(out, PARTITION_KIND) as tmp:  # the three files as one set
            (tmp / PRETRAIN_FILE).write_text(text, encoding="utf-8")
            (tmp / INSTRUCTIONS_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in heldout),
                                                 encoding="utf-8")
            # one line per top-level key: readable settings, and index lists that do not take one line per number
            body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in split.items())
            (tmp / SPLIT_FILE).write_text("{\n" + body + "\n}\n", encoding="utf-8")
    except (ValueError, FileNotFoundError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    n, pre = split["counts"], split["pretrain"]
    print(f"[data] {out}: train {n['train']}, eval {n['eval']}, heldout {n['heldout']}, pretraining text "
          f"{pre['records']} records / {pre['bytes']:,} bytes (left out: {pre['left_out']})")
    return split


if __name__ == "__main__":
    main()
