"""Responses of the original, fully finetuned and LoRA models to the same instructions, side by side.

    python finetune/generate.py --base runs/cpu/pretrain/hf --full SWEEP/r0/model --lora SWEEP/r8/adapter \
        --output generations.json
    python finetune/generate.py --base gpt2 --lora gpt2+path/to/adapter --greedy --output out.json

--lora takes an adapter folder (ours or PEFT's; its base is --base) or BASE+ADAPTER; it may be repeated. LoRA models
are merged explicitly (merge()) before generating, so they run at the base model's speed. Every model gets the same
seed per instruction. Prompts use the training template (--template, default the homework's).

Writes FILE.json:
  {"format": "llmhw-generations", "version": 1, "config": {...}, "models": {name: what it is},
   "results": [{"instruction", "input", "prompt", "responses": {name: text}}]}
and FILE.md beside it (the same, readable).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import data as alpaca
import lora
from fileio import atomic_write_json, atomic_write_text
from models import load_model

BUILTIN_INSTRUCTIONS = [
    {"instruction": "Give three tips for staying healthy.", "input": ""},
    {"instruction": "What is the capital of France?", "input": ""},
    {"instruction": "Write a short poem about the sea.", "input": ""},
    {"instruction": "Explain why the sky is blue.", "input": ""},
    {"instruction": "Translate the following sentence into French.", "input": "Good morning, my friend."},
    {"instruction": "Summarize the following text in one sentence.",
     "input": "The tokenizer splits text into tokens, the model predicts the next token, and finetuning on "
              "instructions teaches the model to answer questions instead of merely continuing text."},
]


def read_instructions(path: str | None) -> list[dict]:
    """A .json list (strings or {instruction, input} objects), a .jsonl, or a .txt file with one per line."""
    if path is None:
        return BUILTIN_INSTRUCTIONS
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--instructions file {p} does not exist")
    if p.suffix in (".json", ".jsonl", ".xz"):
        items = alpaca.read_records(p)
    else:
        items = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for i, it in enumerate(items):
        if isinstance(it, str):
            it = {"instruction": it}
        if not isinstance(it, dict) or not isinstance(it.get("instruction"), str):
            raise ValueError(f"{p}: item {i} is not a string or an object with a string 'instruction'")
        out.append({"instruction": it["instruction"], "input": it.get("input") or ""})
    if not out:
        raise ValueError(f"{p}: no instructions")
    return out


def model_specs(args) -> list[tuple[str, str, str | None]]:
    """(display name, model folder or hub name, adapter folder or None) for every model to run."""
    specs = [("original", args.base, None)]
    if args.full:
        if not Path(args.full).is_dir():
            raise FileNotFoundError(f"--full {args.full}: no such model folder")
        specs.append(("full finetune", args.full, None))
    for spec in args.lora or []:
        base, adapter = args.base, spec
        if not Path(spec).is_dir() and "+" in spec:
            base, adapter = spec.rsplit("+", 1)
        name = f"LoRA r={lora.adapter_rank(adapter)}"  # checks the folder before any model generates
        if any(name == n for n, _, _ in specs):  # two adapters of one rank: tell them apart by folder
            name = f"{name} ({adapter})"
        if any(name == n for n, _, _ in specs):
            raise ValueError(f"--lora {spec} is given twice")
        specs.append((name, base, adapter))
    return specs


def load(name: str, adapter: str | None, device: torch.device, data_dir: str | None):
    model = load_model(name, torch.device("cpu"))
    if adapter is not None:
        lora.load_adapter(model, adapter)
        lora.merge_lora(model)  # explicit: inference at the base model's cost
    tok = alpaca.load_tokenizer(name, data_dir, model.config.vocab_size)
    return model.to(device).eval(), tok


@torch.no_grad()
def respond(model, tok, prompt: str, args, seed: int) -> str:
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024)
    new = min(args.max_new_tokens, limit - ids.shape[1])
    if new <= 0:
        return ""
    torch.manual_seed(seed)
    sample = {"do_sample": False} if args.greedy else {
        "do_sample": True, "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    # A model whose vocabulary is padded past the tokenizer's (pretrain/ pads 50257 to 50304) must never emit
    # the padding ids: they decode to nothing.
    padded = list(range(len(tok), model.config.vocab_size)) or None
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, suppress_tokens=padded, **sample)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def markdown(result: dict) -> str:
    lines = ["# Generations", "", f"Settings: `{json.dumps(result['config'])}`", ""]
    for name, what in result["models"].items():
        lines.append(f"- **{name}**: {what}")
    for it in result["results"]:
        lines += ["", f"## {it['instruction']}" + (f" — {it['input']}" if it["input"] else ""), ""]
        for name, text in it["responses"].items():
            lines += [f"**{name}:**", "", "> " + (text.replace("\n", "\n> ") or "(empty)"), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the original model: HF folder or hub name")
    p.add_argument("--full", default=None, help="a fully finetuned HF model folder")
    p.add_argument("--lora", action="append", help="adapter folder (base = --base) or BASE+ADAPTER; repeatable")
    p.add_argument("--instructions", default=None, help=".json/.jsonl/.txt file (default: a built-in list)")
    p.add_argument("--template", default="homework", choices=sorted(alpaca.TEMPLATES))
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top_p", type=float, default=0.9)
    p.add_argument("--top_k", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data_dir", default=None, help="data directory (GPT-2 tokenizer for folders without one)")
    p.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "out" / "generations.json")
    args = p.parse_args(argv)
    if args.max_new_tokens <= 0 or args.temperature <= 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        p.error("need --max_new_tokens > 0, --temperature > 0, 0 < --top_p <= 1, --top_k >= 0")
    try:
        instructions = read_instructions(args.instructions)
        specs = model_specs(args)
        results = [{**it, "prompt": alpaca.prompt_of(it, args.template), "responses": {}} for it in instructions]
        models = {}
        for name, path, adapter in specs:
            t0 = time.time()
            model, tok = load(path, adapter, torch.device(args.device), args.data_dir)
            models[name] = f"{path}" + (f" + adapter {adapter} (merged)" if adapter else "")
            for i, it in enumerate(results):
                it["responses"][name] = respond(model, tok, it["prompt"], args, args.seed + i)
            print(f"[generate] {name}: {len(results)} responses in {time.time() - t0:.1f} s", flush=True)
            del model
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    config = {k: v for k, v in vars(args).items() if k not in ("output",)}
    result = {"format": "llmhw-generations", "version": 1, "config": config, "models": models, "results": results}
    atomic_write_json(args.output, result)
    atomic_write_text(args.output.with_suffix(".md"), markdown(result))
    print(f"[generate] {args.output} and {args.output.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
