"""The tokenizers pretraining can use, loaded from files, and their export as Hugging Face tokenizer files.

Two kinds (no code of bpe/ is imported; bpe/ meets us through its files):
  * ``gpt2``: OpenAI's GPT-2 BPE as a tiktoken Encoding built from the local ``encoder.json`` + ``vocab.bpe``
    (``tiktoken.load.data_gym_to_mergeable_bpe_ranks``; tiktoken's own ``get_encoding("gpt2")`` would download).
    The same two files are HF's ``vocab.json`` + ``merges.txt``, so a directory holding either pair works.
  * ``tokenizer.json``: any HF `tokenizers` file (e.g. the one bpe/ exports), read with ``tokenizers.Tokenizer``.

``load(spec)`` accepts "gpt2" (files from the data directory), a tokenizer.json path, or a directory (a prepared
data set's ``tokenizer/`` folder or a HF model directory). ``write_hf_files`` writes what
``transformers.AutoTokenizer.from_pretrained`` needs; ``describe``/``load`` round-trip through a folder so that
prepare.py, train.py and hellaswag.py agree on the tokenizer without sharing Python objects.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from gpt2files import EOT, gpt2_encoding, gpt2_files
# Every file name a tokenizer folder of ours may hold: writing one tokenizer into a folder removes the others, so a
# folder never holds two tokenizers (load() would pick one by its preference order, maybe the stale one).
TOKENIZER_FILE_NAMES = ("tokenizer.json", "encoder.json", "vocab.bpe", "vocab.json", "merges.txt",
                        "tokenizer_config.json", "special_tokens_map.json")


def _remove_other_tokenizer_files(folder: Path, keep: set[str]):
    for name in TOKENIZER_FILE_NAMES:
        if name not in keep:
            (folder / name).unlink(missing_ok=True)


class TextTokenizer:
    """encode/decode plus what the pipeline needs to know: kind, vocab_size, eot_id, the defining files."""

    def __init__(self, kind: str, files: dict[str, Path]):
        self.kind, self.files = kind, {k: Path(v) for k, v in files.items()}
        if kind == "gpt2":
            self._enc = gpt2_encoding(files=self.files)
            self.vocab_size, self.eot_id = self._enc.n_vocab, self._enc.eot_token
        elif kind == "tokenizer.json":
            from tokenizers import Tokenizer

            try:
                self._tok = Tokenizer.from_file(str(self.files["tokenizer.json"]))
            except Exception as e:  # the library's errors are long Rust traces; say which file is bad
                raise ValueError(f"{self.files['tokenizer.json']}: not a readable HF tokenizer.json ({e})") from None
            self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
            self.eot_id = self._tok.token_to_id(EOT)  # None when the tokenizer has no end-of-text token
        else:
            raise ValueError(f"unknown tokenizer kind '{kind}'")

    def encode(self, text: str) -> list[int]:
        """Ordinary text to ids; special-token strings inside the text are encoded as plain text."""
        if self.kind == "gpt2":
            return self._enc.encode_ordinary(text)
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) < self.vocab_size]  # padded-vocab ids (>= vocab_size) decode to nothing
        if self.kind == "gpt2":
            return self._enc.decode(ids, errors="replace")
        return self._tok.decode(ids, skip_special_tokens=False)

    def describe(self) -> dict:
        """What identifies the tokenizer: kind, sizes, file names and a SHA-256 over the files' contents."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name].read_bytes())
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eot_id": self.eot_id,
                "files": {k: v.name for k, v in self.files.items()}, "sha256": digest.hexdigest()}

    def copy_files(self, folder: Path) -> Path:
        """Copy the defining files into `folder` (loadable again with load(folder)); returns folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _remove_other_tokenizer_files(folder, set(self.files))
        for name, path in self.files.items():
            if path.resolve() != (folder / name).resolve():
                shutil.copyfile(path, folder / name)
        return folder

    def splits_text(self) -> bool:
        """Whether a pre-tokenizer cuts text at whitespace before BPE (GPT-2's regex does; bpe/'s pattern 'none'
        does not). Only then can prepare.py encode a file in pieces and get the whole file's ids."""
        if self.kind == "gpt2":
            return True
        pre = json.loads(self.files["tokenizer.json"].read_text(encoding="utf-8")).get("pre_tokenizer") or {}
        parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
        return any(p.get("type") in ("Split", "Whitespace", "WhitespaceSplit", "Metaspace") or
                   (p.get("type") == "ByteLevel" and p.get("use_regex", True)) for p in parts)

    def write_hf_files(self, folder: Path, model_max_length: int) -> list[Path]:
        """Write the files transformers.AutoTokenizer needs into `folder`; returns their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _remove_other_tokenizer_files(folder, {"tokenizer.json"} if self.kind == "tokenizer.json" else
                                      {"vocab.json", "merges.txt"})
        special = {}
        if self.eot_id is not None:
            special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
        if self.kind == "gpt2":  # encoder.json IS vocab.json and vocab.bpe IS merges.txt (same files, HF names)
            shutil.copyfile(self.files["encoder.json"], folder / "vocab.json")
            shutil.copyfile(self.files["vocab.bpe"], folder / "merges.txt")
            written = [folder / "vocab.json", folder / "merges.txt"]
            cls = "GPT2Tokenizer"
        else:
            shutil.copyfile(self.files["tokenizer.json"], folder / "tokenizer.json")
            written = [folder / "tokenizer.json"]
            cls = "PreTrainedTokenizerFast"
        config = {"tokenizer_class": cls, "model_max_length": model_max_length, "add_prefix_space": False,
                  **special}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return written + [folder / "tokenizer_config.json"]


def load(spec: str | Path = "gpt2", data_dir: str | Path | None = None) -> TextTokenizer:
    """"gpt2" (encoder.json + vocab.bpe from the data directory), a tokenizer.json file, or a directory holding
    tokenizer.json, encoder.json + vocab.bpe, or vocab.json + merges.txt."""
    if str(spec) == "gpt2":
        return TextTokenizer("gpt2", gpt2_files(data_dir))
    path = Path(spec)
    if path.is_file():
        return TextTokenizer("tokenizer.json", {"tokenizer.json": path})
    if path.is_dir():
        if (path / "encoder.json").is_file() and (path / "vocab.bpe").is_file():
            return TextTokenizer("gpt2", {"encoder.json": path / "encoder.json", "vocab.bpe": path / "vocab.bpe"})
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return TextTokenizer("gpt2", {"encoder.json": path / "vocab.json", "vocab.bpe": path / "merges.txt"})
        if (path / "tokenizer.json").is_file():
            return TextTokenizer("tokenizer.json", {"tokenizer.json": path / "tokenizer.json"})
        raise FileNotFoundError(f"{path}: no tokenizer files (tokenizer.json, encoder.json + vocab.bpe, or "
                                f"vocab.json + merges.txt)")
    raise FileNotFoundError(f"tokenizer '{spec}': not 'gpt2', a tokenizer.json file or a directory")
