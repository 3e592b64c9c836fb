"""Benchmark the tokenizer against its anchors (HF tokenizers' trainer, tiktoken), interleaved in one run (medians);
print the ratios and write --out. Scaling runs train in a fresh process each (peak memory from Linux's /proc VmHWM).

    python bpe/bench.py                    # everything (about 1-2 minutes on 2 cores)
    python bpe/bench.py --skip_scaling     # only training on manual.txt and encode throughput
"""
import argparse
import json
import lzma
import multiprocessing
import os
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import fileio
from tokenizer import Tokenizer, gpt2_encoding

HERE = Path(__file__).resolve().parent
CONTENDERS = [("ours", "none"), ("ours", "gpt2"), ("hf", "gpt2")]  # (trainer, pattern) of the scaling runs


def race(fns: dict, repeat: int) -> tuple[dict, dict]:
    """({name: median seconds}, {name: last result}) over ``repeat`` rounds, round-robin so load hits all alike."""
    times, results = {name: [] for name in fns}, {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, results


def machine() -> str:
    """CPU model, widest vector ISA, threads and load: what a CPU timing means nothing without."""
    info = Path("/proc/cpuinfo").read_text()
    cpu, isa = re.search(r"model name\s*:\s*(.*)", info), [f for f in ("avx512f", "avx2", "asimd") if f in info.split()]
    return (f"{cpu[1] if cpu else 'unknown CPU'}, {(isa or ['no AVX2'])[0]}, {os.cpu_count()} threads, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def hf_train(text: str, vocab_size: int):
    """HF tokenizers' BpeTrainer, byte-level (all 256 bytes in the alphabet, GPT-2 regex split), like ours."""
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def train_once(text: str, trainer: str, pattern: str, vocab_size: int) -> dict:
    """Run in a fresh process: train on the text; its time and peak memory (VmHWM: ru_maxrss would carry the
    parent's peak over exec)."""
    def peak_rss_mb() -> float:
        return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1]) / 1024
    base, t0 = peak_rss_mb(), time.perf_counter()
    Tokenizer(pattern).train(text, vocab_size) if trainer == "ours" else hf_train(text, vocab_size)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base}


def alpaca_text(data_dir) -> bytes:
    """Alpaca's instruction/input/output texts: the offline .xz copy, else the original JSON (downloadable)."""
    try:
        xz = fileio.find("alpaca/alpaca_data.json.xz", data_dir, download=False)  # an offline copy only
        records = json.loads(lzma.decompress(xz.read_bytes()))
    except fileio.DataFileNotFound:
        records = json.loads(fileio.find("alpaca/alpaca_data.json", data_dir).read_bytes())
    return "\n\n".join("\n".join(v for v in (r["instruction"], r["input"], r["output"]) if v)
                       for r in records).encode("utf-8")


def bench_scaling(data_dir, sizes_mb, vocab_size: int) -> dict:
    text, rows, ratios = alpaca_text(data_dir), [], {}
    pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), max_tasks_per_child=1)  # fresh: own peak
    for trainer, pattern in CONTENDERS:
        for mb in sorted(sizes_mb):
            piece = text[:int(mb * 1_000_000)].decode("utf-8", errors="ignore")
            r = pool.submit(train_once, piece, trainer, pattern, vocab_size).result()
            rows.append({"mb": mb, "trainer": trainer, "pattern": pattern, **r})
            print(f"  {mb:>5} MB  {trainer:<4} {pattern:<5} {r['seconds']:7.2f} s   peak RSS "
                  f"{r['peak_rss_mb']:7.1f} MB (before training {r['rss_before_mb']:.1f} MB)", flush=True)
        if len(sizes_mb) > 1:  # largest over smallest
            ratios[f"scaling_{trainer}_{pattern}_time_ratio"] = r["seconds"] / rows[-len(sizes_mb)]["seconds"]
    pool.shutdown()
    return {"scaling": rows, **ratios}


def bench_encode(data_dir, repeat: int) -> dict:
    text = "".join(fileio.find(name, data_dir).read_text(encoding="utf-8")
                   for name in ("webtext/wikitext2_valid.txt", "tinyshakespeare.txt"))
    ours = Tokenizer.from_gpt2_files(*(fileio.find(f"gpt2/{name}", data_dir) for name in ("encoder.json", "vocab.bpe")))
    hf, exported, ref = ours.to_hf(), ours.to_tiktoken(), gpt2_encoding(data_dir)   # the exports, the reference

    def cold():
        ours._cache.clear()
        return ours.encode_ordinary(text)

    t, ids = race({"tiktoken": lambda: ref.encode_ordinary(text), "ours_python_cold": cold,
                   "ours_python_warm": lambda: ours.encode_ordinary(text),
                   "ours_tiktoken_export": lambda: exported.encode_ordinary(text),
                   "ours_hf_export": lambda: hf.encode(text).ids}, repeat)
    mb = len(text.encode("utf-8")) / 1e6
    res = {"text_mb": mb, "identical_ids": all(v == ids["tiktoken"] for v in ids.values()),
           "tiktoken_mb_s": mb / t["tiktoken"]}
    for name in [n for n in t if n != "tiktoken"]:   # against tiktoken timed in the same rounds
        res[f"{name}_mb_s"], res[f"{name}_over_tiktoken"] = mb / t[name], t["tiktoken"] / t[name]
    return res


def bench_training(text: str, vocab_size: int, repeat: int) -> dict:
    t, _ = race({"hf": lambda: hf_train(text, vocab_size), "none": lambda: Tokenizer("none").train(text, vocab_size),
                 "gpt2": lambda: Tokenizer("gpt2").train(text, vocab_size)}, repeat)
    return {"hf_bytelevel_s": t["hf"], "ours_none_s": t["none"], "ours_none_over_hf": t["none"] / t["hf"],
            "ours_gpt2_s": t["gpt2"], "ours_gpt2_over_hf": t["gpt2"] / t["hf"]}


def show(results: dict) -> None:
    for name, value in results.items():
        print(f"  {name:<36} {value:.3f}" if isinstance(value, float) else f"  {name:<36} {value}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=None)
    p.add_argument("--vocab_size", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3, help="timed rounds; the median is reported")
    p.add_argument("--scaling_mb", type=float, nargs="*", default=[1, 10])
    p.add_argument("--skip_scaling", action="store_true")
    p.add_argument("--out", default=str(HERE.parent / "runs" / "bpe_bench" / "bench.json"),
                   help="JSON output (default: apart from train.py's output set)")
    args = p.parse_args(argv)
    results = {"cpu_count": os.cpu_count(), "machine": machine()}
    print(f"machine: {results['machine']}")

    manual = fileio.find("bpe/manual.txt", args.data_dir).read_text(encoding="utf-8")
    print(f"== training on manual.txt, vocab {args.vocab_size}, median of {args.repeat} (target: ours <= 2x HF)")
    show(results.setdefault("train_manual", bench_training(manual, args.vocab_size, args.repeat)))
    if not args.skip_scaling:
        print(f"== scaling on Alpaca texts ({' and '.join(f'{mb:g}' for mb in args.scaling_mb)} MB), vocab "
              f"{args.vocab_size}, a fresh process each (target: 10x text <= 12x time, peak <= 1 GiB)")
        results.update(bench_scaling(args.data_dir, args.scaling_mb, args.vocab_size))
        show({k: v for k, v in results.items() if k.endswith("_time_ratio")})
    print("== encode throughput, GPT-2 vocabulary, wikitext2 valid + tinyshakespeare (target: pure Python >= 0.125x "
          "tiktoken, tiktoken export >= 0.9x)")
    show(results.setdefault("encode_gpt2", bench_encode(args.data_dir, args.repeat)))
    fileio.atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
