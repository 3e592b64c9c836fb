"""Merge a LoRA adapter into its base model: a standalone Hugging Face model folder, no LoRA code needed to load it.

    python finetune/merge.py --base runs/cpu/pretrain/hf --adapter SWEEP/r8/adapter --out_dir merged/r8
    python -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('merged/r8')"

The adapter may be ours or PEFT's. Each adapted layer becomes a plain layer holding W + s·L·R, so the folder has the
base model's architecture and names; its logits equal PEFT's ``merge_and_unload()``. Files: finetune/README.md.
"""
import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

import data as alpaca
import lora
from fileio import OutputError, atomic_dir, claim_output_dir

FORMAT, VERSION = "llmhw-merged-model", 1
MERGED_KIND = "merged model"  # what --out_dir may hold to be replaced (fileio.claim_output_dir): these names only
MERGED_FILES = ("merge.json", "config.json", "generation_config.json", "model*.safetensors",
                "model.safetensors.index.json", "tokenizer*.json", "vocab.json", "merges.txt",
                "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="the base model: HF folder or hub name (required)")
    p.add_argument("--adapter", help="adapter folder, ours or PEFT's (required)")
    p.add_argument("--out_dir", help="the merged model folder to write (required)")
    p.add_argument("--allow_other_base", action="store_true", help="merge even if the adapter records another base")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier merged model in --out_dir")
    p.add_argument("--data_dir", help="data directory (GPT-2 tokenizer for a base folder without one)")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    try:  # first what needs no weights: the flags, the adapter and its base, the output folder (fileio's rule)
        for name in ("base", "adapter", "out_dir"):
            if not getattr(args, name):
                raise ValueError(f"--{name} is required")
        lora.check_adapter(args.adapter, args.base, "--base", args.allow_other_base)  # an adapter of that base
        base = args.base if Path(args.base).expanduser().exists() else None  # a hub name is no folder to protect
        out = claim_output_dir(args.out_dir, MERGED_KIND, MERGED_FILES, overwrite=args.overwrite,
                               inputs=[base, args.adapter]).path
        model, adapter_cfg = lora.load_adapter(lora.load_model(args.base, torch.device("cpu")), args.adapter)
        lora.merge_and_unload(model)  # every adapted layer a plain one holding W + s·L·R
        tokenizer = alpaca.load_tokenizer(args.base, args.data_dir, model.config.vocab_size)
        info = {"format": FORMAT, "version": VERSION, "base": args.base, "adapter": str(Path(args.adapter).resolve()),
                "adapter_config": asdict(adapter_cfg)}
        with atomic_dir(out, MERGED_KIND) as tmp:
            model.eval().save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / "merge.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    except (ValueError, FileNotFoundError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"[merge] {args.adapter} (rank {adapter_cfg.lora_dim}, {len(adapter_cfg.target_modules)} modules) merged "
          f"into {args.base} -> {out}")
    return out


if __name__ == "__main__":
    main()
