"""The homework's ten tokenizer questions: every example computed at build time with GPT-2's encoding (tiktoken, from
the local gpt2/encoder.json + vocab.bpe) and our tokenizer (its tokenizer.json, read by Hugging Face `tokenizers`; no
bpe/ code imported).
"""
import os
from pathlib import Path
from unittest import mock

import fileio

GPT2_SMALL_WIDTH, EOT = 768, "<|endoftext|>"
# GPT-2's pre-split regex as tiktoken_ext/openai_public.py gives it for `gpt2`
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_encoding(data_dir=None):
    """tiktoken's GPT-2 encoding from the local encoder.json + vocab.bpe (get_encoding("gpt2") would download)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    files = {k: str(fileio.find(f"gpt2/{k}", data_dir)) for k in ("vocab.bpe", "encoder.json")}
    # caching off: tiktoken caches what it reads under /tmp/data-gym-cache keyed by the path, not the content, so a
    # file changed at the same path would give stale ranks
    with mock.patch.dict(os.environ, TIKTOKEN_CACHE_DIR=""):
        ranks = data_gym_to_mergeable_bpe_ranks(files["vocab.bpe"], files["encoder.json"])
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})


class FileTokenizer:
    """A tokenizer.json written by bpe/train.py, read by HF `tokenizers`, with the tiktoken methods used here."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))
        self.n_vocab = self.tok.get_vocab_size()
        # byte-level tokens store each byte as a printable character (GPT-2's encoder.py): the printable Latin-1
        # bytes as themselves, the others as chr(256 + k) in byte order
        printable = [b for b in range(256) if chr(b).isprintable() and b != ord(" ")]
        others = [b for b in range(256) if b not in printable]
        self.byte_of = {**{chr(b): b for b in printable}, **{chr(256 + k): b for k, b in enumerate(others)}}

    def encode_ordinary(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode_single_token_bytes(self, i: int) -> bytes:
        s = self.tok.id_to_token(i)
        return bytes(self.byte_of[c] for c in s) if all(c in self.byte_of for c in s) else s.encode()  # a special


def show_piece(b: bytes) -> str:
    """A token's bytes readable in a markdown code span: escaped bytes, no pipes or backticks, spaces as '␣'."""
    text = repr(b.decode("utf-8", errors="backslashreplace"))[1:-1]
    return text.replace("|", "\\|").replace("`", "'").replace(" ", "␣")


def tokens_md(tok, text: str, limit: int = 40) -> str:
    ids = tok.encode_ordinary(text)
    shown = " · ".join(f"`{show_piece(tok.decode_single_token_bytes(i))}`" for i in ids[:limit])
    more = f" … (+{len(ids) - limit})" if len(ids) > limit else ""
    return f"{len(ids)} token{'s' if len(ids) != 1 else ''}: {shown}{more}"


def examples(ours, gpt2) -> dict[str, str]:
    """The ``q_*`` slots of the ten questions: each example encoded by GPT-2, and by ours where the text compares."""
    s, code = "大模型", "def f(x):\n        if x:\n            return x\n"
    para = ("The tokenizer is a necessary and pervasive component of Large Language Models (LLMs), where it "
            "translates between strings and tokens (text chunks).")
    en, zh = "Peking University is a university in Beijing.", "北京大学是位于北京的一所大学。"
    js = '{"name": "GPT-2", "layers": 12, "heads": 12, "tokens": [1, 2, 3]}'
    ya = "name: GPT-2\nlayers: 12\nheads: 12\ntokens:\n  - 1\n  - 2\n  - 3\n"
    n_js, n_ya = len(gpt2.encode_ordinary(js)), len(gpt2.encode_ordinary(ya))
    both = lambda text: f"- GPT-2: {tokens_md(gpt2, text)}\n- ours: {tokens_md(ours, text)}"  # noqa: E731
    try:   # what tiktoken does with '<|endoftext|>' in user text under its default (disallow-all) policy
        gpt2.encode(EOT)
        eot_policy = "encoded without complaint (unexpected)"
    except ValueError as e:
        eot_policy = f"refused: tiktoken raises `{str(e).splitlines()[0][:90]}…`"
    return {
        "q_ord_bei": str(ord("北")), "q_ord_da": str(ord("大")), "q_chr": chr(22823) + chr(27169) + chr(22411),
        "q_utf8_len": str(len(s.encode())), "q_utf8_hex": s.encode().hex(" "),
        "q_emb_ours": f"{ours.n_vocab:,} × {GPT2_SMALL_WIDTH} = {ours.n_vocab * GPT2_SMALL_WIDTH:,}",
        "q_emb_gpt2": f"{gpt2.n_vocab:,} × {GPT2_SMALL_WIDTH} = {gpt2.n_vocab * GPT2_SMALL_WIDTH:,}",
        "q_para": both(para), "q_reverse": tokens_md(gpt2, ".DefaultCellStyle"),
        "q_languages": "\n".join(f"- {lang} `{t}`: GPT-2 {len(gpt2.encode_ordinary(t))} tokens, ours "
                                 f"{len(ours.encode_ordinary(t))}" for lang, t in (("English", en), ("Chinese", zh))),
        "q_arithmetic": "\n".join(f"- `{t}`: {tokens_md(gpt2, t)}"
                                  for t in ["127 + 677 = 804", "1275 + 6773 = 8048", "12345678"]),
        "q_code": code, "q_code_tokens": both(code),
        "q_eot_id": str(gpt2.encode(EOT, allowed_special="all")),
        "q_eot_policy": eot_policy, "q_eot_plain": tokens_md(gpt2, "<|endoftext|>"),
        "q_magikarp": tokens_md(gpt2, " SolidGoldMagikarp"),
        "q_yaml": (f"- JSON: GPT-2 {n_js}, ours {len(ours.encode_ordinary(js))}\n"
                   f"- YAML: GPT-2 {n_ya}, ours {len(ours.encode_ordinary(ya))}"),
        "q_yaml_denser": "YAML" if n_ya < n_js else "JSON",
        "q_egg": "; ".join(f"`{v!r}` → {gpt2.encode_ordinary(v)}" for v in ["egg", " egg", "Egg", " EGG"]),
    }
