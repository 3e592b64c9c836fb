"""GPT-2's byte-level BPE as OpenAI released it, built from the data directory's ``gpt2/encoder.json`` +
``gpt2/vocab.bpe`` (tiktoken's own ``get_encoding("gpt2")`` would download them).

One identical copy in bpe/ and pretrain/ (checked by tests/test_layout.py; canonical here): the one place
that spells GPT-2's split pattern, its byte <-> character map, and builds the reference ``tiktoken.Encoding``.
"""
from __future__ import annotations

import os
from pathlib import Path

import fileio

EOT = "<|endoftext|>"
FILE_NAMES = {"encoder.json": "gpt2/encoder.json", "vocab.bpe": "gpt2/vocab.bpe"}  # file -> data-directory name

# GPT-2's pre-split regex as tiktoken_ext/openai_public.py gives it for `gpt2`/`r50k_base` (tiktoken 0.7; later
# versions write an equivalent possessive form). It splits text exactly as openai/gpt-2 src/encoder.py's pattern.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (openai/gpt-2 src/encoder.py): the 188 printable Latin-1
    bytes map to themselves, the other 68 to chr(256 + k). Byte-level tokenizer.json files store tokens this way."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def gpt2_files(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """{"encoder.json": path, "vocab.bpe": path} found by fileio.find (its one-line error if missing)."""
    return {name: fileio.find(rel, data_dir) for name, rel in FILE_NAMES.items()}


def gpt2_encoding(data_dir: str | os.PathLike | None = None, files: dict[str, Path] | None = None):
    """tiktoken's ``gpt2`` Encoding from the local files: 50,256 merges' ranks + ``<|endoftext|>`` = 50256, so the
    ids equal ``tiktoken.get_encoding("gpt2")``'s (the reference our BPE and shards are tested against)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    files = files or gpt2_files(data_dir)
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(files["vocab.bpe"]),
                                                encoder_json_file=str(files["encoder.json"]))
    except (ValueError, UnicodeDecodeError, KeyError, AttributeError, TypeError, AssertionError, OSError) as e:
        # tiktoken reads both files and asserts they agree: a damaged or foreign file surfaces as any of these
        why = "the two files disagree" if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"{files['encoder.json']} + {files['vocab.bpe']}: not GPT-2's encoder.json + vocab.bpe "
                         f"pair ({str(why).splitlines()[0][:160]})") from None
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})
