"""Train the homework's byte-level BPE tokenizer and write the files the rest of the project uses.

    python bpe/train.py                       # the homework: manual.txt, vocab 1024, raw bytes (pattern none)
    python bpe/train.py --input webtext/wikitext2_valid.txt more.txt --vocab_size 4096 --pattern gpt2 \\
        --special '<|endoftext|>' --out_dir runs/tok          # a tokenizer for pretraining (pretrain/prepare.py)

One output set in --out_dir (default bpe/output/; files and schema in README.md), built aside and swapped in whole.
Bad input (a file, a flag, a refused --out_dir) is one line on stderr and exit status 2, found before training.
"""
import argparse
import contextlib
import sys
import time
from pathlib import Path

import regex

import fileio
import homework
from tokenizer import PATTERNS, Tokenizer, gpt2_encoding, render_token

HERE = Path(__file__).resolve().parent
FILES = {"model": "tokenizer.model", "vocab": "vocab.txt", "hf": "tokenizer.json",  # role -> name of the set
         "hf_config": "tokenizer_config.json", "hf_special_map": "special_tokens_map.json",
         "log": "output.log", "summary": "summary.json"}
KIND = "bpe-tokenizer"  # the kind fileio's marker gives the set: only such a folder is ever replaced
SUMMARY_FORMAT, SUMMARY_VERSION = "llmhw-bpe-summary", 2
MAX_VOCAB = 1 << 24  # the trainer packs a pair of ids into one int64 as left * 2**24 + right
# The round trip encodes the corpus in pieces of about PIECE_CHARS characters (memory: one piece's ids). A piece ends
# after a newline or before a single space between two non-space characters: GPT-2's and GPT-4's patterns cut there
# anyway, so the ids are the whole text's (tested); with pattern none a count may differ next to the cuts.
PIECE_CHARS = 1 << 20
CUT = regex.compile(r"(?<=\S)\n(?=\S)|(?<=\S)(?= \S)")


@contextlib.contextmanager
def user_errors():
    """Bad input (a file, a flag, an output folder fileio refuses): one line on stderr, exit status 2."""
    try:
        yield
    except (ValueError, fileio.OutputError, fileio.DataFileNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def refuse(message: str):
    raise ValueError(message)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.error = refuse  # argparse's own errors too (a bad number, an unknown flag): one line, exit status 2
    p.add_argument("--data_dir", help="data directory (else $LLMHW_DATA_DIR)")
    p.add_argument("--input", nargs="+", default=["bpe/manual.txt"], dest="inputs",
                   help="training files: names under the data directory (bpe/manual.txt) or paths; joined by \\n")
    p.add_argument("--vocab_size", type=int, default=1024, help="total ids: 256 bytes + merges + specials")
    p.add_argument("--pattern", choices=sorted(PATTERNS), default="none", help="pre-split regex (none = raw bytes, "
                   "as the homework)")
    p.add_argument("--special", nargs="*", default=[], help="special tokens, e.g. '<|endoftext|>'")
    p.add_argument("--out_dir", default=str(HERE / "output"), help="output folder (default: bpe/output)")
    for lang in ("english", "chinese"):  # the homework's own paragraphs (data directory) unless others are given
        p.add_argument(f"--{lang}", default=homework.PARAGRAPHS[lang], help=f"{lang} comparison paragraph")
    p.add_argument("--model_max_length", type=int, default=1024,
                   help="model_max_length in tokenizer_config.json (the context length of the model it serves)")
    p.add_argument("--overwrite", action="store_true", help="replace the output set of an earlier run in --out_dir")
    cfg = p.parse_args(argv)
    if any(not s or s.isspace() for s in cfg.special) or len(set(cfg.special)) != len(cfg.special):
        raise ValueError(f"--special: special tokens must be distinct, non-blank strings, got {cfg.special!r}")
    if not 256 + len(cfg.special) <= cfg.vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab_size {cfg.vocab_size} is out of range: need 256 bytes + {len(cfg.special)} "
                         f"special tokens = {256 + len(cfg.special)} at least, {MAX_VOCAB} at most")
    if cfg.model_max_length < 1:
        raise ValueError(f"--model_max_length {cfg.model_max_length} must be positive")
    return cfg


def read_text(name: str, data_dir: str | None) -> tuple[Path, str]:
    """A file path, else a name under the data directory, and its exact text (strict UTF-8, CRLF kept)."""
    path = Path(name).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a text file")
    path = path.resolve() if path.is_file() else fileio.find(name, data_dir)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    if not data:
        raise ValueError(f"{path} is empty")
    try:
        return path, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 4]!r})") from None


def pieces(text: str, size: int = PIECE_CHARS):
    """Consecutive pieces of about ``size`` characters, cut only at CUT (one piece if the text has no such cut)."""
    start = 0
    while start < len(text):
        m = CUT.search(text, start + size) if start + size < len(text) else None
        end = m.end() if m else len(text)
        yield text[start:end]
        start = end


def roundtrip(tok: Tokenizer, text: str, size: int = PIECE_CHARS) -> dict:
    """Encode the corpus piece by piece (specials as text); decoding must give each piece's exact bytes back."""
    from tqdm import tqdm

    t0, ok, n_tokens, n_pieces, n_bytes = time.perf_counter(), True, 0, 0, 0
    with tqdm(total=len(text), unit="char", unit_scale=True, desc="round trip") as bar:
        for piece in pieces(text, size):
            data, ids = piece.encode("utf-8"), tok.encode(piece, disallowed_special=())
            ok &= tok.decode_bytes(ids) == data
            n_tokens, n_pieces, n_bytes = n_tokens + len(ids), n_pieces + 1, n_bytes + len(data)
            bar.update(len(piece))
    return {"tokens": n_tokens, "ok": ok, "pieces": n_pieces, "bytes": n_bytes,
            "seconds": round(time.perf_counter() - t0, 3)}


def render_log(s: dict, requested_vocab: int) -> str:
    """The homework's log, made from the summary (so the two always agree)."""
    log = [f"trained on {', '.join(s['inputs'])} ({s['corpus_bytes']:,} bytes), pattern={s['pattern']}, "
           f"vocab_size={s['vocab_size']} ({s['n_merges']} merges, specials {s['special_tokens'] or 'none'})"]
    if s["vocab_size"] < requested_vocab:
        log.append(f"note: the corpus ran out of pairs; vocabulary is {s['vocab_size']}, not {requested_vocab}")
    log.append(f"training time: {s['train_seconds']:.2f} s")
    for which in ("first", "last"):
        log += [f"{which} 10 vocabulary tokens:"] + [f"  {i:>6}  {t}" for i, t in s[f"{which}_tokens"]]
    log.append(f"round trip (encode then decode the whole corpus == original, {s['roundtrip_pieces']} piece(s)): "
               f"{'OK' if s['roundtrip_ok'] else 'FAILED'}")
    log.append(f"compression: {s['n_tokens']:,} tokens, {s['bytes_per_token']:.3f} bytes/token")
    log.append("token counts: ours, GPT-2 (tiktoken from the local GPT-2 files), the homework's published figure")
    log += [f"  {k:<8} ours {c['ours']:>5}  gpt2 {c['gpt2']:>5}  homework {c['homework'] or '-':>5}  "
            f"({c['chars']} chars)" for k, c in s["comparison"].items()]
    return "\n".join(log + homework.log_lines(s["homework"])) + "\n"


def main(argv=None) -> dict:
    # settings and inputs, all checked before any work: the corpus, the paragraphs, the output folder, GPT-2's files
    with user_errors():
        cfg = parse_args(argv)
        paths, texts = zip(*(read_text(name, cfg.data_dir) for name in cfg.inputs))
        text = "\n".join(texts)  # several files: separate documents
        para_paths, paragraphs = {}, {}
        for k in ("english", "chinese"):
            para_paths[k], paragraphs[k] = read_text(getattr(cfg, k), cfg.data_dir)
        out = fileio.claim_output_dir(cfg.out_dir, KIND, list(FILES.values()), overwrite=cfg.overwrite,
                                      inputs=[*paths, *para_paths.values()]).path
        gpt2 = gpt2_encoding(cfg.data_dir)  # the comparison's reference: tiktoken's gpt2 from the local files

    # train
    t0 = time.perf_counter()
    tok = Tokenizer(cfg.pattern).train(text, cfg.vocab_size, special_tokens=cfg.special, verbose=True)
    train_seconds = time.perf_counter() - t0
    with user_errors():  # a special token HF's format cannot hold: stop before anything is written
        tok.to_hf()

    # measure: round trip and compression, the paragraphs against GPT-2 and the homework, the homework re-run
    check = roundtrip(tok, text)
    published = homework.published_paragraphs(para_paths, cfg.data_dir)
    comparison = {k: {"ours": len(tok.encode(s, disallowed_special=())), "gpt2": len(gpt2.encode_ordinary(s)),
                      "homework": homework.PUBLISHED["ours"][k] if published else None,
                      "chars": len(s), "bytes": len(s.encode("utf-8")), "source": str(para_paths[k])}
                  for k, s in paragraphs.items()}
    data = text.encode("utf-8")
    skipped = homework.skip_reason(cfg.pattern, cfg.special, len(data), cfg.vocab_size)
    analysis = {"schema": homework.SCHEMA, "skipped": skipped} if skipped else \
        homework.analyse(data, cfg.vocab_size, tok, paragraphs, published)
    learned = sorted(tok.vocab)
    summary = {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION, "config": vars(cfg),
        "vocab_size": tok.vocab_size, "pattern": cfg.pattern, "special_tokens": tok.special_tokens,
        "inputs": [str(p) for p in paths], "train_seconds": round(train_seconds, 3), "corpus_bytes": check["bytes"],
        "n_tokens": check["tokens"], "bytes_per_token": round(check["bytes"] / max(check["tokens"], 1), 4),
        "roundtrip_ok": check["ok"], "roundtrip_pieces": check["pieces"], "roundtrip_seconds": check["seconds"],
        "n_merges": len(tok.merges),
        "first_tokens": [[i, render_token(tok.vocab[i])] for i in learned[:10]],
        "last_tokens": [[i, render_token(tok.vocab[i])] for i in learned[-10:]],
        "comparison": comparison, "homework": analysis,
        "hf": {k: v for k, v in tok.hf_config().items() if k.endswith("_token")},
        "files": dict(FILES),
    }
    log = render_log(summary, requested_vocab=cfg.vocab_size)
    print(log, end="")

    # save: every file written into a folder beside out, swapped in whole (a kill leaves the earlier set)
    with user_errors(), fileio.atomic_dir(out, KIND) as tmp:
        tok.save(tmp / FILES["model"], tmp / FILES["vocab"])
        tok.save_hf(tmp, cfg.model_max_length)  # tokenizer.json, tokenizer_config.json, special_tokens_map.json
        fileio.atomic_write_text(tmp / FILES["log"], log)
        fileio.atomic_write_json(tmp / FILES["summary"], summary)
    print(f"wrote {out}/{{{','.join(FILES.values())}}}")
    if not check["ok"]:
        sys.exit("error: round trip failed")
    return summary


if __name__ == "__main__":
    main()
