"""Train the homework's byte-level BPE tokenizer and write every artifact the rest of the project uses.

    python bpe/train.py                       # the homework: manual.txt, vocab 1024, raw bytes (pattern none)
    python bpe/train.py --input webtext/wikitext2_valid.txt more.txt --vocab_size 4096 --pattern gpt2 \\
        --special '<|endoftext|>' --out_dir runs/tok          # a tokenizer for pretraining (pretrain/prepare.py)

Writes one output set into --out_dir (default bpe/output/, next to this file), built aside and swapped in whole:
  tokenizer.model          our versioned format (Tokenizer.load)
  vocab.txt                readable vocabulary: id, token, the merge that made it, hex bytes
  tokenizer.json           Hugging Face tokenizer, same ids as ours
  tokenizer_config.json    \\ with tokenizer.json: a folder transformers.AutoTokenizer.from_pretrained loads
  special_tokens_map.json  /
  output.log               the homework's log: first/last 10 tokens, round trip, compression, comparison, time
  summary.json             the same figures, machine-readable (schema in README.md)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datadir
import fileio
import homework
import outputs
from gpt2files import gpt2_encoding
from tokenizer import PATTERNS, Tokenizer

HERE = Path(__file__).resolve().parent
SUMMARY_FORMAT, SUMMARY_VERSION = "llmhw-bpe-summary", 2
# The comparison paragraphs: the homework's own two (data directory), unless --english / --chinese give others.
HOMEWORK_PARAGRAPHS = {"english": "bpe/homework_english.txt", "chinese": "bpe/homework_chinese.txt"}
MAX_VOCAB = 1 << 24  # the trainer packs a pair of ids into one int64 as left * 2**24 + right


@dataclass
class TrainConfig:
    """Command-line settings, validated once in ``parse_args`` and ``read_inputs`` (where input enters)."""
    data_dir: str | None = None
    inputs: list[str] = field(default_factory=lambda: ["bpe/manual.txt"])
    vocab_size: int = 1024
    pattern: str = "none"  # the homework trained on raw bytes, with no pre-splitting
    special: list[str] = field(default_factory=list)
    out_dir: str = str(HERE / "output")
    english: str = HOMEWORK_PARAGRAPHS["english"]
    chinese: str = HOMEWORK_PARAGRAPHS["chinese"]
    model_max_length: int = 1024
    overwrite: bool = False


def parse_args(argv=None) -> TrainConfig:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=d.data_dir, help="data directory (else $LLMHW_DATA_DIR)")
    p.add_argument("--input", nargs="+", default=d.inputs, dest="inputs",
                   help="training files: names under the data directory (bpe/manual.txt) or paths")
    p.add_argument("--vocab_size", type=int, default=d.vocab_size, help="total ids: 256 bytes + merges + specials")
    p.add_argument("--pattern", choices=sorted(PATTERNS), default=d.pattern, help="pre-split regex (none = raw bytes)")
    p.add_argument("--special", nargs="*", default=d.special, help="special tokens, e.g. '<|endoftext|>'")
    p.add_argument("--out_dir", default=d.out_dir, help="output folder (default: bpe/output next to this script)")
    p.add_argument("--english", default=d.english, help="English comparison paragraph (file or data name)")
    p.add_argument("--chinese", default=d.chinese, help="Chinese comparison paragraph (file or data name)")
    p.add_argument("--model_max_length", type=int, default=d.model_max_length,
                   help="model_max_length in tokenizer_config.json (the context length of the model it serves)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out_dir")
    cfg = TrainConfig(**vars(p.parse_args(argv)))
    bad = [s for s in cfg.special if not s or s.isspace()]
    if bad or len(set(cfg.special)) != len(cfg.special):
        p.error(f"--special: special tokens must be distinct, non-blank strings, got {cfg.special!r}")
    if not 256 + len(cfg.special) <= cfg.vocab_size <= MAX_VOCAB:
        p.error(f"--vocab_size {cfg.vocab_size} is out of range: need 256 bytes + {len(cfg.special)} special "
                f"tokens = {256 + len(cfg.special)} at least, {MAX_VOCAB} at most")
    if cfg.model_max_length < 1:
        p.error(f"--model_max_length {cfg.model_max_length} must be positive")
    return cfg


def resolve(name: str, data_dir: str | None) -> Path:
    """A real file path as given, else a name under the data directory (datadir.find's clear error if neither)."""
    path = Path(name).expanduser()
    if path.is_dir():
        raise SystemExit(f"error: {path} is a folder; give a text file")
    return path.resolve() if path.is_file() else datadir.find(name, data_dir)


def read_text(path: Path) -> str:
    """The file's exact text, decoded strictly (CRLF kept: a tokenizer must see the real bytes); empty refused."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SystemExit(f"error: {path}: cannot read it ({e.strerror or e})") from None
    if not data:
        raise SystemExit(f"error: {path} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 4]!r})") from None


def read_inputs(cfg: TrainConfig) -> tuple[list[Path], str, dict[str, Path], dict[str, str]]:
    """Every input, the comparison paragraphs included, found and decoded before any work (one line if bad)."""
    try:
        paths = [resolve(name, cfg.data_dir) for name in cfg.inputs]
        sample_paths = {"english": resolve(cfg.english, cfg.data_dir), "chinese": resolve(cfg.chinese, cfg.data_dir)}
    except datadir.DataFileNotFound as e:
        raise SystemExit(f"error: {e}") from None
    text = "\n".join(read_text(p) for p in paths)  # files joined by a newline, as separate documents
    return paths, text, sample_paths, {k: read_text(p) for k, p in sample_paths.items()}


def train_tokenizer(cfg: TrainConfig, text: str) -> tuple[Tokenizer, float]:
    t0 = time.perf_counter()
    tok = Tokenizer(cfg.pattern).train(text, cfg.vocab_size, special_tokens=cfg.special, verbose=True)
    return tok, time.perf_counter() - t0


def compare(tok: Tokenizer, enc, samples: dict[str, str], sample_paths: dict[str, Path], published: bool) -> dict:
    """Token counts of each paragraph: ours, GPT-2's, and the homework's published figure (on its own paragraphs)."""
    return {k: {"ours": len(tok.encode(s, disallowed_special=())), "gpt2": len(enc.encode(s, disallowed_special=())),
                "homework": homework.PUBLISHED["ours"][k] if published else None,
                "chars": len(s), "bytes": len(s.encode("utf-8")), "source": str(sample_paths[k])}
            for k, s in samples.items()}


def is_published(sample_paths: dict[str, Path], data_dir: str | None) -> bool:
    """Whether the paragraphs are the homework's own (so its published counts apply to them)."""
    try:
        return all(sample_paths[k].read_bytes() == datadir.find(name, data_dir).read_bytes()
                   for k, name in HOMEWORK_PARAGRAPHS.items())
    except datadir.DataFileNotFound:
        return False


def analyse_homework(cfg: TrainConfig, tok: Tokenizer, text: str, samples: dict[str, str], published: bool):
    """The homework's tokenizer re-run on the same corpus and measured (homework.py), where its setup applies."""
    data = text.encode("utf-8")
    reason = homework.skip_reason(cfg.pattern, cfg.special, len(data), cfg.vocab_size)
    if reason:
        return {"schema": homework.SCHEMA, "skipped": reason}
    print("re-running the homework's tokenizer for the comparison (homework.py) ...")
    return homework.analyse(data, cfg.vocab_size, tok, samples, published)


def build_summary(cfg, tok, paths, text, train_seconds, check, comparison, analysis) -> dict:
    learned = sorted(tok.vocab)
    corpus_bytes = check["bytes"]
    return {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION, "config": asdict(cfg),
        "vocab_size": tok.vocab_size, "pattern": cfg.pattern, "special_tokens": tok.special_tokens,
        "inputs": [str(p) for p in paths], "train_seconds": round(train_seconds, 3), "corpus_bytes": corpus_bytes,
        "n_tokens": check["tokens"], "bytes_per_token": round(corpus_bytes / max(check["tokens"], 1), 4),
        "roundtrip_ok": check["ok"], "roundtrip_pieces": check["pieces"], "roundtrip_seconds": check["seconds"],
        "n_merges": len(tok.merges),
        "first_tokens": outputs.token_rows(tok, learned[:10]), "last_tokens": outputs.token_rows(tok, learned[-10:]),
        "comparison": comparison, "homework": analysis,
        "hf": outputs.hf_special_roles(tok.special_tokens),
        "files": dict(outputs.FILES),
    }


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    paths, text, sample_paths, samples = read_inputs(cfg)
    try:
        out = outputs.claim_out_dir(Path(cfg.out_dir), paths + list(sample_paths.values()), cfg.overwrite)
    except fileio.OutputError as e:
        raise SystemExit(f"error: {e}") from None
    try:  # found before training: the comparison needs GPT-2's files
        enc = gpt2_encoding(cfg.data_dir)
    except (datadir.DataFileNotFound, ValueError) as e:  # missing, or damaged (gpt2files names the files)
        raise SystemExit(f"error: {e}") from None

    tok, train_seconds = train_tokenizer(cfg, text)
    hf_json = outputs.hf_json_or_exit(tok)  # a special token HF cannot hold stops here, before any file is written
    check = outputs.roundtrip(tok, text)
    published = is_published(sample_paths, cfg.data_dir)
    comparison = compare(tok, enc, samples, sample_paths, published)
    analysis = analyse_homework(cfg, tok, text, samples, published)
    summary = build_summary(cfg, tok, paths, text, train_seconds, check, comparison, analysis)
    report = outputs.render_log(summary, requested_vocab=cfg.vocab_size)
    print(report, end="")

    try:
        outputs.write_set(out, tok, hf_json, summary, report, cfg.model_max_length)
    except fileio.OutputError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out}/{{{','.join(outputs.FILES.values())}}}")
    if not check["ok"]:
        sys.exit("error: round trip failed")
    return summary


if __name__ == "__main__":
    main()
