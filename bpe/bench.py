"""Benchmark the tokenizer against its anchors, all measured in the same run, and print the ratios.

    python bpe/bench.py                    # everything (about 1-2 minutes on 2 cores)
    python bpe/bench.py --skip_scaling     # only training on manual.txt and encode throughput

1. Training on manual.txt (vocab 1024): ours (pattern none = the homework, and gpt2) vs Hugging Face `tokenizers`'
   BpeTrainer with its byte-level pre-tokenizer (GPT-2 split). Target: ours <= 2x HF.
2. Scaling on Alpaca texts (instruction/input/output joined), 1 MB and 10 MB: time and peak memory (RSS) of training,
   each run in a fresh process. Target: 10x text -> <= 12x time; peak <= 1 GiB.
3. Encode throughput (MB/s of UTF-8) with the GPT-2 vocabulary on English text: tiktoken (anchor), our pure-Python
   encoder (cold and warm chunk cache), our tiktoken export, our HF export; ids must be identical.
   Targets: pure Python >= 1/8 tiktoken; tiktoken export >= 0.9x tiktoken.
Results also go to <out_dir>/bench.json.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datadir
from fileio import atomic_write_json
from gpt2files import gpt2_encoding
from tokenizer import Tokenizer

HERE = Path(__file__).resolve().parent


def race(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Best wall time of each function over ``repeat`` rounds, run round-robin so that load from other processes on
    a shared machine hits every contender alike. Returns ({name: seconds}, {name: last result})."""
    best = {name: float("inf") for name in fns}
    results = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, results


def hf_train(text: str, vocab_size: int):
    """HF tokenizers' BpeTrainer, byte-level (all 256 bytes in the alphabet, GPT-2 regex split), like ours."""
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def alpaca_text(data_dir) -> str:
    """Alpaca's instruction/input/output texts: the offline .xz copy, else the original JSON (downloadable)."""
    try:
        with lzma.open(datadir.find("alpaca/alpaca_data.json.xz", data_dir, download=False), "rt",
                       encoding="utf-8") as f:
            records = json.load(f)
    except datadir.DataFileNotFound:
        records = json.loads(datadir.find("alpaca/alpaca_data.json", data_dir).read_text(encoding="utf-8"))
    return "\n\n".join("\n".join(v for v in (r["instruction"], r["input"], r["output"]) if v) for r in records)


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM (ru_maxrss would carry the parent's peak over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)


def child_train(path: str, pattern: str, vocab_size: int, which: str) -> None:
    """Run in a fresh process: train on the file, print time and memory as JSON."""
    text = Path(path).read_text(encoding="utf-8")
    import numpy  # noqa: F401  (imported before the baseline, as the trainer needs it)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    if which == "ours":
        Tokenizer(pattern).train(text, vocab_size)
    else:
        hf_train(text, vocab_size)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": base}))


def run_child(path: Path, pattern: str, vocab_size: int, which: str) -> dict:
    cmd = [sys.executable, __file__, "--_child", str(path), pattern, str(vocab_size), which]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(HERE)})
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_training(text: str, vocab_size: int, repeat: int) -> dict:
    t, _ = race({"hf": lambda: hf_train(text, vocab_size),
                 "none": lambda: Tokenizer("none").train(text, vocab_size),
                 "gpt2": lambda: Tokenizer("gpt2").train(text, vocab_size)}, repeat)
    out = {"hf_bytelevel_s": t["hf"]}
    for pattern in ("none", "gpt2"):
        out[f"ours_{pattern}_s"] = t[pattern]
        out[f"ours_{pattern}_over_hf"] = t[pattern] / t["hf"]
    return out


def bench_scaling(data_dir, sizes_mb, vocab_size: int) -> list[dict]:
    text = alpaca_text(data_dir).encode("utf-8")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mb in sizes_mb:
            path = Path(tmp) / f"alpaca_{mb}mb.txt"
            path.write_bytes(text[:int(mb * 1_000_000)].decode("utf-8", errors="ignore").encode("utf-8"))
            for which, pattern in (("ours", "none"), ("ours", "gpt2"), ("hf", "gpt2")):
                r = run_child(path, pattern, vocab_size, which)
                rows.append({"mb": mb, "trainer": which, "pattern": pattern, **r})
                print(f"  {mb:>5} MB  {which:<4} {pattern:<5} {r['seconds']:7.2f} s   peak RSS "
                      f"{r['peak_rss_mb']:7.1f} MB (before training {r['rss_before_mb']:.1f} MB)", flush=True)
    return rows


def bench_encode(data_dir, repeat: int) -> dict:
    from tokenizers import Tokenizer as HFTokenizer

    enc_json, vocab_bpe = datadir.find("gpt2/encoder.json", data_dir), datadir.find("gpt2/vocab.bpe", data_dir)
    ref = gpt2_encoding(data_dir)
    text = (datadir.find("webtext/wikitext2_valid.txt", data_dir).read_text(encoding="utf-8")
            + datadir.find("tinyshakespeare.txt", data_dir).read_text(encoding="utf-8"))
    mb = len(text.encode("utf-8")) / 1e6
    ours = Tokenizer.from_gpt2_files(enc_json, vocab_bpe)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_hf(Path(tmp) / "tokenizer.json")
        hf = HFTokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
    exported = ours.to_tiktoken()

    def cold():
        ours._cache.clear()
        return ours.encode_ordinary(text)

    t, ids = race({"tiktoken": lambda: ref.encode_ordinary(text), "ours_python_cold": cold,
                   "ours_python_warm": lambda: ours.encode_ordinary(text),
                   "ours_tiktoken_export": lambda: exported.encode_ordinary(text),
                   "ours_hf_export": lambda: hf.encode(text).ids}, repeat)
    res = {"text_mb": mb, "identical_ids": all(v == ids["tiktoken"] for v in ids.values()),
           "tiktoken_mb_s": mb / t["tiktoken"]}
    for name in ("ours_python_cold", "ours_python_warm", "ours_tiktoken_export", "ours_hf_export"):
        res[f"{name}_mb_s"] = mb / t[name]
        res[f"{name}_over_tiktoken"] = t["tiktoken"] / t[name]
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=None)
    p.add_argument("--vocab_size", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3, help="timed repeats; the best is reported")
    p.add_argument("--scaling_mb", type=float, nargs="*", default=[1, 10])
    p.add_argument("--skip_scaling", action="store_true")
    p.add_argument("--out_dir", default=str(HERE.parent / "runs" / "bpe_bench"),
                   help="folder for bench.json (default runs/bpe_bench/, apart from train.py's output set)")
    args = p.parse_args(argv)

    results = {"cpu_count": os.cpu_count()}
    manual = datadir.find("bpe/manual.txt", args.data_dir).read_text(encoding="utf-8")
    print(f"== training on manual.txt ({len(manual.encode()):,} bytes), vocab {args.vocab_size}, best of {args.repeat}")
    tr = results["train_manual"] = bench_training(manual, args.vocab_size, args.repeat)
    print(f"  HF tokenizers BpeTrainer (byte-level):  {tr['hf_bytelevel_s']:.3f} s")
    for pattern in ("none", "gpt2"):
        print(f"  ours, pattern {pattern:<5}:                {tr[f'ours_{pattern}_s']:.3f} s  = "
              f"{tr[f'ours_{pattern}_over_hf']:.2f}x HF  (target <= 2x)")
    if not args.skip_scaling:
        print(f"== scaling on Alpaca texts, vocab {args.vocab_size} (fresh process each)")
        rows = results["scaling"] = bench_scaling(args.data_dir, args.scaling_mb, args.vocab_size)
        lo, hi = min(args.scaling_mb), max(args.scaling_mb)
        for which, pattern in (("ours", "none"), ("ours", "gpt2"), ("hf", "gpt2")):
            t = {r["mb"]: r["seconds"] for r in rows if (r["trainer"], r["pattern"]) == (which, pattern)}
            if lo != hi:
                results[f"scaling_{which}_{pattern}_time_ratio"] = t[hi] / t[lo]
                print(f"  {which} {pattern}: {hi / lo:.0f}x text -> {t[hi] / t[lo]:.1f}x time (target <= 12x)")
    print("== encode throughput, GPT-2 vocabulary, wikitext2 valid + tinyshakespeare")
    e = results["encode_gpt2"] = bench_encode(args.data_dir, args.repeat)
    print(f"  tiktoken:                 {e['tiktoken_mb_s']:6.2f} MB/s  ({e['text_mb']:.2f} MB)")
    for name, label, target in (("ours_python_cold", "ours, pure Python, cold", ">= 0.125"),
                                ("ours_python_warm", "ours, pure Python, warm", ">= 0.125"),
                                ("ours_tiktoken_export", "ours -> tiktoken export", ">= 0.9"),
                                ("ours_hf_export", "ours -> HF tokenizers", "info")):
        print(f"  {label}: {e[f'{name}_mb_s']:6.2f} MB/s = {e[f'{name}_over_tiktoken']:.3f}x tiktoken "
              f"(target {target})")
    print(f"  identical ids: {e['identical_ids']}")
    atomic_write_json(Path(args.out_dir) / "bench.json", results)
    print(f"wrote {Path(args.out_dir) / 'bench.json'}")
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        child_train(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
