"""Stanford Alpaca for supervised finetuning: load, validate, template, tokenize, mask, split and batch.

Sources: a local ``.json`` (a list of records), ``.jsonl`` (one record a line), either one ``.xz``-compressed, a name
under the data directory (``alpaca/alpaca_data.json.xz``, found by datadir.find) or a Hugging Face dataset name
(``tatsu-lab/alpaca``). A record has string fields ``instruction`` and ``output`` and an optional ``input``.

Each example is prompt + target + EOS; the loss sees only the target and EOS. Labels are -100 (ignored by the cross
entropy) on every prompt token and every padding token; sequences longer than ``max_length`` are cut on the right,
and an example whose prompt alone fills ``max_length`` is dropped (it has nothing left to learn from) and counted.

``partition`` is the one place that decides which records are used for what (finetuning train/eval, held-out
instructions for generation, the rest free for pretraining text); run as a script, this file writes that partition
into a folder (formats in README.md, "Partition"):

    python finetune/data.py --out_dir DIR --max_examples 2000 --eval_ratio 0.1 --data_seed 42 --heldout 24
"""
from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import lzma
import random
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import datadir
from fileio import OutputError, atomic_dir, check_writable
from flags import add_flags, given

IGNORE_INDEX = -100  # label of tokens outside the loss (F.cross_entropy's default ignore_index)
DEFAULT_DATA = "alpaca/alpaca_data.json.xz"
HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")

# Templates: (prompt with an input, prompt without one, target). The target's EOS is appended as a token id,
# not as text, so it is the model's own EOS whatever its tokenizer calls it.
TEMPLATES = {
    # The homework's: `BEGINNING OF CONVERSATION: USER: {instruction} {input} ASSISTANT:` + ` {output}<|endoftext|>`
    # (with no input, the instruction alone: no double space).
    "homework": ("BEGINNING OF CONVERSATION: USER: {instruction} {input} ASSISTANT:",
                 "BEGINNING OF CONVERSATION: USER: {instruction} ASSISTANT:",
                 " {output}"),
    # Stanford Alpaca's (tatsu-lab/stanford_alpaca train.py PROMPT_DICT).
    "alpaca": ("Below is an instruction that describes a task, paired with an input that provides further context. "
               "Write a response that appropriately completes the request.\n\n"
               "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
               "Below is an instruction that describes a task. "
               "Write a response that appropriately completes the request.\n\n"
               "### Instruction:\n{instruction}\n\n### Response:\n",
               "{output}"),
}


def prompt_of(record: dict, template: str = "homework") -> str:
    """The prompt text of a record (what the loss does not see)."""
    with_input, without_input, _ = TEMPLATES[template]
    inp = (record.get("input") or "").strip()
    return (with_input if inp else without_input).format(instruction=record["instruction"].strip(), input=inp)


def target_of(record: dict, template: str = "homework") -> str:
    """The target text of a record (what the loss sees), without EOS: tokenize() appends the EOS id."""
    return TEMPLATES[template][2].format(output=record["output"])


# ------------------------------------------------------------------------------------------------ loading

def resolve_data_path(data_path: str, data_dir: str | None = None) -> Path | str:
    """A real file, a data-directory name (``alpaca/alpaca_data.json[.xz]``), or a hub dataset name (returned as str)."""
    p = Path(data_path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise ValueError(f"--data_path {data_path} is a folder; give a .json, .jsonl or .json.xz file")
    if data_path.endswith((".json", ".jsonl", ".xz")):
        alt = data_path[:-3] if data_path.endswith(".xz") else data_path + ".xz"
        for name in (data_path, alt):  # a local copy of either form first, then a download of one with a source
            try:
                return datadir.find(name, data_dir, download=False)
            except datadir.DataFileNotFound:
                pass
        for name in (data_path, alt):
            if datadir.SOURCES.get(name):
                return datadir.find(name, data_dir)
        return datadir.find(data_path, data_dir, download=False)  # raises the one-line error naming the folders
    if HUB_NAME.fullmatch(data_path):
        return data_path
    raise FileNotFoundError(f"--data_path {data_path}: no such file, and not a data-directory name or "
                            "Hugging Face dataset name (owner/name)")


def read_records(path: Path) -> list:
    """Parse a .json / .jsonl file (optionally .xz-compressed); errors name the file and the line or position."""
    opener = (lambda: lzma.open(path, "rt", encoding="utf-8")) if path.suffix == ".xz" else \
        (lambda: open(path, encoding="utf-8"))
    kind = Path(path.stem).suffix if path.suffix == ".xz" else path.suffix
    try:
        with opener() as f:
            if kind == ".jsonl":
                records = []
                for i, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise ValueError(f"{path}: line {i} is not valid JSON ({e})") from None
                return records
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: " + ("is empty (no JSON at all)" if not e.doc.strip() else
                                        f"not valid JSON ({e})")) from None
    except (lzma.LZMAError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot decode ({type(e).__name__}: {e})") from None
    except OSError as e:  # unreadable (permissions, I/O error): a line, not a traceback
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def check_records(records: list, source) -> list[dict]:
    """Every record must have string 'instruction' and 'output' and an optional string 'input'."""
    bad = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            bad.append(f"record {i} is a {type(r).__name__}, not an object")
            continue
        for key, required in (("instruction", True), ("output", True), ("input", False)):
            v = r.get(key)
            if v is None and not required:
                continue
            if v is None:
                bad.append(f"record {i} has no '{key}'")
            elif not isinstance(v, str):
                bad.append(f"record {i} field '{key}' is a {type(v).__name__}, not a string")
            elif key == "instruction" and not v.strip():  # a prompt with nothing to do (an empty output is fine)
                bad.append(f"record {i} field 'instruction' is empty")
    if bad:
        raise ValueError(f"{source}: {len(bad)} malformed record(s): " + "; ".join(bad[:3])
                         + ("; ..." if len(bad) > 3 else ""))
    if not records:
        raise ValueError(f"{source}: no records")
    return records


def load_records(data_path: str = DEFAULT_DATA, data_dir: str | None = None) -> tuple[list[dict], str]:
    """(records, description of where they came from)."""
    where = resolve_data_path(data_path, data_dir)
    if isinstance(where, Path):
        return check_records(read_records(where), where), str(where)
    try:
        import datasets
        ds = datasets.load_dataset(where, split="train")
    except Exception as e:  # offline, unknown name, ...: one line naming the dataset
        raise FileNotFoundError(f"cannot load Hugging Face dataset '{where}' ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); pass a local file instead") from None
    return check_records(list(ds), f"hf:{where}"), f"hf:{where}"


# ------------------------------------------------------------------------------------------------ tokenizing

@dataclass
class Example:
    """One tokenized example: prompt + target + EOS ids, and labels with -100 on the prompt."""
    input_ids: list[int]
    labels: list[int]


def tokenize(records: list[dict], tokenizer, template: str = "homework", max_length: int = 512
             ) -> tuple[list[Example], int]:
    """Templated, tokenized, masked examples and the number dropped because the prompt fills max_length."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; the target needs one")
    if not records:  # (the fast tokenizer fails on an empty batch)
        return [], 0
    # Prompt and target tokenized separately, so the prompt/target boundary is exact (one batched call each).
    prompts = tokenizer([prompt_of(r, template) for r in records], add_special_tokens=False)["input_ids"]
    targets = tokenizer([target_of(r, template) for r in records], add_special_tokens=False)["input_ids"]
    out, dropped = [], 0
    for p, t in zip(prompts, targets):
        ids = (p + t + [eos])[:max_length]
        labels = ([IGNORE_INDEX] * len(p) + t + [eos])[:max_length]
        if len(p) >= max_length:
            dropped += 1
            continue
        out.append(Example(ids, labels))
    return out, dropped


def split_indices(n: int, eval_ratio: float, seed: int, max_examples: int | None = None
                  ) -> tuple[list[int], list[int]]:
    """Deterministic (train, eval) record indices: one seeded shuffle, then an optional subset, then the split."""
    if not 0.0 <= eval_ratio < 1.0:
        raise ValueError(f"eval_ratio must be in [0, 1), got {eval_ratio}")
    if max_examples is not None and max_examples <= 0:
        raise ValueError(f"max_examples must be > 0, got {max_examples}")
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    if max_examples is not None:
        idx = idx[:max_examples]
    n_eval = round(len(idx) * eval_ratio)
    return idx[n_eval:], idx[:n_eval]


def check_split(name: str, n: int, batch_size: int, world_size: int = 1, flag: str = "--train_batch_size") -> None:
    """A split must give every rank at least one full batch (the homework crashed on empty or tiny splits)."""
    need = batch_size * world_size
    if n == 0:
        raise ValueError(f"the {name} split is empty; raise --max_examples or --eval_ratio")
    if n < need:
        raise ValueError(f"the {name} split has {n} examples, fewer than one batch ({flag} {batch_size}"
                         + (f" x {world_size} ranks" if world_size > 1 else "") + f" = {need}); lower "
                         f"{flag} or give the split more examples (--max_examples, --eval_ratio)")


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids/attention_mask/labels (B, T); padding labels are -100."""
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_batches(examples: list[Example], batch_size: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1, pad_id: int = 0, group_by_length: bool = False):
    """One epoch of full batches for this rank: a seeded shuffle per epoch, ranks take disjoint equal shares.

    group_by_length: within each run of 64 batches of the shuffled order, batch examples of similar length together
    (then shuffle the batches), as transformers' LengthGroupedSampler does. On Alpaca this halves the padded tokens
    the model has to process (random batches of 8 at max_length 256: 2.0x the real tokens; grouped: about 1.0x).
    """
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    order = torch.randperm(len(examples), generator=g).tolist()
    per_rank = len(order) // world_size
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    n_batches = len(mine) // batch_size  # drop the last partial batch: every step sees batch_size examples
    batches = [mine[b * batch_size:(b + 1) * batch_size] for b in range(n_batches)]
    if group_by_length:
        mega = 64 * batch_size
        flat = mine[:n_batches * batch_size]
        batches = []
        for m in range(0, len(flat), mega):
            chunk = sorted(flat[m:m + mega], key=lambda i: len(examples[i].input_ids), reverse=True)
            batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    for batch in batches:
        yield collate([examples[i] for i in batch], pad_id)


def eval_batches(examples: list[Example], batch_size: int, rank: int = 0, world_size: int = 1, pad_id: int = 0):
    """All eval examples, each rank a strided share; sorted by length, so batches carry little padding (the loss
    is a sum over tokens, which order does not change)."""
    mine = sorted(examples, key=lambda e: len(e.input_ids))[rank::world_size]
    for b in range(0, len(mine), batch_size):
        yield collate(mine[b:b + batch_size], pad_id)


# ------------------------------------------------------------------------------------------------ tokenizers

def gpt2_tokenizer(data_dir: str | None = None):
    """GPT-2's tokenizer from the data directory's gpt2/encoder.json + gpt2/vocab.bpe (no hub access)."""
    from transformers import GPT2TokenizerFast

    vocab = json.loads(datadir.find("gpt2/encoder.json", data_dir).read_text(encoding="utf-8"))
    lines = datadir.find("gpt2/vocab.bpe", data_dir).read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]  # line 0 is "#version: 0.2"
    return GPT2TokenizerFast(vocab=vocab, merges=merges)


# Files that make a folder's tokenizer (fast, slow BPE, sentencepiece, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def load_tokenizer(model_name_or_path: str, data_dir: str | None = None, vocab_size: int | None = None):
    """The model's own tokenizer; for a model folder without one (e.g. raw weights), GPT-2's if the vocab fits."""
    from transformers import AutoTokenizer

    tok, why = None, "no tokenizer files in the folder"
    folder = Path(model_name_or_path)
    # transformers 5 "loads" a folder without tokenizer files as an empty tokenizer (every text -> []): look first
    if not folder.is_dir() or any((folder / f).is_file() for f in TOKENIZER_FILES):
        try:
            tok = AutoTokenizer.from_pretrained(model_name_or_path)
        except (OSError, ValueError, TypeError) as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if tok is not None and len(tok) < 2:
            tok, why = None, f"its tokenizer has {len(tok)} token(s)"
    if tok is None:
        if vocab_size is not None and vocab_size < 50257:
            raise ValueError(f"{model_name_or_path}: no usable tokenizer ({why}) and the vocabulary ({vocab_size}) is "
                             "too small for GPT-2's; save a tokenizer with the model")
        print(f"[data] {model_name_or_path}: no usable tokenizer ({why}); using GPT-2's from the data directory")
        tok = gpt2_tokenizer(data_dir)
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer of {model_name_or_path} has no EOS token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked out of loss and attention, its id does not matter
    return tok


# ------------------------------------------------------------------------------------------------ partition

SPLIT_FORMAT, SPLIT_VERSION = "llmhw-alpaca-split", 1
SPLIT_FILE, PRETRAIN_FILE, INSTRUCTIONS_FILE = "split.json", "pretrain_text.txt", "instructions.jsonl"
# An eval/held-out response at least this long must not occur even *inside* a pretraining paragraph (shorter ones,
# like "Positive" or "2", occur inside many unrelated answers and carry no information about the record).
MIN_CONTAINED_CHARS = 40


def partition(n_records: int, max_examples: int | None, eval_ratio: float, data_seed: int, n_heldout: int,
              records: list[dict] | None = None) -> dict[str, list[int]]:
    """Which record is used for what: {"train", "eval", "heldout", "unused"} lists of record indices.

    train/eval are exactly ``split_indices(n_records, eval_ratio, data_seed, max_examples)`` (train.py's split).
    heldout: the next ``n_heldout`` records of the same seeded shuffle after the finetuning subset; given
    ``records``, a candidate whose (instruction, input) repeats one of train/eval or an earlier held-out one is passed
    over, so no held-out instruction is in a training split. unused: every other index, ascending. The four lists cover range(n_records)
    and are disjoint.
    """
    train, evals = split_indices(n_records, eval_ratio, data_seed, max_examples)
    order = list(range(n_records))
    random.Random(data_seed).shuffle(order)  # the very shuffle split_indices made: continue along it
    used = set(train) | set(evals)
    seen = {_instruction_key(records[i]) for i in used} if records is not None else set()
    heldout = []
    for i in order[len(used):]:
        if len(heldout) == n_heldout:
            break
        if records is not None:
            if _instruction_key(records[i]) in seen:
                continue
            seen.add(_instruction_key(records[i]))  # nor twice among the held-out ones
        heldout.append(i)
    if len(heldout) < n_heldout:
        raise ValueError(f"only {len(heldout)} records are outside the finetuning subset for {n_heldout} held-out "
                         "instructions; lower --max_examples or --heldout")
    taken = used | set(heldout)
    return {"train": train, "eval": evals, "heldout": heldout,
            "unused": [i for i in range(n_records) if i not in taken]}


def _instruction_key(record: dict) -> tuple[str, str]:
    """What makes two records the same task for generation: instruction and input, outer spaces ignored."""
    return record["instruction"].strip(), (record.get("input") or "").strip()


def paragraph(text: str) -> str:
    """A response as one pretraining paragraph: lines right-stripped, empty lines dropped, so that the file's only
    blank lines are the record boundaries."""
    return "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())


def pretrain_selection(records: list[dict], parts: dict[str, list[int]]) -> tuple[list[int], dict[str, int]]:
    """Indices of the unused records whose responses make the pretraining text, and how many were left out why.

    Left out: an empty response; a response equal (as a paragraph) to that of any train/eval/held-out record (Alpaca
    has ~1,500 records sharing a response with another); a repeat of an earlier unused response; a response that
    contains an eval or held-out response of >= MIN_CONTAINED_CHARS characters. (A train response contained in a
    longer one is kept: the model trains on that text anyway, and scanning for 2,000 needles costs ~20 s.)
    """
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
    """The indices whose text contains any needle: one joined string, str.find per needle (fast C search)."""
    joined = "\n\n".join(texts)
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + 2
    hits = set()
    for needle in needles:  # a needle never spans two texts: it has no blank line, the separator is one
        at = joined.find(needle)
        while at != -1:
            k = bisect.bisect_right(starts, at) - 1
            hits.add(indices[k])
            at = joined.find(needle, starts[k + 1]) if k + 1 < len(starts) else -1
    return hits


def within_budget(records: list[dict], indices: list[int], max_bytes: int, data_seed: int) -> list[int]:
    """The records of ``indices`` whose text fits ``max_bytes``, taken in the partition's seeded shuffle order (a
    uniform sample, not the file's first records), returned in index order."""
    rank = list(range(len(records)))
    random.Random(data_seed).shuffle(rank)  # the shuffle partition() walks along
    position = {i: k for k, i in enumerate(rank)}
    taken, size = [], -1  # -1: n paragraphs have n - 1 separators, plus the final newline
    for i in sorted(indices, key=position.__getitem__):
        size += len(paragraph(records[i]["output"]).encode("utf-8")) + 2
        if size > max_bytes:
            break
        taken.append(i)
    return sorted(taken)


def pretrain_text(records: list[dict], indices: list[int]) -> str:
    """The pretraining text: one paragraph per record, a blank line between records, a final newline."""
    return "\n\n".join(paragraph(records[i]["output"]) for i in indices) + "\n"


@dataclass
class PartitionConfig:
    """Flags of ``python finetune/data.py`` (the partition of Alpaca into finetuning, generation and pretraining)."""
    out_dir: str | None = field(default=None, metadata={"help": "folder to write split.json, pretrain_text.txt and "
                                                                "instructions.jsonl into (required)"})
    data_path: str = field(default=DEFAULT_DATA, metadata={"help": "Alpaca file, data-directory name or HF dataset"})
    data_dir: str | None = field(default=None, metadata={"help": "data directory (default $LLMHW_DATA_DIR)"})
    max_examples: int | None = field(default=None, metadata={"help": "finetuning subset size (train.py's "
                                                                      "--max_examples; None: all records)"})
    eval_ratio: float = field(default=0.01, metadata={"help": "eval fraction of the subset (train.py's --eval_ratio)"})
    data_seed: int = field(default=42, metadata={"help": "seed of the shuffle (train.py's data seed)"})
    heldout: int = field(default=24, metadata={"help": "instructions held out of every split, for generation"})
    pretrain_bytes: int | None = field(default=None, metadata={
        "help": "at most this many bytes of pretraining text, a seeded sample of the free records (None: all)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a partition folder made with other settings"})

    def validate(self) -> "PartitionConfig":
        if self.pretrain_bytes is not None and self.pretrain_bytes <= 0:
            raise ValueError(f"--pretrain_bytes must be > 0, got {self.pretrain_bytes}")
        if not self.out_dir:
            raise ValueError("--out_dir is required")
        if self.max_examples is not None and self.max_examples <= 0:
            raise ValueError(f"--max_examples must be > 0, got {self.max_examples}")
        if not 0 < self.eval_ratio < 1:
            raise ValueError(f"--eval_ratio must be in (0, 1), got {self.eval_ratio}")
        if self.heldout < 0:
            raise ValueError(f"--heldout must be >= 0, got {self.heldout}")
        return self


SETTINGS = ("max_examples", "eval_ratio", "data_seed", "heldout", "pretrain_bytes")  # what makes a partition


def file_sha256(path: Path) -> str:
    """SHA-256 of a file as stored (read in 1 MiB chunks), so split.json names exactly which data it partitioned."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def split_record(cfg: PartitionConfig, records: list[dict], source: str, parts: dict, selected: list[int],
                 left_out: dict, text: str) -> dict:
    """The content of split.json (schema in README.md, "Partition")."""
    path = Path(source) if not source.startswith("hf:") else None
    return {
        "format": SPLIT_FORMAT, "version": SPLIT_VERSION,
        "data": {"source": source, "file": path.name if path else None,
                 "sha256": file_sha256(path) if path else None, "records": len(records)},
        "settings": {k: getattr(cfg, k) for k in SETTINGS},
        "counts": {k: len(v) for k, v in parts.items()},
        "pretrain": {"file": PRETRAIN_FILE, "records": len(selected), "bytes": len(text.encode("utf-8")),
                     "left_out": left_out, "indices": selected},
        "indices": parts,
    }


def read_split(folder: str | Path) -> dict:
    """split.json of a partition folder, checked for its format and version."""
    path = Path(folder) / SPLIT_FILE
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (write it with `python finetune/data.py --out_dir "
                                f"{folder} ...`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(split, dict) or split.get("format") != SPLIT_FORMAT or split.get("version") != SPLIT_VERSION:
        got = (split.get("format"), split.get("version")) if isinstance(split, dict) else type(split).__name__
        raise ValueError(f"{path}: not a {SPLIT_FORMAT} v{SPLIT_VERSION} file (got {got})")
    return split


def check_out_dir(cfg: PartitionConfig, data_source: str) -> Path:
    """Refuse an output folder that holds the data, another kind of content, or a partition of other settings."""
    out = Path(cfg.out_dir).expanduser().resolve()
    if not data_source.startswith("hf:") and out in Path(data_source).resolve().parents:
        raise ValueError(f"--out_dir {cfg.out_dir} holds the data file {data_source}; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        if not (out / SPLIT_FILE).is_file():
            raise ValueError(f"--out_dir {cfg.out_dir} is not empty and holds no {SPLIT_FILE}: not a partition "
                             "folder; choose another folder")
        old = read_split(out)
        settings = {k: getattr(cfg, k) for k in SETTINGS}
        if old.get("settings") != settings:
            raise ValueError(f"--out_dir {cfg.out_dir} holds a partition with settings {old.get('settings')}, not "
                             f"{settings}; pass --overwrite to replace it or choose another folder")
    existing = next(d for d in (out, *out.parents) if d.exists())  # check, but create nothing before the work
    check_writable(existing, is_dir=True)
    return out


def write_partition(out: Path, split: dict, records: list[dict], text: str) -> None:
    """split.json, pretrain_text.txt and instructions.jsonl, built aside and swapped in as one set."""
    lines = [json.dumps({"index": i, "instruction": records[i]["instruction"],
                         "input": records[i].get("input") or "", "output": records[i]["output"]},
                        ensure_ascii=False) for i in split["indices"]["heldout"]]
    with atomic_dir(out) as tmp:
        (tmp / PRETRAIN_FILE).write_text(text, encoding="utf-8")
        (tmp / INSTRUCTIONS_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        # One line per top-level key: readable settings, and index lists that do not take one line per number.
        body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in split.items())
        (tmp / SPLIT_FILE).write_text("{\n" + body + "\n}\n", encoding="utf-8")


def build_partition(cfg: PartitionConfig, records: list[dict], source: str) -> tuple[dict, str]:
    """split.json's content and the pretraining text, for the settings in ``cfg``."""
    parts = partition(len(records), cfg.max_examples, cfg.eval_ratio, cfg.data_seed, cfg.heldout, records)
    selected, left_out = pretrain_selection(records, parts)
    if cfg.pretrain_bytes is not None:
        kept = within_budget(records, selected, cfg.pretrain_bytes, cfg.data_seed)
        left_out["over_budget"], selected = len(selected) - len(kept), kept
    if not selected:
        raise ValueError(f"no records are left for the pretraining text ({len(parts['unused'])} unused); "
                         "lower --max_examples")
    text = pretrain_text(records, selected)
    return split_record(cfg, records, source, parts, selected, left_out, text), text


def main(argv=None) -> dict:
    """Partition the Alpaca records and write the folder; returns split.json's content."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, PartitionConfig)
    try:
        cfg = PartitionConfig(**given(p.parse_args(argv), PartitionConfig)).validate()
        where = resolve_data_path(cfg.data_path, cfg.data_dir)
        out = check_out_dir(cfg, str(where) if isinstance(where, Path) else f"hf:{where}")  # before the loading
        records, source = load_records(cfg.data_path, cfg.data_dir)
        split, text = build_partition(cfg, records, source)
        write_partition(out, split, records, text)
    except (ValueError, FileNotFoundError, OutputError) as e:
        raise SystemExit(f"error: {e}") from None
    n, pre = split["counts"], split["pretrain"]
    print(f"[data] {out}: train {n['train']}, eval {n['eval']}, heldout {n['heldout']}, pretraining text "
          f"{pre['records']} records / {pre['bytes']:,} bytes (left out: {pre['left_out']})")
    return split


if __name__ == "__main__":
    main(sys.argv[1:])
