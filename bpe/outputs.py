"""What bpe/train.py writes, and the checks around it: the output folder (refusals), the streamed round trip, the
homework log, the Hugging Face folder files, and the whole set written aside and swapped in (fileio.atomic_dir).
The output folder follows fileio's rule (claim_out_dir): only an earlier tokenizer set is ever replaced.

The summary.json schema and the guarantees are stated once, in README.md.
"""
from __future__ import annotations

import time
from pathlib import Path

import regex

import fileio
from tokenizer import Tokenizer, render_token

# Every file of one output set (role -> name). A folder holding any of them holds an earlier run's outputs.
FILES = {"model": "tokenizer.model", "vocab": "vocab.txt", "hf": "tokenizer.json",
         "hf_config": "tokenizer_config.json", "hf_special_map": "special_tokens_map.json",
         "log": "output.log", "summary": "summary.json"}
KIND = "bpe-tokenizer"  # the kind fileio's marker records in the set (claim_out_dir refuses other kinds)

# The round trip encodes the corpus in pieces of about this many characters, so memory stays bounded.
PIECE_CHARS = 1 << 20
# A piece ends after a newline between two non-space characters, or before a single space between two: GPT-2's and
# GPT-4's patterns cut there anyway (as pretrain/prepare.py's pieces), so the pieces' ids are the whole text's ids
# (tested). With pattern none merges cannot cross a cut, so a count may differ next to the cuts (noted in the log).
CUT = regex.compile(r"(?<=\S)\n(?=\S)|(?<=\S)(?= \S)")


# -- before the work ------------------------------------------------------------------------------------------------

def claim_out_dir(out: Path, inputs: list[Path], overwrite: bool) -> Path:
    """The folder this run may write (fileio's rule, before training): new, empty, or an earlier tokenizer set
    (replaced only with --overwrite); anything else (a file, a user's file, another kind of output, an input
    inside it, an unwritable place, a symlink loop) is one line. Leftovers of a killed run are removed."""
    return fileio.claim_output_dir(out, KIND, list(FILES.values()), overwrite=overwrite, inputs=inputs).path


def hf_json_or_exit(tok: Tokenizer) -> str:
    """The tokenizer.json text; a special token that HF's byte-level format cannot hold is one line."""
    try:
        return tok.to_hf().to_str(pretty=False)
    except ValueError as e:
        raise SystemExit(f"error: {e} (choose another --special)") from None


# -- the round trip, streamed ---------------------------------------------------------------------------------------

def pieces(text: str, size: int = PIECE_CHARS):
    """Consecutive pieces of about ``size`` characters, cut only at CUT (one piece if the text has no such cut)."""
    start = 0
    while start < len(text):
        m = CUT.search(text, start + size) if start + size < len(text) else None
        end = m.end() if m else len(text)
        yield text[start:end]
        start = end


def roundtrip(tok: Tokenizer, text: str, size: int = PIECE_CHARS) -> dict:
    """Encode the corpus piece by piece (special-token strings as plain text) and check decode(encode(piece)) gives
    the piece's exact bytes; memory is one piece's ids, not the corpus's. Returns tokens, ok, pieces, bytes, seconds."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    n_tokens = n_pieces = n_bytes = 0
    ok = True
    with tqdm(total=len(text), unit="char", unit_scale=True, desc="round trip") as bar:
        for piece in pieces(text, size):
            data = piece.encode("utf-8")
            ids = tok.encode(piece, disallowed_special=())
            ok = ok and tok.decode_bytes(ids) == data
            n_tokens, n_pieces, n_bytes = n_tokens + len(ids), n_pieces + 1, n_bytes + len(data)
            bar.update(len(piece))
    return {"tokens": n_tokens, "ok": ok, "pieces": n_pieces, "bytes": n_bytes,
            "seconds": round(time.perf_counter() - t0, 3)}


# -- what the files say ---------------------------------------------------------------------------------------------

def token_rows(tok: Tokenizer, ids) -> list[list]:
    return [[i, render_token(tok.vocab[i])] for i in ids]


def render_log(s: dict, requested_vocab: int) -> str:
    """The homework's log, from the summary (so the two always agree)."""
    log = [f"trained on {', '.join(s['inputs'])} ({s['corpus_bytes']:,} bytes), pattern={s['pattern']}, "
           f"vocab_size={s['vocab_size']} ({s['n_merges']} merges, specials {s['special_tokens'] or 'none'})"]
    if s["vocab_size"] < requested_vocab:
        log.append(f"note: the corpus ran out of pairs; vocabulary is {s['vocab_size']}, not {requested_vocab}")
    log.append(f"training time: {s['train_seconds']:.2f} s")
    log.append("first 10 vocabulary tokens:")
    log += [f"  {i:>6}  {t}" for i, t in s["first_tokens"]]
    log.append("last 10 vocabulary tokens:")
    log += [f"  {i:>6}  {t}" for i, t in s["last_tokens"]]
    log.append(f"round trip (encode then decode the whole corpus == original, {s['roundtrip_pieces']} piece(s)): "
               f"{'OK' if s['roundtrip_ok'] else 'FAILED'}")
    log.append(f"compression: {s['n_tokens']:,} tokens, {s['bytes_per_token']:.3f} bytes/token")
    log.append("token counts: ours, GPT-2 (tiktoken from the local GPT-2 files), the homework's published figure")
    for k, c in s["comparison"].items():
        hw = "-" if c["homework"] is None else c["homework"]
        log.append(f"  {k:<8} ours {c['ours']:>5}  gpt2 {c['gpt2']:>5}  homework {hw:>5}  ({c['chars']} chars)")
    return "\n".join(log + homework_lines(s["homework"])) + "\n"


def homework_lines(h: dict) -> list[str]:
    """The measured reasons why ours differs from the homework (summary "homework"), as log lines."""
    if "skipped" in h:
        return [f"homework re-run: skipped ({h['skipped']})"]
    a, m = h["alphabet"], h["merges"]
    paragraphs = list(h["effects"]["dropped_bytes"])
    lines = [f"homework re-run (homework.py): alphabet = {a['size']} bytes present in the corpus, so "
             f"{m['homework']} merges vs our {m['ours']}; first 10 tokens {' '.join(a['first_tokens'])} "
             f"(match published: {a['first_tokens_match_published']}); reproduces 938/113: {h['reproduces_published']}"]
    for v in h["variants"]:
        lines.append(f"  {v['name']:<22} " + "  ".join(f"{p} {v[p]:>5}" for p in paragraphs) + f"  {v['what']}")
    for e, d in h["effects"].items():
        lines.append(f"  effect {e:<15} " + "  ".join(f"{p} {d[p]:>+5}" for p in paragraphs))
    for p, mb in h["missing_bytes"].items():
        if mb["bytes"]:
            lines.append(f"  {p}: {mb['bytes']} bytes outside the homework's alphabet (chars {mb['chars']})")
    return lines


def hf_special_roles(special_tokens: dict[str, int]) -> dict:
    """transformers' special-token roles: GPT-2's convention (bos = eos = unk = <|endoftext|>, or the first special
    given); pad is a special whose name says pad, else eos (so batched encoding works out of the box)."""
    if not special_tokens:
        return {}
    names = sorted(special_tokens, key=special_tokens.get)
    eos = "<|endoftext|>" if "<|endoftext|>" in special_tokens else names[0]
    pad = next((s for s in names if "pad" in s.lower()), eos)
    return {"bos_token": eos, "eos_token": eos, "unk_token": eos, "pad_token": pad}


def hf_config(special_tokens: dict[str, int], model_max_length: int) -> dict:
    """tokenizer_config.json: what AutoTokenizer needs besides tokenizer.json (transformers 4.x does need it)."""
    roles = hf_special_roles(special_tokens)
    extra = [s for s in sorted(special_tokens, key=special_tokens.get) if s not in roles.values()]
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False,  # decode must give back the exact text, as ours does
            "add_prefix_space": False, **roles, **({"additional_special_tokens": extra} if extra else {})}


def write_set(out: Path, tok: Tokenizer, hf_json: str, summary: dict, report: str, model_max_length: int) -> None:
    """Write all files into a folder beside ``out`` and swap it in whole: a kill or a full disk leaves the earlier
    set intact at ``out`` (never files of two tokenizers side by side)."""
    with fileio.atomic_dir(out, KIND) as tmp:
        tok.save(tmp / FILES["model"], tmp / FILES["vocab"])
        fileio.atomic_write_text(tmp / FILES["hf"], hf_json)
        config = hf_config(tok.special_tokens, model_max_length)
        fileio.atomic_write_json(tmp / FILES["hf_config"], config)
        fileio.atomic_write_json(tmp / FILES["hf_special_map"],
                                 {k: v for k, v in config.items() if k.endswith("_token") or k.endswith("_tokens")})
        fileio.atomic_write_text(tmp / FILES["log"], report)
        fileio.atomic_write_json(tmp / FILES["summary"], summary)

