"""Token shard format (written by prepare.py, read by dataloader.py); numpy only, so tokenizer workers stay light.

A shard: a header of 256 little-endian int32, then the tokens. The header is llm.c's (`dev/data/*.py`), so its
C/CUDA loaders read our shards too: header[0] magic, header[1] version, header[2] token count; uint16 tokens are
magic 20240520 / version 1, uint32 tokens magic 20240801 / version 7. We add header[3] = bytes per token,
header[4] = vocab size, header[5] = end-of-text id (-1: none), header[6] = the shard's largest token id + 1 (0: not
recorded, shards of earlier versions); it is verified against the tokens whenever a shard is opened, and checked
against the model's vocab before the first step, so a bad id is one line, never an IndexError. A data set is a
folder with `meta.json` (format version, tokenizer, shard lists, counts), `train_*.bin`, `val_*.bin` and the
tokenizer's files in `tokenizer/`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HEADER_INTS = 256
FORMAT_VERSION = 1  # of meta.json and the header extension
MAGIC = {np.dtype(np.uint16): (20240520, 1), np.dtype(np.uint32): (20240801, 7)}


class DataError(ValueError):
    """A missing, corrupt or unsuitable data file; the message names it."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2 ** 16 else np.uint32)


def make_header(n_tokens: int, dtype: np.dtype, vocab_size: int, eot_id: int | None, max_id: int = -1) -> np.ndarray:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1] = MAGIC[np.dtype(dtype)]
    header[2:7] = n_tokens, np.dtype(dtype).itemsize, vocab_size, -1 if eot_id is None else eot_id, max_id + 1
    return header


def read_shard(path: str | Path, scan: bool = True) -> np.memmap:
    """Memory-map the tokens of one shard after checking its header against the file size and (``scan``) its
    tokens against the header's max_id."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {path} is missing")
    size = path.stat().st_size
    if size < HEADER_INTS * 4:
        raise DataError(f"shard {path} is corrupt: {size} bytes, shorter than the {HEADER_INTS * 4}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    dtypes = {magic: (version, dt) for dt, (magic, version) in MAGIC.items()}
    if int(header[0]) not in dtypes or int(header[1]) != dtypes[int(header[0])][0]:
        raise DataError(f"shard {path} is corrupt: bad magic/version {int(header[0])}/{int(header[1])}")
    dtype, n = dtypes[int(header[0])][1], int(header[2])
    if size != HEADER_INTS * 4 + n * dtype.itemsize:
        raise DataError(f"shard {path} is corrupt: header says {n} tokens ({HEADER_INTS * 4 + n * dtype.itemsize} "
                        f"bytes) but the file has {size} bytes")
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_INTS * 4, shape=(n,))
    recorded = int(header[6]) - 1  # -1: not recorded
    if scan and recorded >= 0 and n and int(tokens.max()) > recorded:  # one pass (~0.1 s per 100M cached tokens)
        raise DataError(f"shard {path} is corrupt: holds token id {int(tokens.max())}, above its header's max_id "
                        f"{recorded}; prepare the data again")
    if recorded >= int(header[4]) > 0:
        raise DataError(f"shard {path}: token id {recorded} is outside its tokenizer's vocab {int(header[4])}")
    return tokens


META_FIELDS = {"format_version": int, "vocab_size": int, "tokenizer": dict, "train": dict, "val": dict}


def read_header(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<i4", count=HEADER_INTS)


def read_meta(data: str | Path) -> dict:
    """A data set's meta.json, checked for format version and the fields readers need (one line otherwise)."""
    meta_path = Path(data) / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path} is missing: prepare the data first (python pretrain/prepare.py --out_dir "
                        f"{data} ...)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_path} is corrupt: {e}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} is corrupt: holds a {type(meta).__name__}, not an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    for name, kind in META_FIELDS.items():
        if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
            raise DataError(f"{meta_path} is corrupt: field '{name}' is {meta.get(name)!r}, expected {kind.__name__}")
    for split in ("train", "val"):
        part = meta[split]
        if not isinstance(part.get("shards"), list) or not isinstance(part.get("tokens"), int):
            raise DataError(f"{meta_path} is corrupt: '{split}' needs 'shards' (a list) and 'tokens' (a number)")
    if not isinstance(meta["tokenizer"].get("dir"), str):
        raise DataError(f"{meta_path} is corrupt: 'tokenizer.dir' is missing")
    return meta


def check_shards(data: str | Path, meta: dict, model_vocab: int) -> None:
    """Cheap consistency checks before training: every shard's header against meta.json, and the largest token id
    (meta.json's per-split max_id, else a scan of the val split) against the tokenizer's and the model's vocab."""
    data, vocab, eot = Path(data), meta["vocab_size"], meta.get("eot_id")
    if vocab > model_vocab:
        raise DataError(f"{data}: tokenizer vocab {vocab} exceeds the model's vocab_size {model_vocab}")
    for split in ("train", "val"):
        for name in meta[split]["shards"]:
            tokens = read_shard(data / name, scan=False)  # magic, version, size (the loaders scan the tokens)
            header = read_header(data / name)
            if int(header[4]) != vocab or int(header[5]) != (-1 if eot is None else eot):
                raise DataError(f"shard {data / name}: made with another tokenizer (header vocab {int(header[4])}, "
                                f"end-of-text {int(header[5])}; meta.json says {vocab}, {eot})")
            if int(header[6]) - 1 >= model_vocab:
                raise DataError(f"shard {data / name}: holds token id {int(header[6]) - 1}, outside the model's "
                                f"vocab_size {model_vocab}")
            if tokens.dtype != token_dtype(vocab):
                raise DataError(f"shard {data / name}: {tokens.dtype} tokens, meta.json's vocab {vocab} needs "
                                f"{token_dtype(vocab)}")
        top = meta[split].get("max_id")
        if top is None and split == "val":
            top = max((int(read_shard(data / n).max()) for n in meta[split]["shards"] if meta[split]["tokens"]),
                      default=-1)
        if top is not None and top >= vocab:
            raise DataError(f"{data}: {split} shards hold token id {top}, outside the tokenizer's vocab {vocab}")
