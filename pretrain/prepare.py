"""Token shards for train.py: the tokenizer, the shard format, meta.json and their checks, the loader, and the
command that tokenizes text files or a Hugging Face dataset into a data set (format: README.md, "Data").

    python pretrain/prepare.py --input tinyshakespeare.txt --out_dir pretrain/output/data/shakespeare
    python pretrain/prepare.py --input corpus.txt --tokenizer bpe/output/tokenizer.json --out_dir DIR
    python pretrain/prepare.py --hf_dataset HuggingFaceFW/fineweb-edu --hf_config sample-10BT \\
        --val_fraction 0.01 --out_dir DIR             # GPU users, online (~10B tokens, 100M-token shards)

A data set is built aside and swapped in whole; each document starts with end-of-text (build-nanogpt's fineweb.py).
Files are tokenized in ~1 MB pieces cut where GPT-2's pre-tokenizer splits anyway: the ids equal the whole file's.
"""
import argparse
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from unittest import mock

import numpy as np
from tqdm import tqdm

import fileio
from fileio import OutputError, atomic_dir, atomic_write_json, claim_output_dir

# ---------------------------------------------------------------------------- the tokenizer
EOT = "<|endoftext|>"


def gpt2_encoding(files: dict[str, Path]):
    """tiktoken.get_encoding("gpt2") (which would download its files) from the local encoder.json + vocab.bpe."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-split pattern

    try:  # TIKTOKEN_CACHE_DIR="": caching off. tiktoken caches what it reads in /tmp/data-gym-cache keyed by the
        # path, not the content, so a file changed at the same path (a data set prepared again) gave the old ranks
        with mock.patch.dict(os.environ, TIKTOKEN_CACHE_DIR=""):
            ranks = data_gym_to_mergeable_bpe_ranks(str(files["vocab.bpe"]), str(files["encoder.json"]))
    except (ValueError, LookupError, AttributeError, TypeError, AssertionError, OSError) as e:
        # tiktoken asserts that the two files agree; a damaged or foreign file surfaces as any of these
        why = "the two files disagree" if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"{files['encoder.json']} + {files['vocab.bpe']}: not GPT-2's encoder.json + vocab.bpe "
                         f"pair ({why.splitlines()[0][:160]})") from None
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})


class TextTokenizer:
    """GPT-2's BPE (tiktoken, built from the local encoder.json + vocab.bpe = HF's vocab.json + merges.txt) or any
    HF tokenizer.json (e.g. bpe/'s); encode/decode, kind, vocab_size, eot_id and the defining files."""

    def __init__(self, kind: str, files: dict[str, Path]):
        self.kind, self.files = kind, {k: Path(v) for k, v in files.items()}
        if kind == "gpt2":
            enc = gpt2_encoding(self.files)
            self.vocab_size, self.eot_id = enc.n_vocab, enc.eot_token
            # ordinary text: special-token strings inside it are encoded as plain text
            self.encode, self._decode = enc.encode_ordinary, lambda ids: enc.decode(ids, errors="replace")
            return
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(self.files["tokenizer.json"]))
        except Exception as e:  # the library's errors are long Rust traces; say which file is bad
            raise ValueError(f"{self.files['tokenizer.json']}: not a readable HF tokenizer.json ({e})") from None
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.eot_id = tok.token_to_id(EOT)  # None when the tokenizer has no end-of-text token
        self.encode = lambda text: tok.encode(text, add_special_tokens=False).ids  # text -> list of ids
        self._decode = lambda ids: tok.decode(ids, skip_special_tokens=False)

    def decode(self, ids) -> str:
        return self._decode([int(i) for i in ids if int(i) < self.vocab_size])  # padded-vocab ids: nothing

    def describe(self) -> dict:
        """What identifies the tokenizer: kind, sizes, file names and a SHA-256 over the files' contents."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name].read_bytes())
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eot_id": self.eot_id,
                "files": {k: v.name for k, v in self.files.items()}, "sha256": digest.hexdigest()}

    def splits_text(self) -> bool:
        """Whether a pre-tokenizer cuts text at whitespace before BPE (GPT-2's regex does; bpe/'s pattern 'none'
        does not). Only then are a file's pieces encoded to the whole file's ids."""
        if self.kind == "gpt2":
            return True
        pre = json.loads(self.files["tokenizer.json"].read_text(encoding="utf-8")).get("pre_tokenizer") or {}
        parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
        return any(p.get("type") in ("Split", "Whitespace", "WhitespaceSplit", "Metaspace") or
                   (p.get("type") == "ByteLevel" and p.get("use_regex", True)) for p in parts)

    def write_files(self, folder: Path, hf: bool = False, model_max_length: int = 1024) -> Path:
        """The defining files as a folder swapped in whole (loadable again with load_tokenizer), or with ``hf`` the
        files transformers.AutoTokenizer needs (GPT-2's encoder.json / vocab.bpe under HF's names)."""
        names = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"} if hf else {}
        with atomic_dir(folder, "tokenizer") as tmp:
            for name, path in self.files.items():
                shutil.copyfile(path, tmp / names.get(name, name))
            if hf:
                special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT} if self.eot_id is not None else {}
                atomic_write_json(tmp / "tokenizer_config.json", {
                    "tokenizer_class": "GPT2Tokenizer" if self.kind == "gpt2" else "PreTrainedTokenizerFast",
                    "model_max_length": model_max_length, "add_prefix_space": False, **special})
        return Path(folder)


def load_tokenizer(spec: str | Path = "gpt2", data_dir: str | Path | None = None) -> TextTokenizer:
    """"gpt2" (encoder.json + vocab.bpe from the data directory), a tokenizer.json file, or a folder holding
    tokenizer.json, encoder.json + vocab.bpe, or vocab.json + merges.txt (a data set's tokenizer/, a HF model)."""
    if str(spec) == "gpt2":
        return TextTokenizer("gpt2", {n: fileio.find(f"gpt2/{n}", data_dir) for n in ("encoder.json", "vocab.bpe")})
    path = Path(spec)
    for a, b in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        if (path / a).is_file() and (path / b).is_file():
            return TextTokenizer("gpt2", {"encoder.json": path / a, "vocab.bpe": path / b})
    file = path if path.is_file() else path / "tokenizer.json"
    if file.is_file():
        return TextTokenizer("tokenizer.json", {"tokenizer.json": file})
    raise FileNotFoundError(f"tokenizer '{spec}': no tokenizer files (not 'gpt2', a tokenizer.json file, or a folder "
                            "with tokenizer.json, encoder.json + vocab.bpe or vocab.json + merges.txt)")


# ---------------------------------------------------------------------------- the shard format and its checks
HEADER_INTS = 256
FORMAT_VERSION = 2  # of meta.json (2: each shard's sha256)
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


def read_shard(path: str | Path, scan: bool = True, meta: dict | None = None) -> np.memmap:
    """The tokens of one shard, memory-mapped, after checking its header against the file size, (``meta``) the
    tokenizer meta.json names and (``scan``) its tokens against the header's max_id (~0.1 s per 100M tokens)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {path} is missing")
    size = path.stat().st_size
    if size < HEADER_INTS * 4:
        raise DataError(f"shard {path} is corrupt: {size} bytes, shorter than the {HEADER_INTS * 4}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    dtype = next((dt for dt, magic in MAGIC.items() if magic == (int(header[0]), int(header[1]))), None)
    if dtype is None:
        raise DataError(f"shard {path} is corrupt: bad magic/version {int(header[0])}/{int(header[1])}")
    n = int(header[2])
    if size != HEADER_INTS * 4 + n * dtype.itemsize:
        raise DataError(f"shard {path} is corrupt: header says {n} tokens ({HEADER_INTS * 4 + n * dtype.itemsize} "
                        f"bytes) but the file has {size} bytes")
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_INTS * 4, shape=(n,))
    recorded = int(header[6]) - 1  # -1: not recorded
    if scan and recorded >= 0 and n and int(tokens.max()) > recorded:
        raise DataError(f"shard {path} is corrupt: holds token id {int(tokens.max())}, above its header's max_id "
                        f"{recorded}; prepare the data again")
    if recorded >= int(header[4]) > 0:
        raise DataError(f"shard {path}: token id {recorded} is outside its tokenizer's vocab {int(header[4])}")
    made_with = (meta["vocab_size"], -1 if meta.get("eot_id") is None else meta["eot_id"]) if meta else None
    if made_with and (int(header[4]), int(header[5])) != made_with:
        raise DataError(f"shard {path}: made with another tokenizer (header vocab {int(header[4])}, end-of-text "
                        f"{int(header[5])}; meta.json says {meta['vocab_size']}, {meta.get('eot_id')})")
    return tokens


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_meta(data: str | Path) -> dict:
    """A data set's meta.json, checked for format version and the fields readers need (one line otherwise)."""
    path = Path(data) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path} is missing: prepare the data first (python pretrain/prepare.py --out_dir {data} ...)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is corrupt: {e}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} is corrupt: holds a {type(meta).__name__}, not an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION} "
                        "(prepare the data again)")
    for name, kind in (("vocab_size", int), ("tokenizer.dir", str), ("train.shards", list), ("train.tokens", int),
                       ("val.shards", list), ("val.tokens", int)):
        value = meta
        for key in name.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{path} is corrupt: field '{name}' is {value!r}, expected {kind.__name__}")
    return meta


def check_data(data: str | Path, meta: dict, model_vocab: int) -> TextTokenizer:
    """Cheap checks before training; returns the data's tokenizer: its vocab fits the model's, every shard's header
    (read_shard; the loader scans the tokens) agrees with meta.json's tokenizer, whose files are the shards' own."""
    data = Path(data)
    if meta["vocab_size"] > model_vocab:
        raise DataError(f"{data}: tokenizer vocab {meta['vocab_size']} exceeds the model's vocab_size {model_vocab}")
    for name in meta["train"]["shards"] + meta["val"]["shards"]:
        read_shard(data / name, scan=False, meta=meta)
    tok = load_tokenizer(data / meta["tokenizer"]["dir"])
    if tok.describe()["sha256"] != meta["tokenizer"].get("sha256"):
        raise DataError(f"{data}/{meta['tokenizer']['dir']}: tokenizer files differ from the ones the shards were "
                        "made with (meta.json tokenizer.sha256)")
    return tok


def data_identity(data: Path, meta: dict, hashed: bool = False) -> dict:
    """What makes a data set the same one for train.py --resume: its sources and its train shards' contents (the
    sha256 of the files now when ``hashed``, else as meta.json recorded them)."""
    names = meta["train"]["shards"]
    return {"sources": meta.get("sources"), "train_tokens": meta["train"]["tokens"],
            "train_sha256": [file_sha256(Path(data) / n) for n in names] if hashed else meta["train"].get("sha256")}


# ---------------------------------------------------------------------------- the loader
class ShardLoader:
    """(x, y) batches (B, T), y = x shifted by one, from the memory-mapped shards cut into windows of T+1 tokens at a
    stride of T. A step reads B * world_size windows, rank r the r-th B (disjoint; one process with k accumulation
    steps reads what k processes read in one step). "sequential" (nanoGPT's): file order, a step never across two
    shards; "shuffle": a new random order and offset of the cuts each epoch, from (seed, epoch) only, so that every
    step draws from every source in proportion (README.md, "Data order"). state_dict(): the position, on every rank."""

    def __init__(self, data, split: str, B: int, T: int, rank: int = 0, world_size: int = 1,
                 order: str = "sequential", seed: int = 0, accum: int = 1):
        self.B, self.T, self.rank, self.world_size = B, T, rank, world_size
        self.shuffle, self.seed = order == "shuffle", seed if order == "shuffle" else None
        # shuffled, an epoch ends on an optimizer step's boundary, so k processes and k accumulation steps see the
        # same epochs; in file order a step never spans two shards
        self.per_step = B * world_size * (accum if self.shuffle else 1)
        names = read_meta(data)[split]["shards"]
        if not names:
            raise DataError(f"{data}: no {split} shards in meta.json (no {split} tokens): prepare the data with "
                            "--val_fraction > 0 (e.g. 0.1), or pass --val_steps 0 to train without validation")
        self.shards = [read_shard(Path(data) / name) for name in names]
        counts = self._counts(0)  # a shard giving no window (typically a short last one) is skipped
        self.skipped = [name for name, n in zip(names, counts) if n == 0]
        self.shards = [s for s, n in zip(self.shards, counts) if n > 0]
        fewest = sum(self._counts(T - 1 if self.shuffle else 0))  # found now, not in a later epoch's offset
        if fewest < self.per_step:
            raise DataError(f"{data}: the {split} split has {fewest} windows of {T + 1} tokens in some epochs, "
                            f"fewer than one step needs ({self.per_step} = batch_size * world_size"
                            f"{' * accumulation' if self.shuffle else ''}); lower the batch size or sequence length")
        self.epoch, self.pos = 0, 0
        self._plan(0)

    def _counts(self, offset: int) -> list[int]:
        """Windows per shard when the cuts start at `offset`."""
        n = [max(0, (len(s) - 1 - offset) // self.T) for s in self.shards]
        return n if self.shuffle else [k - k % self.per_step for k in n]

    def _plan(self, epoch: int) -> None:
        """This epoch's windows: starts at offset + k*T in every shard (offset in [0, T)), in their order."""
        rng = np.random.default_rng([self.seed or 0, epoch])
        self.offset = int(rng.integers(self.T)) if self.shuffle else 0  # new cuts each epoch: tokens move
        counts = self._counts(self.offset)
        self.first = np.cumsum([0] + counts[:-1])  # each shard's first window
        n = sum(counts)
        self.order = rng.permutation(n)[:n - n % self.per_step] if self.shuffle else range(n)  # whole steps

    def windows(self, picked):
        """(shard, start token) of each window index in `picked`."""
        shard = np.searchsorted(self.first, picked, side="right") - 1
        return zip(shard, self.offset + (np.asarray(picked) - self.first[shard]) * self.T)

    def batches_per_epoch(self) -> int:
        return len(self.order) // (self.B * self.world_size)

    def reset(self):
        self.load_state_dict({**self.state_dict(), "epoch": 0, "pos": 0})

    def state_dict(self) -> dict:
        return {"order": "shuffle" if self.shuffle else "sequential", "seed": self.seed, "epoch": self.epoch,
                "pos": self.pos}

    def load_state_dict(self, state: dict):
        if state.get("order") != self.state_dict()["order"] or state.get("seed") != self.seed:
            raise DataError(f"data position {state} is not a {self.state_dict()['order']}-order position with seed "
                            f"{self.seed} (the checkpoint was made with another --data_order or --seed)")
        self._plan(state["epoch"])
        if not 0 <= state["pos"] <= len(self.order) - self.B * self.world_size or state["pos"] % self.per_step:
            raise DataError(f"data position {state} does not fit the {len(self.order)} windows at B={self.B}, "
                            f"T={self.T}, world_size={self.world_size} (were the shards changed?)")
        self.epoch, self.pos = state["epoch"], state["pos"]

    def next_batch(self):
        import torch  # here, not at the top: the tokenizer workers import this module and stay light

        picked = self.order[self.pos + self.rank * self.B:self.pos + (self.rank + 1) * self.B]  # this rank's B
        rows = np.stack([self.shards[s][start:start + self.T + 1] for s, start in self.windows(picked)])  # (B, T+1)
        self.pos += self.B * self.world_size
        if self.pos == len(self.order):  # the epoch's whole steps are read: the next epoch's order
            self.epoch, self.pos = self.epoch + 1, 0
            self._plan(self.epoch)
        buf = torch.from_numpy(rows.astype(np.int64))
        return buf[:, :-1], buf[:, 1:]


# ---------------------------------------------------------------------------- reading the sources in pieces
# A safe cut: a newline with non-whitespace on both sides (a cut elsewhere could merge/split whitespace pre-tokens).
SAFE_CUT = re.compile(rb"(?<=[^\s])\n(?=[^\s])")
# Where a text has no such newline for a long stretch (one long line, CRLF line ends, WikiText's " \n" lines): cut
# before a single space between two non-space characters. GPT-2's and GPT-4's pre-tokenizers both start a new piece
# at such a space (" word", " 12" -> " ", "12", " ."), so the ids still equal the whole file's.
SPACE_CUT = re.compile(rb"(?<=[^\s])(?= [^\s])")
LOOK_AHEAD = 4  # read at most this many piece sizes past the limit looking for a newline cut before using a space


def file_pieces(path: Path, val_fraction: float, piece_bytes: int):
    """Yield (text, is_val, doc_start) pieces of a text file, about piece_bytes each, reading it incrementally.
    Validation is the file's tail from the first cut at or after its last val_fraction of bytes."""
    size = path.stat().st_size
    split = size - int(size * val_fraction)  # first byte of the val region (then cut)
    with open(path, "rb") as f:
        buf, offset, eof, first = b"", 0, False, True
        while buf or not eof:
            limit = piece_bytes if offset >= split else max(1, min(piece_bytes, split - offset))
            while True:  # the next cut at or after limit: a newline, else (once enough was read) a space
                m = SAFE_CUT.search(buf, max(0, limit - 1))
                if m is None and (eof or len(buf) > limit + LOOK_AHEAD * piece_bytes):
                    m = SPACE_CUT.search(buf, max(0, limit - 1))
                if m or eof:
                    break
                data = f.read(max(piece_bytes, len(buf)))  # need more bytes to find the next cut
                eof, buf = not data, buf + data
            end = m.end() if m else len(buf)
            if end == 0:
                return
            try:
                text = buf[:end].decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not UTF-8 text near byte {offset + e.start}") from None
            yield text, offset >= split, first
            buf, offset, first = buf[end:], offset + end, False


def dataset_pieces(name: str, config: str | None, split: str, field: str, val_fraction: float, data_files=None):
    """Yield (text, is_val, True) per document of a HF dataset, streamed (nothing is downloaded up front)."""
    from datasets import load_dataset

    for i, row in enumerate(load_dataset(name, config, split=split, streaming=True, data_files=data_files)):
        if not isinstance(row.get(field), str):  # missing, or None in a row of a JSON file without it
            raise ValueError(f"dataset {name}: row {i} has no text in field '{field}' (got "
                             f"{type(row.get(field)).__name__}; fields: {sorted(row)})")
        # document i goes to val when floor((i+1) f) > floor(i f): evenly spread, a fraction f of the documents
        yield row[field], int((i + 1) * val_fraction) > int(i * val_fraction), True


# WikiText's tokenization marks, undone by --detokenize wikitext (after Megatron-LM's wikitext_detokenizer; "<unk>"
# stays as it is: the text does not say which word it replaced).
WIKITEXT_RULES = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "), (" . ", ". "),
                  (" ! ", "! "), (" ? ", "? "), (" , ", ", "), (" 's", "'s"), ("s ' ", "s' "), (" n't", "n't"),
                  ("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \n", "\n"), ("\n ", "\n")]
WIKITEXT_BRACKETS = [(re.compile(r"\( ([^()\n]*?) \)"), r"(\1)"), (re.compile(r'" ([^"\n]*?) "'), r'"\1"')]


def detokenize_wikitext(text: str, doc_start: bool = False) -> str:
    """WikiText's spacing undone in one piece of text (at a document's start its leading blanks go too)."""
    text = text.lstrip() if doc_start else text
    for old, new in WIKITEXT_RULES:
        text = text.replace(old, new)
    for pattern, repl in WIKITEXT_BRACKETS:
        text = pattern.sub(repl, text)
    return text


# Where a document ends inside a file: "file" = at its end; "blank_line" = also after every blank line, kept as text
# (one document per paragraph, e.g. Alpaca responses: the model learns to end its own; with the blank line kept it
# learned as fast as without end-of-text). Pieces are never cut inside a blank line (SAFE_CUT).
DOC_BOUNDARIES = {"file": None, "blank_line": re.compile(r"(\r?\n\s*\r?\n)")}
_worker = {}


def _init_worker(spec: str, data_dir, detokenize: str = "none", doc_boundary: str = "file"):
    _worker.update(tok=load_tokenizer(spec, data_dir), detokenize=detokenize, boundary=DOC_BOUNDARIES[doc_boundary])


def _tokenize(piece):
    text, is_val, doc_start = piece
    tok, boundary = _worker["tok"], _worker["boundary"]
    parts = boundary.split(text) if boundary else [text]  # [document, blank line, document, blank line, ...]
    ids = []
    for k in range(0, len(parts), 2):
        doc, starts = "".join(parts[k:k + 2]), doc_start or k > 0  # the blank line ends its document, as text
        if starts and not doc.strip():
            continue
        if starts and tok.eot_id is not None:
            ids.append(tok.eot_id)
        ids += tok.encode(detokenize_wikitext(doc, starts) if _worker["detokenize"] == "wikitext" else doc)
    return np.asarray(ids, dtype=token_dtype(tok.vocab_size)), is_val, len(text.encode("utf-8"))


# ---------------------------------------------------------------------------- writing a data set
class ShardWriter:
    """Append tokens to {split}_NNNNNN.bin shards of at most shard_tokens (in a folder being built aside)."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, vocab_size: int, eot_id):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.vocab_size, self.eot_id, self.dtype = vocab_size, eot_id, token_dtype(vocab_size)
        self.names, self.sha256, self.total, self.file, self.max_id = [], [], 0, None, -1

    def write(self, tokens: np.ndarray):
        while len(tokens):
            if self.file is None:
                self.names.append(f"{self.split}_{len(self.names):06d}.bin")
                self.file = open(self.out_dir / self.names[-1], "wb")
                self.file.write(make_header(0, self.dtype, self.vocab_size, self.eot_id).tobytes())
                self.count, self.shard_max = 0, -1
            take = tokens[:self.shard_tokens - self.count]
            self.shard_max = max(self.shard_max, int(take.max()))  # the header's max_id, checked at every open
            self.max_id = max(self.max_id, self.shard_max)  # meta.json's: a cheap check for train.py
            self.file.write(take.astype(self.dtype).tobytes())
            self.count, self.total, tokens = self.count + len(take), self.total + len(take), tokens[len(take):]
            if self.count == self.shard_tokens:
                self.close()

    def close(self):
        if self.file is None:
            return
        self.file.seek(0)  # the real token count goes into the header now that it is known
        self.file.write(make_header(self.count, self.dtype, self.vocab_size, self.eot_id, self.shard_max).tobytes())
        self.file.close()
        self.file = None
        self.sha256.append(file_sha256(self.out_dir / self.names[-1]))

    def describe(self) -> dict:
        return {"tokens": self.total, "shards": self.names, "sha256": self.sha256,
                "max_id": self.max_id if self.total else None}


DATA_KIND = "pretrain-tokens"
DATA_NAMES = ("meta.json", "tokenizer", "train_*.bin", "val_*.bin")  # every entry of a data set (glob patterns)


def tokenize_into(folder: Path, pieces, tok, init: tuple, workers: int, shard_tokens: int, total_bytes) -> dict:
    """Tokenize the pieces (in order, by worker processes) into shards in ``folder``; returns meta's splits."""
    writers = {s: ShardWriter(folder, s, shard_tokens, tok.vocab_size, tok.eot_id) for s in ("train", "val")}
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenize")
    pool = mp.get_context("spawn").Pool(workers, _init_worker, init) if workers > 0 else None
    try:
        if pool is None:
            _init_worker(*init)
        for ids, is_val, nbytes in pool.imap(_tokenize, pieces, chunksize=4) if pool else map(_tokenize, pieces):
            writers["val" if is_val else "train"].write(ids)  # imap keeps the source order: deterministic shards
            bar.update(nbytes)
    finally:
        bar.close()
        if pool:
            pool.terminate()
        for w in writers.values():
            w.close()
    return {split: w.describe() for split, w in writers.items()}


def prepare(out_dir, inputs=(), tokenizer="gpt2", val_fraction=0.1, shard_tokens=100_000_000, workers=None,
            piece_bytes=1 << 20, data_dir=None, hf_dataset=None, hf_config=None, hf_split="train",
            text_field="text", hf_data_files=None, detokenize="none", doc_boundary="file") -> dict:
    """Tokenize the sources into out_dir (built aside, swapped in when complete); returns meta.json's dict."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    for name, value, lowest in (("shard_tokens", shard_tokens, 1), ("piece_bytes", piece_bytes, 1),
                                ("workers", 0 if workers is None else workers, 0)):
        if value < lowest:
            raise ValueError(f"--{name} must be >= {lowest}, got {value}")
    for name, value, choices in (("detokenize", detokenize, ("none", "wikitext")),
                                 ("doc_boundary", doc_boundary, DOC_BOUNDARIES)):
        if value not in choices:
            raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
    if not inputs and not hf_dataset:
        raise ValueError("nothing to prepare: give --input FILE ... or --hf_dataset NAME")
    paths = [Path(p) if Path(p).is_file() else fileio.find(p, data_dir) for p in inputs]
    tok = load_tokenizer(tokenizer, data_dir)
    if paths and not tok.splits_text():
        print(f"note: tokenizer {tokenizer} does not pre-split text, so the ~{piece_bytes:,}-byte pieces of a file "
              "are encoded separately: ids next to a cut may differ from encoding the whole file at once")
    # a new or empty folder or an earlier data set (replaced whole); one holding an input or other files: refused
    claim_output_dir(out_dir, DATA_KIND, DATA_NAMES, overwrite=True, inputs=paths)
    sources = [str(p) for p in paths] + ([f"{hf_dataset}:{hf_config}:{hf_split}"] if hf_dataset else [])

    def pieces():
        for p in paths:
            yield from file_pieces(p, val_fraction, piece_bytes)
        if hf_dataset:
            yield from dataset_pieces(hf_dataset, hf_config, hf_split, text_field, val_fraction, hf_data_files)

    with atomic_dir(out_dir, DATA_KIND) as tmp:  # the old data set stays whole until the new one is complete
        splits = tokenize_into(tmp, pieces(), tok, (str(tokenizer), data_dir, detokenize, doc_boundary),
                               os.cpu_count() if workers is None else workers, shard_tokens,
                               None if hf_dataset else sum(p.stat().st_size for p in paths))
        if splits["train"]["tokens"] == 0:  # never a data set of end-of-text tokens only
            raise ValueError(f"no text to train on in {', '.join(sources)}: empty, or only blank lines")
        tok_dir = tok.write_files(tmp / "tokenizer")
        meta = {"format": "llmhw-pretrain-tokens", "format_version": FORMAT_VERSION, "header_int32s": HEADER_INTS,
                "dtype": str(token_dtype(tok.vocab_size)),
                "tokenizer": {**tok.describe(), "dir": tok_dir.name, "spec": str(tokenizer)},
                "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "val_fraction": val_fraction,
                "detokenize": detokenize, "doc_boundary": doc_boundary, "sources": sources, **splits}
        atomic_write_json(tmp / "meta.json", meta)
    if val_fraction > 0 and meta["val"]["tokens"] == 0:
        print(f"note: {out_dir} has no validation tokens (the text has no place to cut its last {val_fraction:.0%}); "
              "train.py will need --val_steps 0")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", dest="inputs", nargs="*", default=[], metavar="FILE",
                   help="text files (paths or data-directory names)")
    p.add_argument("--hf_dataset", help="HF dataset name, streamed (e.g. HuggingFaceFW/fineweb-edu)")
    p.add_argument("--hf_config", help="dataset config (e.g. sample-10BT)")
    p.add_argument("--hf_split", default="train")
    p.add_argument("--hf_data_files", help="data_files for a generic loader (--hf_dataset json/parquet/text)")
    p.add_argument("--text_field", default="text")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--tokenizer", default="gpt2", help="'gpt2' (local encoder.json + vocab.bpe), a tokenizer.json "
                   "path, or a directory with tokenizer files")
    p.add_argument("--val_fraction", type=float, default=0.1, help="a file's tail from the first cut in its last "
                   "fraction of bytes (nanoGPT's split); a dataset's every (1/fraction)-th document")
    p.add_argument("--shard_tokens", type=int, default=100_000_000, help="tokens per shard (build-nanogpt: 1e8)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores; 0 = inline)")
    p.add_argument("--piece_bytes", type=int, default=1 << 20, help="approximate size of a file piece")
    p.add_argument("--detokenize", default="none", choices=("none", "wikitext"),
                   help="wikitext: undo WikiText's ' @-@ ', ' @,@ ', ' @.@ ' and spaces before punctuation")
    p.add_argument("--doc_boundary", default="file", choices=sorted(DOC_BOUNDARIES),
                   help="where a document (which starts with end-of-text) ends: at the end of each file, or also "
                        "after every blank line (one short document per paragraph)")
    p.add_argument("--data_dir", help="data directory (default $LLMHW_DATA_DIR)")
    a = p.parse_args(argv)
    # SIGTERM unwinds like an error: the half-built folder is removed (fileio.atomic_dir), nothing hidden stays
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        meta = prepare(**vars(a))
    except (ValueError, FileNotFoundError, OutputError) as e:  # bad input: one line naming it, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{a.out_dir}: {meta['train']['tokens']:,} train tokens in {len(meta['train']['shards'])} shard(s), "
          f"{meta['val']['tokens']:,} val tokens in {len(meta['val']['shards'])} shard(s), "
          f"vocab {meta['vocab_size']} ({meta['dtype']})")
    return meta


if __name__ == "__main__":
    main()
