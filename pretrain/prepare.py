"""Tokenize text files or a Hugging Face dataset into token shards for train.py (format: dataloader.py).

    python pretrain/prepare.py --input tinyshakespeare.txt --out_dir pretrain/output/data/shakespeare
    python pretrain/prepare.py --input corpus.txt --tokenizer bpe/output/tokenizer.json --out_dir DIR
    python pretrain/prepare.py --hf_dataset HuggingFaceFW/fineweb-edu --hf_config sample-10BT \\
        --val_fraction 0.01 --out_dir DIR             # GPU users, online (~10B tokens, 100M-token shards)

The folder is built aside and swapped in whole when complete (fileio.atomic_dir): a failed or killed re-run leaves
the earlier data set as it was. It holds train_000000.bin ..., val_000000.bin ..., tokenizer/ (the tokenizer's
files) and meta.json (format: README.md, "Data"). Each document starts with the end-of-text token (as
build-nanogpt's fineweb.py); a text file is one document. `--input` names are paths or data-directory names.

Streaming: files are read in ~1 MB pieces and datasets in documents, tokenized by worker processes (--workers) and
appended to the current shard on disk, so memory stays flat however large the source. Pieces of a file are cut at a
newline between two non-space characters, or (a text without such newlines: one long line, CRLF ends) before a
single space between two non-space characters; GPT-2's pre-tokenizer splits there anyway, so the ids equal those of
encoding the whole file at once (tested) for any tokenizer that pre-splits text (GPT-2's; bpe/'s gpt2 and gpt4
patterns); one that does not (bpe/'s pattern 'none') may differ next to the cuts, and prepare.py says so.
Validation split: for files, the tail of each file from the first cut in its last --val_fraction of bytes
(nanoGPT's shakespeare split); for datasets, every (1/val_fraction)-th document.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

import datadir
import text_tokenizer
from fileio import OutputError, atomic_dir, atomic_write_json, claim_output_dir
from shards import FORMAT_VERSION, HEADER_INTS, make_header, token_dtype

# A safe cut: a newline with non-whitespace on both sides (a cut elsewhere could merge/split whitespace pre-tokens).
SAFE_CUT = re.compile(rb"(?<=[^\s])\n(?=[^\s])")
# Where a text has no such newline for a long stretch (one long line, CRLF line ends, WikiText's " \n" lines): cut
# before a single space between two non-space characters. GPT-2's and GPT-4's pre-tokenizers both start a new piece
# at such a space (" word", " 12" -> " ", "12", " ."), so the ids still equal the whole file's.
SPACE_CUT = re.compile(rb"(?<=[^\s])(?= [^\s])")
LOOK_AHEAD = 4  # read at most this many piece sizes past the limit looking for a newline cut before using a space


def _find_cut(buf: bytes, start: int, limit_reached: bool):
    """End of the next piece in buf at or after start: a newline cut, else (once enough was read) a space cut."""
    m = SAFE_CUT.search(buf, start)
    if m is None and limit_reached:
        m = SPACE_CUT.search(buf, start)
    return m.end() if m else None


def file_pieces(path: Path, val_fraction: float, piece_bytes: int):
    """Yield (text, is_val, doc_start) pieces of a text file, about piece_bytes each, reading it incrementally.
    Validation is the file's tail from the first cut at or after its last val_fraction of bytes."""
    size = path.stat().st_size
    split = size - int(size * val_fraction)  # first byte of the val region (then cut)
    with open(path, "rb") as f:
        buf, offset, eof, first = b"", 0, False, True
        while buf or not eof:
            limit = piece_bytes if offset >= split else max(1, min(piece_bytes, split - offset))
            far = lambda: eof or len(buf) > limit + LOOK_AHEAD * piece_bytes  # noqa: E731 - allow a space cut
            end = _find_cut(buf, max(0, limit - 1), far())
            while end is None and not eof:  # need more bytes to find the next cut
                data = f.read(max(piece_bytes, len(buf)))
                eof = not data
                buf += data
                end = _find_cut(buf, max(0, limit - 1), far())
            end = end or len(buf)
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

    ds = load_dataset(name, config, split=split, streaming=True, data_files=data_files)
    for i, row in enumerate(ds):
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
DETOKENIZERS = ("none", "wikitext")


def detokenize_wikitext(text: str, doc_start: bool = False) -> str:
    """WikiText's spacing undone in one piece of text (at a document's start its leading blanks go too)."""
    text = text.lstrip() if doc_start else text
    for old, new in WIKITEXT_RULES:
        text = text.replace(old, new)
    for pattern, repl in WIKITEXT_BRACKETS:
        text = pattern.sub(repl, text)
    return text


_worker = {}


# Where a document ends inside a file (each document starts with end-of-text): "file" = only at the file's end
# (one file, one document); "blank_line" = also after every blank line ("\n\n", kept as text), for files holding one
# short document per paragraph (the pipeline's Alpaca responses): the model sees where each one ends and learns to
# end its own. The blank line stays: without it the same model learned markedly slower (150 steps: 6.67 vs 6.12
# nats), with it as fast as on the text without end-of-text. Pieces are never cut inside "\n\n" (SAFE_CUT needs
# non-space on both sides), so a piece's first part continues the document of the piece before it unless the piece
# starts the file.
DOC_BOUNDARIES = {"file": None, "blank_line": "\n\n"}


def _init_worker(spec: str, data_dir, detokenize: str = "none", doc_boundary: str = "file"):
    _worker["tok"], _worker["detokenize"] = text_tokenizer.load(spec, data_dir), detokenize
    _worker["separator"] = DOC_BOUNDARIES[doc_boundary]


def _tokenize(piece):
    text, is_val, doc_start = piece
    tok, sep = _worker["tok"], _worker["separator"]
    ids, parts = [], text.split(sep) if sep else [text]
    for k, part in enumerate(parts):
        starts = doc_start if k == 0 else True  # after a separator, always a new document
        part += sep if k < len(parts) - 1 else ""  # the blank line ends its document, as text
        if k > 0 and not part:
            continue  # the piece ended on a separator: no empty document
        if starts and tok.eot_id is not None:
            ids.append(tok.eot_id)
        ids += tok.encode(detokenize_wikitext(part, starts) if _worker["detokenize"] == "wikitext" else part)
    return np.asarray(ids, dtype=token_dtype(tok.vocab_size)), is_val, len(text.encode("utf-8"))


class ShardWriter:
    """Append tokens to {split}_NNNNNN.bin shards of at most shard_tokens (in a folder being built aside)."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, vocab_size: int, eot_id):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.vocab_size, self.eot_id, self.dtype = vocab_size, eot_id, token_dtype(vocab_size)
        self.names, self.total, self.file, self.count, self.max_id, self.shard_max = [], 0, None, 0, -1, -1

    def write(self, tokens: np.ndarray):
        if len(tokens):
            self.max_id = max(self.max_id, int(tokens.max()))  # meta.json's max_id: a cheap check for train.py
        while len(tokens):
            if self.file is None:
                self.names.append(f"{self.split}_{len(self.names):06d}.bin")
                self.file = open(self.out_dir / self.names[-1], "wb")
                self.file.write(make_header(0, self.dtype, self.vocab_size, self.eot_id).tobytes())
                self.count, self.shard_max = 0, -1
            take = tokens[:self.shard_tokens - self.count]
            self.shard_max = max(self.shard_max, int(take.max()))  # the header's max_id, checked at every open
            self.file.write(take.astype(self.dtype).tobytes())
            self.count += len(take)
            self.total += len(take)
            tokens = tokens[len(take):]
            if self.count == self.shard_tokens:
                self.close()

    def close(self):
        if self.file is None:
            return
        self.file.seek(0)  # the real token count goes into the header now that it is known
        self.file.write(make_header(self.count, self.dtype, self.vocab_size, self.eot_id, self.shard_max).tobytes())
        self.file.close()
        self.file = None

    def describe(self) -> dict:
        return {"tokens": self.total, "shards": self.names, "max_id": self.max_id if self.total else None}


DATA_KIND = "pretrain-tokens"
DATA_NAMES = ("meta.json", "tokenizer", "train_*.bin", "val_*.bin")  # every entry of a data set (glob patterns)


def check_out_dir(out_dir: Path, paths: list[Path]) -> None:
    """fileio's run-folder rule: a new or empty folder or an earlier data set (replaced whole: a re-run is the
    way to rebuild one); one holding or inside an input, or holding any other file, is refused. Leftovers of a
    killed preparation beside it are removed here."""
    claim_output_dir(out_dir, DATA_KIND, DATA_NAMES, overwrite=True, inputs=paths)


def tokenize_into(folder: Path, pieces, tok, spec: str, data_dir, workers: int, detokenize: str, shard_tokens: int,
                  total_bytes, doc_boundary: str = "file") -> dict:
    """Tokenize the pieces (in order, by worker processes) into shards in ``folder``; returns meta's splits."""
    writers = {split: ShardWriter(folder, split, shard_tokens, tok.vocab_size, tok.eot_id) for split in
               ("train", "val")}
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenize")
    init = (spec, data_dir, detokenize, doc_boundary)
    pool = mp.get_context("spawn").Pool(workers, _init_worker, init) if workers > 0 else None
    try:
        if pool is None:
            _init_worker(*init)
        results = pool.imap(_tokenize, pieces, chunksize=4) if pool else map(_tokenize, pieces)
        for ids, is_val, nbytes in results:  # imap keeps the source order, so shards are deterministic
            writers["val" if is_val else "train"].write(ids)
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
    if detokenize not in DETOKENIZERS:
        raise ValueError(f"--detokenize must be one of {', '.join(DETOKENIZERS)}, got {detokenize!r}")
    if doc_boundary not in DOC_BOUNDARIES:
        raise ValueError(f"--doc_boundary must be one of {', '.join(DOC_BOUNDARIES)}, got {doc_boundary!r}")
    if not inputs and not hf_dataset:
        raise ValueError("nothing to prepare: give --input FILE ... or --hf_dataset NAME")
    paths = [Path(p) if Path(p).is_file() else datadir.find(p, data_dir) for p in inputs]
    tok = text_tokenizer.load(tokenizer, data_dir)
    if paths and not tok.splits_text():
        print(f"note: tokenizer {tokenizer} does not pre-split text, so the ~{piece_bytes:,}-byte pieces of a file "
              "are encoded separately: ids next to a cut may differ from encoding the whole file at once")
    out_dir = Path(out_dir)
    check_out_dir(out_dir, paths)

    def pieces():
        for p in paths:
            yield from file_pieces(p, val_fraction, piece_bytes)
        if hf_dataset:
            yield from dataset_pieces(hf_dataset, hf_config, hf_split, text_field, val_fraction, hf_data_files)

    total_bytes = sum(p.stat().st_size for p in paths) if not hf_dataset else None
    with atomic_dir(out_dir, DATA_KIND) as tmp:  # the old data set stays whole until the new one is complete
        splits = tokenize_into(tmp, pieces(), tok, str(tokenizer), data_dir,
                               os.cpu_count() if workers is None else workers, detokenize, shard_tokens, total_bytes,
                               doc_boundary)
        if splits["train"]["tokens"] == 0:
            raise ValueError(f"no training tokens from {[str(p) for p in paths] or hf_dataset}")
        tok_dir = tok.copy_files(tmp / "tokenizer")
        meta = {
            "format": "llmhw-pretrain-tokens", "format_version": FORMAT_VERSION, "header_int32s": HEADER_INTS,
            "dtype": str(token_dtype(tok.vocab_size)),
            "tokenizer": {**tok.describe(), "dir": tok_dir.name, "spec": str(tokenizer)},
            "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "val_fraction": val_fraction, "detokenize": detokenize,
            "doc_boundary": doc_boundary,
            "sources": [str(p) for p in paths] + ([f"{hf_dataset}:{hf_config}:{hf_split}"] if hf_dataset else []),
            **splits,
        }
        atomic_write_json(tmp / "meta.json", meta)
    if val_fraction > 0 and meta["val"]["tokens"] == 0:
        print(f"note: {out_dir} has no validation tokens (the text has no place to cut its last {val_fraction:.0%}); "
              "train.py will need --val_steps 0")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="*", default=[], help="text files (paths or data-directory names)")
    p.add_argument("--hf_dataset", help="HF dataset name, streamed (e.g. HuggingFaceFW/fineweb-edu)")
    p.add_argument("--hf_config", help="dataset config (e.g. sample-10BT)")
    p.add_argument("--hf_split", default="train")
    p.add_argument("--hf_data_files", help="data_files for a generic loader (--hf_dataset json/parquet/text)")
    p.add_argument("--text_field", default="text")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--tokenizer", default="gpt2", help="'gpt2' (local encoder.json + vocab.bpe), a tokenizer.json "
                   "path, or a directory with tokenizer files")
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--shard_tokens", type=int, default=100_000_000, help="tokens per shard (build-nanogpt: 1e8)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores; 0 = inline)")
    p.add_argument("--piece_bytes", type=int, default=1 << 20, help="approximate size of a file piece")
    p.add_argument("--detokenize", default="none", choices=DETOKENIZERS,
                   help="wikitext: undo WikiText's ' @-@ ', ' @,@ ', ' @.@ ' and spaces before punctuation")
    p.add_argument("--doc_boundary", default="file", choices=sorted(DOC_BOUNDARIES),
                   help="where a document (which starts with end-of-text) ends: at the end of each file, or also "
                        "after every blank line (one short document per paragraph)")
    p.add_argument("--data_dir", help="data directory (default $LLMHW_DATA_DIR)")
    a = p.parse_args(argv)
    # SIGTERM unwinds like an error: the half-built folder is removed (fileio.atomic_dir), nothing hidden stays
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        meta = prepare(a.out_dir, a.input, a.tokenizer, a.val_fraction, a.shard_tokens, a.workers, a.piece_bytes,
                       a.data_dir, a.hf_dataset, a.hf_config, a.hf_split, a.text_field, a.hf_data_files,
                       a.detokenize, a.doc_boundary)
    except (ValueError, FileNotFoundError, OutputError) as e:  # bad input: one line naming it, no traceback
        raise SystemExit(f"error: {e}") from None
    print(f"{a.out_dir}: {meta['train']['tokens']:,} train tokens in {len(meta['train']['shards'])} shard(s), "
          f"{meta['val']['tokens']:,} val tokens in {len(meta['val']['shards'])} shard(s), "
          f"vocab {meta['vocab_size']} ({meta['dtype']})")
    return meta


if __name__ == "__main__":
    main()
