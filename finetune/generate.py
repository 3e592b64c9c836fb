"""Responses of the original, fully finetuned and LoRA models to the same held-out instructions, side by side.

    python finetune/generate.py --base runs/cpu/pretrain/hf --full SWEEP/r0/model --lora SWEEP/r8/adapter \
        --instructions PART --out generations.json       # PART: a partition folder (partition.py)
    python finetune/generate.py --base gpt2 --lora gpt2+path/to/adapter --greedy --out out.json

LoRA models are merged (merge()) before generating. Every model gets the same left-padded batches and seeds.
Writes FILE.json (schema in README.md, "generate.py") and FILE.md beside it (the same, readable).
"""
import argparse
import glob
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import data as alpaca
import lora
from ddp import device_problem, setup_ddp
from fileio import OutputError, atomic_write_json, atomic_write_text, claim_output_file
from lora import DTYPES, autocast_for, load_model, model_shape
from partition import INSTRUCTIONS_FILE

FORMAT, VERSION = "llmhw-generations", 2
GENERATIONS_KIND = "generations"  # the output file's top-level "kind" (fileio.claim_output_file)
# Without --instructions: 20 instructions written for this project, so no Alpaca record holds them (tested).
BUILTIN_INSTRUCTIONS = Path(__file__).resolve().parent / "builtin_instructions.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="the original model: HF folder or hub name (required)")
    p.add_argument("--full", help="a fully finetuned HF model folder")
    p.add_argument("--lora", action="append", default=[], help="adapter folder or BASE+ADAPTER; repeatable")
    p.add_argument("--instructions", help="partition folder or .json/.jsonl/.txt file (default: 20 built-in ones)")
    p.add_argument("--template", default="homework", help=f"prompt template: {sorted(alpaca.TEMPLATES)}")
    p.add_argument("--max_new_tokens", type=int, default=128, help="most tokens per response (see README.md)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    p.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling: keep the top tokens of this mass")
    p.add_argument("--top_k", type=int, default=50, help="sample among the k likeliest tokens (0 = all)")
    p.add_argument("--seed", type=int, default=42, help="random seed (the batch at position k: seed + k)")
    p.add_argument("--batch_size", type=int, default=8, help="instructions generated together (left-padded)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16 autocast on CUDA, as train.py), float32, bfloat16")
    p.add_argument("--allow_other_base", action="store_true", help="apply an adapter that records another base")
    p.add_argument("--data_dir", help="data directory (GPT-2 tokenizer for model folders without one)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "generations.json"),
                   help="FILE.json to write (FILE.md beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out of generate.py")
    cfg = p.parse_args(argv)  # every flag checked before any model file is read; one line naming the flag
    if not cfg.base:
        raise ValueError("--base is required")
    for name, ok, what in (("max_new_tokens", cfg.max_new_tokens > 0, "> 0"), ("top_k", cfg.top_k >= 0, ">= 0"),
                           ("temperature", math.isfinite(cfg.temperature) and cfg.temperature >= 0,
                            "a finite number >= 0"), ("top_p", 0 < cfg.top_p <= 1, "in (0, 1]"),
                           ("batch_size", cfg.batch_size > 0, "> 0"),
                           ("template", cfg.template in alpaca.TEMPLATES, f"one of {sorted(alpaca.TEMPLATES)}"),
                           ("dtype", cfg.dtype in DTYPES, f"one of {', '.join(DTYPES)}")):
        if not ok:
            raise ValueError(f"--{name} must be {what}, got {getattr(cfg, name)!r}")
    if problem := device_problem(cfg.device):
        raise ValueError(problem)
    if cfg.full and not Path(cfg.full).is_dir():
        raise FileNotFoundError(f"--full {cfg.full}: no such model folder")
    if Path(cfg.out).suffix != ".json":
        raise ValueError(f"--out {cfg.out} must end in .json (the .md is written beside it)")
    return cfg


def instructions_file(path: str) -> Path:
    p = Path(path)
    return p / INSTRUCTIONS_FILE if p.is_dir() else p


def read_instructions(path: str | None) -> list[dict]:
    """{instruction, input[, reference, index]} items from a partition folder or a .json/.jsonl/.txt file."""
    p = instructions_file(path or BUILTIN_INSTRUCTIONS)
    if not p.is_file():
        where = f"{path} holds no {INSTRUCTIONS_FILE}" if Path(path).is_dir() else f"{p} does not exist"
        raise FileNotFoundError(f"--instructions: {where}")
    if p.suffix in (".json", ".jsonl", ".xz"):
        items = alpaca.read_records(p)
    else:
        try:
            items = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: not UTF-8 text ({e})") from None
    if not items:
        raise ValueError(f"{p}: no instructions")
    items = alpaca.check_records([{"instruction": it} if isinstance(it, str) else it for it in items], p,
                                 optional=("input", "output"))
    kept = (("index", "index"), ("output", "reference"))  # reference: the dataset's own answer, beside the models'
    return [{"instruction": it["instruction"], "input": it.get("input") or "",
             **{new: it[old] for old, new in kept if it.get(old) is not None}} for it in items]


def model_specs(cfg: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """(display name, model folder or hub name, adapter folder or None) for every model; checks each cheaply."""
    model_shape(cfg.base)  # a missing folder or unknown hub name fails here, before any generation
    specs = [("original", cfg.base, None)]
    if cfg.full:
        model_shape(cfg.full)
        specs.append(("full finetune", cfg.full, None))
    for spec in cfg.lora:
        base, adapter = cfg.base, spec
        if not Path(spec).is_dir() and "+" in spec:
            base, adapter = spec.rsplit("+", 1)
            model_shape(base)
        flag = "--base" if base == cfg.base else f"--lora {spec}'s base"
        name = f"LoRA r={lora.check_adapter(adapter, base, flag, cfg.allow_other_base)}"
        if any(name == n for n, _, _ in specs):  # two adapters of one rank: tell them apart by folder
            name = f"{name} ({adapter})"
        if any(name == n for n, _, _ in specs):
            raise ValueError(f"--lora {spec} is given twice")
        specs.append((name, base, adapter))
    return specs


@torch.no_grad()
def respond(model, tok, prompts: list[list[int]], cfg: argparse.Namespace, seed: int) -> list[dict]:
    """Responses to a batch of tokenized prompts, each {"text", "tokens" (EOS not counted), "words", "stop"}.
    Left-padded: generate() derives the position ids from the attention mask, so a padded prompt is computed as if
    alone. stop: "eos", "max_new_tokens", or "context" (the model's context ended first)."""
    T = max(len(p) for p in prompts)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024)
    room = min(cfg.max_new_tokens, limit - T)
    if room <= 0:
        return [{"text": "", "tokens": 0, "words": 0, "stop": "context"} for _ in prompts]
    ids = torch.tensor([[tok.pad_token_id] * (T - len(p)) + p for p in prompts], device=model.device)  # (B, T)
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts], device=model.device)   # (B, T)
    torch.manual_seed(seed)
    sample = {"do_sample": False} if cfg.greedy or cfg.temperature == 0 else {
        "do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k}
    # ids past the tokenizer's vocabulary (pretrain/ pads 50257 to 50304) decode to nothing: never emitted
    padded = list(range(len(tok), model.config.vocab_size)) or None
    out = model.generate(ids, attention_mask=mask, max_new_tokens=room, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, suppress_tokens=padded, **sample)  # (B, T + <= room)
    results = []
    for new in out[:, T:].tolist():
        stop = "max_new_tokens" if room == cfg.max_new_tokens else "context"  # unless EOS: out of room, which one
        if tok.eos_token_id in new:  # generation stops at the first EOS; a finished row is padded after it
            new, stop = new[:new.index(tok.eos_token_id)], "eos"
        text = tok.decode(new, skip_special_tokens=True).strip()
        results.append({"text": text, "tokens": len(new), "words": len(text.split()), "stop": stop})
    return results


def run_model(name: str, path: str, adapter: str | None, results: list[dict], cfg: argparse.Namespace) -> dict:
    """One model's responses, into ``results``; returns its means: lengths, the fraction of each stop reason."""
    from tqdm import tqdm

    t0 = time.time()
    device = setup_ddp(cfg.device).device  # (auto: CUDA when there is one)
    model = load_model(path, torch.device("cpu"))
    if adapter is not None:  # attached and merged into the weights: inference at the base model's cost
        lora.load_adapter(model, adapter)
        lora.merge_lora(model)
    model, tok = model.to(device).eval(), alpaca.load_tokenizer(path, cfg.data_dir, model.config.vocab_size)
    amp = autocast_for(cfg.dtype, device)  # the precision the runs trained in (fp32 weights, bf16 compute on GPU)
    prompts = tok([it["prompt"] for it in results], add_special_tokens=False)["input_ids"]
    # batches of similar prompt lengths (little padding); the order, so each batch's seed, is the same for every model
    order = sorted(range(len(results)), key=lambda i: (len(prompts[i]), i))
    with tqdm(total=len(results), desc=name, unit="instr", file=sys.stderr) as bar:
        for b in range(0, len(order), cfg.batch_size):
            chunk = order[b:b + cfg.batch_size]
            with amp():
                responses = respond(model, tok, [prompts[i] for i in chunk], cfg, cfg.seed + b)
            for i, d in zip(chunk, responses):
                results[i]["responses"][name] = d["text"]
                results[i]["details"][name] = {k: d[k] for k in ("tokens", "words", "stop")}
            bar.update(len(chunk))
    details, n = [r["details"][name] for r in results], len(results)
    stops = {key: sum(d["stop"] == stop for d in details) / n for key, stop in
             (("ended_with_eos", "eos"), ("hit_max_new_tokens", "max_new_tokens"), ("hit_context", "context"))}
    return {"responses": n, "mean_tokens": sum(d["tokens"] for d in details) / n,
            "mean_words": sum(d["words"] for d in details) / n, **stops, "seconds": round(time.time() - t0, 2)}


def portable(value: str | None, root: Path) -> str | None:
    """A local path relative to ``root`` (no machine's absolute paths); a hub name (or nothing) stays as it is."""
    if not value or not Path(value).expanduser().exists():
        return value
    return os.path.relpath(Path(value).expanduser().resolve(), root)


def markdown(result: dict) -> str:
    """FILE.md: the settings, a table of each model's length means, then every instruction with all responses."""
    lines = ["# Generations", "", f"Settings: `{json.dumps(result['config'])}`", "",
             "| model | what | mean tokens | mean words | ended with EOS | hit max_new_tokens |", "| --- " * 6 + "|"]
    for name, what in result["models"].items():
        s = result["stats"][name]
        lines.append(f"| {name} | {what} | {s['mean_tokens']:.1f} | {s['mean_words']:.1f} | "
                     f"{s['ended_with_eos']:.0%} | {s['hit_max_new_tokens']:.0%} |")
    for it in result["results"]:
        lines += ["", f"## {it['instruction']}" + (f" — {it['input']}" if it["input"] else ""), ""]
        for name, text in it["responses"].items():
            lines += [f"**{name}:**", "", "> " + (text.replace("\n", "\n> ") or "(empty)"), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    try:
        cfg = parse_args(argv)
        instructions = read_instructions(cfg.instructions)
        specs = model_specs(cfg)
        # FILE.json by fileio's rule; FILE.md beside it must not be the instructions file
        source = instructions_file(cfg.instructions or BUILTIN_INSTRUCTIONS)
        inputs = [source] + [p for _, m, a in specs for p in (m, a) if p and Path(p).expanduser().exists()]
        out = claim_output_file(cfg.out, GENERATIONS_KIND, overwrite=cfg.overwrite, inputs=inputs)
        if source.resolve() == out.with_suffix(".md"):
            raise ValueError(f"--out {cfg.out} would write over the instructions file; choose another")
        for tmp in out.parent.glob(f".{glob.escape(out.with_suffix('.md').name)}.llmhw-*.tmp"):  # a killed write
            tmp.unlink()
        results = [{**it, "prompt": alpaca.prompt_of(it, cfg.template), "responses": {}, "details": {}}
                   for it in instructions]
        models, stats, root = {}, {}, out.parent  # paths in the output are relative to its folder
        for name, path, adapter in specs:
            stats[name] = run_model(name, path, adapter, results, cfg)
            models[name] = portable(path, root) + (f" + adapter {portable(adapter, root)} (merged)" if adapter else "")
            print(f"[generate] {name}: {len(results)} responses, mean {stats[name]['mean_tokens']:.1f} tokens, "
                  f"{stats[name]['ended_with_eos']:.0%} ended with EOS, {stats[name]['seconds']:.1f} s", flush=True)
        lora_flags = [portable(a, root) if b == cfg.base else f"{portable(b, root)}+{portable(a, root)}"
                      for _, b, a in specs if a]  # (display name, base, adapter)
        config = {**vars(cfg), "out": Path(cfg.out).name, "lora": lora_flags}  # every flag, local paths relative
        config.update({k: portable(config[k], root) for k in ("base", "full", "instructions", "data_dir")})
        result = {"kind": GENERATIONS_KIND, "format": FORMAT, "version": VERSION, "config": config, "models": models,
                  "stats": stats, "results": results}
        atomic_write_json(out, result)
        atomic_write_text(out.with_suffix(".md"), markdown(result))
    except (ValueError, FileNotFoundError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"[generate] {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
