"""The homework's ten tokenizer questions: every example computed at build time with GPT-2's encoding (tiktoken, from
the local gpt2/encoder.json + vocab.bpe) and our tokenizer (its tokenizer.json, read by Hugging Face `tokenizers`; no
bpe/ code imported). ``question_values`` returns the template's ``q_*`` slots.
"""
from __future__ import annotations

from pathlib import Path

from gpt2files import bytes_to_unicode, gpt2_encoding

GPT2_SMALL_WIDTH = 768


class TiktokenGPT2:
    """GPT-2's encoding (tiktoken) built from the local OpenAI files."""

    def __init__(self, data_dir=None):
        self.enc = gpt2_encoding(data_dir)
        self.vocab_size = self.enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def piece(self, i: int) -> bytes:
        return self.enc.decode_single_token_bytes(i)


class FileTokenizer:
    """A tokenizer.json written by bpe/train.py, read by Hugging Face `tokenizers`."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))
        self.vocab_size = self.tok.get_vocab_size()
        self.byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def piece(self, i: int) -> bytes:
        s = self.tok.id_to_token(i)
        if all(c in self.byte_of for c in s):
            return bytes(self.byte_of[c] for c in s)
        return s.encode()  # a special token


def show_readable(t: str) -> str:
    """Make a token markdown-safe: no table pipes or backticks, spaces shown as '␣' (markdown would eat them)."""
    return str(t).replace("|", "\\|").replace("`", "'").replace(" ", "␣")


def show_piece(b: bytes) -> str:
    """A token's bytes readable inside a code span: escapes for control and partial UTF-8 bytes."""
    return show_readable(repr(b.decode("utf-8", errors="backslashreplace"))[1:-1])


def tokens_md(tok, text: str, limit: int = 40) -> str:
    ids = tok.encode(text)
    shown = " · ".join(f"`{show_piece(tok.piece(i))}`" for i in ids[:limit])
    more = f" … (+{len(ids) - limit})" if len(ids) > limit else ""
    return f"{len(ids)} token{'s' if len(ids) != 1 else ''}: {shown}{more}"


def both_md(ours, gpt2, text: str) -> str:
    return f"- GPT-2: {tokens_md(gpt2, text)}\n- ours: {tokens_md(ours, text)}"


def eot_policy(gpt2) -> str:
    """What tiktoken does with '<|endoftext|>' in user text under its default (disallow-all) policy."""
    try:
        gpt2.enc.encode("<|endoftext|>")
        return "encoded without complaint (unexpected)"
    except ValueError as e:
        return f"refused: tiktoken raises `{str(e).splitlines()[0][:90]}…`"


def text_questions(ours, gpt2) -> dict[str, str]:
    """Slots of questions 1-5."""
    s = "大模型"
    para = ("The tokenizer is a necessary and pervasive component of Large Language Models (LLMs), where it "
            "translates between strings and tokens (text chunks).")
    en, zh = "Peking University is a university in Beijing.", "北京大学是位于北京的一所大学。"
    sums = ["127 + 677 = 804", "1275 + 6773 = 8048", "12345678"]
    return {
        "q_ord_bei": str(ord("北")), "q_ord_da": str(ord("大")), "q_chr": chr(22823) + chr(27169) + chr(22411),
        "q_utf8_len": str(len(s.encode())), "q_utf8_hex": s.encode().hex(" "),
        "q_emb_ours": f"{ours.vocab_size:,} × {GPT2_SMALL_WIDTH} = {ours.vocab_size * GPT2_SMALL_WIDTH:,}",
        "q_emb_gpt2": f"{gpt2.vocab_size:,} × {GPT2_SMALL_WIDTH} = {gpt2.vocab_size * GPT2_SMALL_WIDTH:,}",
        "q_para": both_md(ours, gpt2, para),
        "q_reverse": tokens_md(gpt2, ".DefaultCellStyle"),
        "q_languages": "\n".join(f"- {lang} `{t}`: GPT-2 {len(gpt2.encode(t))} tokens, ours {len(ours.encode(t))}"
                                 for lang, t in (("English", en), ("Chinese", zh))),
        "q_arithmetic": "\n".join(f"- `{t}`: {tokens_md(gpt2, t)}" for t in sums),
    }


def code_questions(ours, gpt2) -> dict[str, str]:
    """Slots of questions 6-10."""
    code = "def f(x):\n        if x:\n            return x\n"
    js = '{"name": "GPT-2", "layers": 12, "heads": 12, "tokens": [1, 2, 3]}'
    ya = "name: GPT-2\nlayers: 12\nheads: 12\ntokens:\n  - 1\n  - 2\n  - 3\n"
    n_js, n_ya = len(gpt2.encode(js)), len(gpt2.encode(ya))
    return {
        "q_code": code, "q_code_tokens": both_md(ours, gpt2, code),
        "q_eot_id": str(gpt2.enc.encode("<|endoftext|>", allowed_special="all")),
        "q_eot_policy": eot_policy(gpt2), "q_eot_plain": tokens_md(gpt2, "<|endoftext|>"),
        "q_magikarp": tokens_md(gpt2, " SolidGoldMagikarp"),
        "q_yaml": (f"- JSON: GPT-2 {n_js}, ours {len(ours.encode(js))}\n"
                   f"- YAML: GPT-2 {n_ya}, ours {len(ours.encode(ya))}"),
        "q_yaml_denser": "YAML" if n_ya < n_js else "JSON",
        "q_egg": "; ".join(f"`{v!r}` → {gpt2.encode(v)}" for v in ["egg", " egg", "Egg", " EGG"]),
    }


def question_values(ours, gpt2) -> dict[str, str]:
    return {**text_questions(ours, gpt2), **code_questions(ours, gpt2)}
