"""Train the homework's byte-level BPE tokenizer and write every artifact the rest of the project uses.

    python bpe/train.py                       # the homework: manual.txt, vocab 1024, raw bytes (pattern none)
    python bpe/train.py --input tinyshakespeare.txt my.txt --vocab_size 4096 --pattern gpt4 --special "<|endoftext|>"

Writes into --out_dir (default bpe/output/, next to this file), each file atomically:
  tokenizer.model  our versioned format (Tokenizer.load)
  vocab.txt        readable vocabulary: id, token, the merge that made it, hex bytes
  tokenizer.json   Hugging Face tokenizer (tokenizers.Tokenizer.from_file / PreTrainedTokenizerFast), same ids
  output.log       the homework's log: first/last 10 tokens, round trip, compression, GPT-2 comparison, time
  summary.json     the same figures, machine-readable (schema in README.md)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datadir
from tokenizer import PATTERNS, Tokenizer, atomic_write, openai_gpt2_tiktoken, render_token

HERE = Path(__file__).resolve().parent

# Built-in comparison samples (used unless --english/--chinese give files): one English and one Chinese paragraph.
ENGLISH_SAMPLE = (
    "Tokenization is the first step of every language model pipeline. A byte-level BPE tokenizer starts from the "
    "256 possible bytes and repeatedly merges the most frequent adjacent pair into a new token, so any text can be "
    "encoded without unknown symbols. The number of merges decides the vocabulary size: a larger vocabulary gives "
    "shorter sequences, but each token is seen less often during training. Graduate students should read the "
    "handbook carefully, register for courses before the deadline, and contact the graduate school office if they "
    "have questions about credits, examinations, or the thesis defense."
)
CHINESE_SAMPLE = (
    "研究生入学后，应当按照培养方案的要求，在导师指导下制定个人培养计划，并在规定时间内完成课程学习、"
    "中期考核、学位论文开题、论文撰写和答辩等环节。研究生应当遵守学校的各项规章制度，诚实守信，"
    "恪守学术道德和学术规范。如有疑问，请及时与所在院系或研究生院联系。"
)


@dataclass
class TrainConfig:
    """Command-line settings, validated once in ``parse_args``."""
    data_dir: str | None = None
    inputs: list[str] = field(default_factory=lambda: ["bpe/manual.txt"])
    vocab_size: int = 1024
    pattern: str = "none"  # the homework trained on raw bytes, with no pre-splitting
    special: list[str] = field(default_factory=list)
    out_dir: str = str(HERE / "output")
    english: str | None = None
    chinese: str | None = None


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
    p.add_argument("--english", default=None, help="English comparison sample file (default: built-in paragraph)")
    p.add_argument("--chinese", default=None, help="Chinese comparison sample file (default: built-in paragraph)")
    a = p.parse_args(argv)
    cfg = TrainConfig(**vars(a))
    if any(not s for s in cfg.special):
        p.error(f"--special: special tokens must be non-empty strings, got {cfg.special!r}")
    if cfg.vocab_size < 256 + len(cfg.special):
        p.error(f"--vocab_size {cfg.vocab_size} is too small: need at least 256 + {len(cfg.special)} special tokens")
    return cfg


def resolve(name: str, data_dir: str | None) -> Path:
    """A real file path as given, else a name under the data directory (datadir.find's clear error if neither)."""
    path = Path(name).expanduser()
    return path if path.is_file() else datadir.find(name, data_dir)


def read_text(path: Path) -> str:
    """The file's exact text: newline="" keeps CRLF / CR line ends (a tokenizer must see the real bytes)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {path} is not UTF-8 text ({e})") from None


def gpt2_tiktoken(data_dir: str | None):
    """tiktoken's gpt2 encoding built from the local GPT-2 files in the data directory (no download)."""
    return openai_gpt2_tiktoken(datadir.find("gpt2/encoder.json", data_dir), datadir.find("gpt2/vocab.bpe", data_dir))


def token_rows(tok: Tokenizer, ids) -> list[list]:
    return [[i, render_token(tok.vocab[i])] for i in ids]


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    try:  # every input file, the comparison samples included, is found before any work
        paths = [resolve(name, cfg.data_dir) for name in cfg.inputs]
        sample_paths = {k: resolve(name, cfg.data_dir) for k, name in (("english", cfg.english),
                                                                          ("chinese", cfg.chinese)) if name}
    except datadir.DataFileNotFound as e:
        raise SystemExit(f"error: {e}") from None
    text = "\n".join(read_text(p) for p in paths)
    if not text:
        raise SystemExit(f"error: the training input {', '.join(map(str, paths))} is empty")
    corpus_bytes = len(text.encode("utf-8"))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    tok = Tokenizer(cfg.pattern).train(text, cfg.vocab_size, special_tokens=cfg.special, verbose=True)
    train_seconds = time.perf_counter() - t0

    # round trip over the whole corpus; special-token strings in it are plain text here
    ids = tok.encode(text, disallowed_special=())
    roundtrip_ok = tok.decode_bytes(ids) == text.encode("utf-8")

    enc = gpt2_tiktoken(cfg.data_dir)
    samples = {"english": ENGLISH_SAMPLE, "chinese": CHINESE_SAMPLE,
               **{k: read_text(path) for k, path in sample_paths.items()}}
    comparison = {k: {"ours": len(tok.encode(s, disallowed_special=())),
                      "gpt2": len(enc.encode(s, disallowed_special=())), "chars": len(s)}
                  for k, s in samples.items()}

    learned = sorted(tok.vocab)
    summary = {
        "vocab_size": tok.vocab_size, "pattern": cfg.pattern, "special_tokens": tok.special_tokens,
        "inputs": [str(p) for p in paths], "train_seconds": round(train_seconds, 3), "corpus_bytes": corpus_bytes,
        "n_tokens": len(ids), "bytes_per_token": round(corpus_bytes / max(len(ids), 1), 4),
        "roundtrip_ok": roundtrip_ok, "n_merges": len(tok.merges),
        "first_tokens": token_rows(tok, learned[:10]), "last_tokens": token_rows(tok, learned[-10:]),
        "comparison": comparison,
        "files": {"model": "tokenizer.model", "vocab": "vocab.txt", "hf": "tokenizer.json", "log": "output.log"},
    }

    log = [f"trained on {', '.join(map(str, paths))} ({corpus_bytes:,} bytes), pattern={cfg.pattern}, "
           f"vocab_size={tok.vocab_size} ({len(tok.merges)} merges, specials {tok.special_tokens or 'none'})",
           f"training time: {train_seconds:.2f} s", "first 10 vocabulary tokens:"]
    if tok.vocab_size < cfg.vocab_size:
        log.insert(1, f"note: the corpus ran out of pairs; vocabulary is {tok.vocab_size}, not {cfg.vocab_size}")
    log += [f"  {i:>6}  {s}" for i, s in summary["first_tokens"]]
    log.append("last 10 vocabulary tokens:")
    log += [f"  {i:>6}  {s}" for i, s in summary["last_tokens"]]
    log.append(f"round trip (encode then decode the whole corpus == original): {'OK' if roundtrip_ok else 'FAILED'}")
    log.append(f"compression: {len(ids):,} tokens, {summary['bytes_per_token']:.3f} bytes/token")
    log.append("token counts, ours vs GPT-2 (tiktoken from the local GPT-2 files):")
    for k, c in comparison.items():
        log.append(f"  {k:<8} ours {c['ours']:>5}  gpt2 {c['gpt2']:>5}  ({c['chars']} chars)")
    report = "\n".join(log) + "\n"
    print(report, end="")

    try:  # before any file is written: a special token that HF's format cannot hold stops here
        hf_json = tok.to_hf().to_str(pretty=False)
    except ValueError as e:
        raise SystemExit(f"error: {e} (choose another --special)") from None
    tok.save(out / "tokenizer.model", out / "vocab.txt")
    atomic_write(out / "tokenizer.json", hf_json)
    atomic_write(out / "output.log", report)
    atomic_write(out / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(f"wrote {out}/{{tokenizer.model,vocab.txt,tokenizer.json,output.log,summary.json}}")
    if not roundtrip_ok:
        sys.exit("error: round trip failed")
    return summary


if __name__ == "__main__":
    main()
