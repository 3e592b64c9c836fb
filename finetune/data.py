"""Stanford Alpaca for supervised finetuning: load, validate, template, tokenize, mask, split and batch.

Sources and record format: finetune/README.md. Each example is prompt + target + EOS with labels -100 on the prompt
and padding; one whose prompt alone fills ``max_length`` is dropped and counted.
"""
import contextlib
import hashlib
import json
import lzma
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

import fileio

IGNORE_INDEX = -100  # label of tokens outside the loss (F.cross_entropy's default ignore_index)
DEFAULT_DATA = "alpaca/alpaca_data.json.xz"
HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")

# Templates: (prompt with an input, prompt without one, target). The EOS is appended as a token id, not as text.
TEMPLATES = {
    # The homework's (with no input, the instruction alone: no double space).
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
    with_input, without_input, _ = TEMPLATES[template]
    inp = (record.get("input") or "").strip()
    return (with_input if inp else without_input).format(instruction=record["instruction"].strip(), input=inp)


def target_of(record: dict, template: str = "homework") -> str:
    """The target text of a record, without EOS: tokenize() appends the EOS id."""
    return TEMPLATES[template][2].format(output=record["output"])


def resolve_data_path(data_path: str, data_dir: str | None = None) -> Path | str:
    """A real file, a data-directory name (``alpaca/alpaca_data.json[.xz]``), or a hub dataset name (as a str)."""
    p = Path(data_path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise ValueError(f"--data_path {data_path} is a folder; give a .json, .jsonl or .json.xz file")
    if data_path.endswith((".json", ".jsonl", ".xz")):
        alt = data_path[:-3] if data_path.endswith(".xz") else data_path + ".xz"
        for name in (data_path, alt):  # a local copy of either form first, then a download of one with a source
            with contextlib.suppress(fileio.DataFileNotFound):
                return fileio.find(name, data_dir, download=False)
        return fileio.find(next((n for n in (data_path, alt) if fileio.SOURCES.get(n)), data_path), data_dir)
    if HUB_NAME.fullmatch(data_path):
        return data_path
    raise FileNotFoundError(f"--data_path {data_path}: no such file, and not a data-directory name or "
                            "Hugging Face dataset name (owner/name)")


def read_records(path: Path) -> list:
    """Parse a .json / .jsonl file (optionally .xz-compressed); errors name the file and the line or position."""
    xz = path.suffix == ".xz"
    kind = Path(path.stem).suffix if xz else path.suffix
    try:
        with (lzma.open(path, "rt", encoding="utf-8") if xz else open(path, encoding="utf-8")) as f:
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


def check_records(records: list, source, optional: tuple[str, ...] = ("input",)) -> list[dict]:
    """Objects with string fields instruction (not empty), output and input, each required unless ``optional``."""
    bad = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            bad.append(f"record {i} is a {type(r).__name__}, not an object")
            continue
        for key in ("instruction", "output", "input"):
            v = r.get(key)
            if v is None and key not in optional:
                bad.append(f"record {i} has no '{key}'")
            elif v is not None and not isinstance(v, str):
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


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def tokenize(records: list[dict], tokenizer, template: str = "homework", max_length: int = 512
             ) -> tuple[list[Example], int]:
    """Templated, tokenized, masked examples, and how many were dropped because the prompt fills max_length."""
    eos = tokenizer.eos_token_id
    if not records:  # (the fast tokenizer fails on an empty batch)
        return [], 0
    # Prompt and target tokenized separately, so the prompt/target boundary is exact (one batched call each).
    prompts = tokenizer([prompt_of(r, template) for r in records], add_special_tokens=False)["input_ids"]
    targets = tokenizer([target_of(r, template) for r in records], add_special_tokens=False)["input_ids"]
    out = [Example((p + t + [eos])[:max_length], ([IGNORE_INDEX] * len(p) + t + [eos])[:max_length])
           for p, t in zip(prompts, targets) if len(p) < max_length]
    return out, len(records) - len(out)


def split_indices(n: int, eval_ratio: float, seed: int, max_examples: int | None = None
                  ) -> tuple[list[int], list[int]]:
    """Deterministic (train, eval) record indices: one seeded shuffle, an optional subset, then the split."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    idx = idx[:max_examples]  # (None: all)
    n_eval = round(len(idx) * eval_ratio)
    return idx[n_eval:], idx[:n_eval]


def check_split(name: str, n: int, batch_size: int, world_size: int = 1, flag: str = "--batch_size",
                accumulation: int = 1) -> None:
    """Every rank gets one full batch of ``accumulation`` micro-batches (the homework crashed on tiny splits)."""
    need = batch_size * accumulation * world_size
    if n == 0:
        raise ValueError(f"the {name} split is empty; raise --max_examples or --eval_ratio")
    if n < need:
        raise ValueError(f"the {name} split has {n} examples, fewer than one batch ({flag} {batch_size}"
                         + (f" x {accumulation} accumulation" if accumulation > 1 else "")
                         + (f" x {world_size} ranks" if world_size > 1 else "") + f" = {need}); lower "
                         f"{flag} or give the split more examples (--max_examples, --eval_ratio)")


def prepare_data(tc, rc, tokenizer, world_size: int = 1, say=print):
    """train.py's data: tokenized (train, eval) examples, the data's name, and a SHA-256 of the records used (a
    resume compares it: the same file name may hold other data)."""
    records, source = load_records(tc.data_path, tc.data_dir)
    train_idx, eval_idx = split_indices(len(records), tc.eval_ratio, tc.data_seed, tc.max_examples)
    out = []
    splits = (("train", train_idx, tc.batch_size, "--batch_size", tc.gradient_accumulation_steps),
              ("eval", eval_idx, rc.eval_batch_size, "--eval_batch_size", 1))
    for name, idx, bs, flag, accumulation in splits:
        examples, dropped = tokenize([records[i] for i in idx], tokenizer, tc.template, tc.max_length)
        if dropped:
            say(f"[data] {name}: dropped {dropped} examples whose prompt fills --max_length {tc.max_length}")
        check_split(name, len(examples), bs, world_size, flag, accumulation)
        out.append(examples)
    say(f"[data] {source}: {len(records)} records -> train {len(out[0])}, eval {len(out[1])} examples")
    used = [[records[i] for i in train_idx], [records[i] for i in eval_idx]]
    digest = hashlib.sha256(json.dumps(used, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    return out[0], out[1], source, digest


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids/attention_mask/labels (B, T); padding labels are -100."""
    T = max(len(e.input_ids) for e in examples)

    def padded(rows, value):  # (B, T)
        return torch.tensor([row + [value] * (T - len(row)) for row in rows], dtype=torch.long)
    return {"input_ids": padded([e.input_ids for e in examples], pad_id),
            "attention_mask": padded([[1] * len(e.input_ids) for e in examples], 0),
            "labels": padded([e.labels for e in examples], IGNORE_INDEX)}


def train_batches(examples: list[Example], batch_size: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1, pad_id: int = 0, group_by_length: bool = False):
    """One epoch of full batches for this rank: a seeded shuffle per epoch, ranks take disjoint equal shares.
    group_by_length: similar lengths together within each 64 batches (LengthGroupedSampler's way; halves padding)."""
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    order = torch.randperm(len(examples), generator=g).tolist()
    per_rank = len(order) // world_size
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    mine = mine[:len(mine) // batch_size * batch_size]  # drop the last partial batch: every step sees batch_size
    if group_by_length:  # longest first within each run of 64 batches
        mega = 64 * batch_size
        mine = [i for m in range(0, len(mine), mega)
                for i in sorted(mine[m:m + mega], key=lambda i: len(examples[i].input_ids), reverse=True)]
    batches = [mine[b:b + batch_size] for b in range(0, len(mine), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    for batch in batches:
        yield collate([examples[i] for i in batch], pad_id)


def eval_batches(examples: list[Example], batch_size: int, rank: int = 0, world_size: int = 1, pad_id: int = 0):
    """All eval examples, each rank a strided share, sorted by length (little padding; the loss is a sum)."""
    mine = sorted(examples, key=lambda e: len(e.input_ids))[rank::world_size]
    for b in range(0, len(mine), batch_size):
        yield collate(mine[b:b + batch_size], pad_id)


def gpt2_tokenizer(data_dir: str | None = None):
    """GPT-2's tokenizer from the data directory's gpt2/encoder.json + gpt2/vocab.bpe (no hub access)."""
    from transformers import GPT2TokenizerFast

    vocab = json.loads(fileio.find("gpt2/encoder.json", data_dir).read_text(encoding="utf-8"))
    lines = fileio.find("gpt2/vocab.bpe", data_dir).read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]  # line 0 is "#version: 0.2"
    return GPT2TokenizerFast(vocab=vocab, merges=merges)


# Files that make a folder's tokenizer (fast, slow BPE, sentencepiece, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def load_tokenizer(model_name_or_path: str, data_dir: str | None = None, vocab_size: int | None = None):
    """The model's own tokenizer; for a model folder without one (e.g. raw weights), GPT-2's if the vocab fits."""
    from transformers import AutoTokenizer

    tok, why, folder = None, "no tokenizer files in the folder", Path(model_name_or_path)
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
