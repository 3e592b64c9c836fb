"""Find a data file by its name in the project's data directory, or download it.

One identical copy of this file lives in each of bpe/, pretrain/, finetune/ and report/ (they share no code; a test
checks the copies stay identical). A data file is named by its path under the data directory, the same names as in
the offline copy `../shared/data` (e.g. ``bpe/manual.txt``, ``tinyshakespeare.txt``,
``alpaca/alpaca_data.json.xz``, ``gpt2/encoder.json``).

Lookup order for ``find(name)``:
  1. the data directory: the ``data_dir`` argument (a script's ``--data_dir`` flag), else the environment variable
     ``LLMHW_DATA_DIR``;
  2. the download cache (``LLMHW_CACHE_DIR``, default ``~/.cache/llmhw``);
  3. unless offline (``LLMHW_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``), a download from the canonical public source into
     the cache, with a progress bar, written atomically.
Otherwise one clear error names the file, the folders searched and the setting to use.
"""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path

ENV_DATA_DIR = "LLMHW_DATA_DIR"
ENV_CACHE_DIR = "LLMHW_CACHE_DIR"
ENV_OFFLINE = "LLMHW_OFFLINE"

# Canonical public sources (name under the data directory -> URL). Users online get these; CI never downloads.
SOURCES = {
    "gpt2/encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "gpt2/vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "tinyshakespeare.txt": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "alpaca/alpaca_data.json": "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json",
    "bpe/manual.txt": "https://raw.githubusercontent.com/htlou/Alignment_hw/"
    "689c41fe80c36018f8d7c169ff715c4f8d974760/hw1/bpe/manual.txt",
    "bpe/lunyu.txt": None,  # built from chinese-poetry's lunyu.json; see ../shared/data/README.md
    "hellaswag/hellaswag_val.jsonl": "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "hellaswag/hellaswag_val_activitynet.jsonl": None,  # offline subset only; see ../shared/data/README.md
    "webtext/wikitext2_valid.txt": "https://raw.githubusercontent.com/pytorch/examples/"
    "77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2/valid.txt",
}


class DataFileNotFound(FileNotFoundError):
    """Raised when a data file is neither local nor downloadable; the message says what to set."""


def data_dir(flag: str | os.PathLike | None = None) -> Path | None:
    """The configured data directory: the flag if given, else $LLMHW_DATA_DIR, else None."""
    value = flag if flag else os.environ.get(ENV_DATA_DIR)
    return Path(value).expanduser().resolve() if value else None


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR, Path.home() / ".cache" / "llmhw")).expanduser()


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


def find(name: str, data_dir_flag: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the path of data file ``name`` (see module docstring for the lookup order)."""
    folders = [d for d in (data_dir(data_dir_flag), cache_dir()) if d is not None]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    searched = ", ".join(str(f) for f in folders)
    hint = f"pass --data_dir DIR or set {ENV_DATA_DIR}=DIR (offline copy: ../shared/data)"
    url = SOURCES.get(name)
    if not download or offline() or url is None:
        why = "offline" if offline() else ("no public source known" if url is None else "download disabled")
        raise DataFileNotFound(f"data file '{name}' not found in [{searched}] ({why}); {hint}")
    target = cache_dir() / name
    try:
        _download(url, target)
    except OSError as e:
        raise DataFileNotFound(f"data file '{name}' not found in [{searched}] and download from {url} failed "
                               f"({e}); {hint}") from e
    return target


def _download(url: str, target: Path) -> None:
    """Stream ``url`` into ``target`` with a progress bar; temp file + rename so a broken download leaves nothing."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
