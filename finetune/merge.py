"""Merge a LoRA adapter into its base model: a standalone Hugging Face model folder, no LoRA code needed to load it.

    python finetune/merge.py --base runs/cpu/pretrain/hf --adapter SWEEP/r8/adapter --output_dir merged/r8
    python -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('merged/r8')"

The adapter may be ours or PEFT's (whatever lora.load_adapter reads). Each adapted layer becomes a plain layer
holding W + s·L·R (lora.merge_and_unload), so the folder has the base model's architecture, parameter names and
shapes; its logits equal PEFT's ``PeftModel.from_pretrained(base, adapter).merge_and_unload()`` (tested to 1e-5).

Writes, as one set (built aside and swapped in): config.json, model.safetensors, the base's tokenizer files (GPT-2's
from the data directory if the base folder has none) and merge.json
{"format": "llmhw-merged-model", "version": 1, "base", "adapter", "adapter_config": {rank, scaling, ...}}.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import data as alpaca
import lora
from fileio import OutputError, atomic_dir, claim_output_dir
from flags import add_flags, given
from models import load_model, model_shape

FORMAT, VERSION = "llmhw-merged-model", 1
KIND = "merged model"  # what --output_dir may hold to be replaced (fileio.claim_output_dir): these names only
MERGED_FILES = ("merge.json", "config.json", "generation_config.json", "model*.safetensors",
                "model.safetensors.index.json", "tokenizer*.json", "vocab.json", "merges.txt",
                "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")


@dataclass
class MergeConfig:
    """Flags of merge.py (checked in validate(), before the model loads)."""
    base: str | None = field(default=None, metadata={"help": "the base model: HF folder or hub name (required)"})
    adapter: str | None = field(default=None, metadata={"help": "adapter folder, ours or PEFT's (required)"})
    output_dir: str | None = field(default=None, metadata={"help": "the merged model folder to write (required)"})
    allow_other_base: bool = field(default=False, metadata={"help": "merge even if the adapter records another "
                                                                    "base model"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing non-empty --output_dir"})
    data_dir: str | None = field(default=None, metadata={"help": "data directory (GPT-2 tokenizer for a base folder "
                                                                 "without one)"})

    def validate(self) -> "MergeConfig":
        for name in ("base", "adapter", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        lora.adapter_rank(self.adapter)  # an adapter folder at all (one line otherwise)
        lora.check_adapter_base(self.adapter, self.base, "--base", self.allow_other_base)
        claim_output(self)
        model_shape(self.base)  # a missing folder or unknown hub name: one line, before the weights load
        return self


def claim_output(cfg: MergeConfig) -> Path:
    """--output_dir, checked at start-up: the swap replaces the whole folder, so it may hold only an earlier merged
    model (with --overwrite), never an input or a user's file (fileio's rule); nothing is created here."""
    base = cfg.base if Path(cfg.base).expanduser().exists() else None  # a hub name is no folder to protect
    return claim_output_dir(cfg.output_dir, KIND, MERGED_FILES, overwrite=cfg.overwrite, inputs=[base, cfg.adapter],
                            flag="--output_dir").path


def merged_model(cfg: MergeConfig):
    """The base with the adapter folded into its weights, as plain transformers layers; and the adapter's config."""
    model = load_model(cfg.base, torch.device("cpu"))
    model, adapter_cfg = lora.load_adapter(model, cfg.adapter)  # wrong shapes / modules: one-line ValueError
    lora.merge_and_unload(model)
    return model.eval(), adapter_cfg


def write_merged(cfg: MergeConfig, model, tokenizer, adapter_cfg) -> Path:
    """config.json, model.safetensors, tokenizer files and merge.json, swapped in as one folder."""
    out = claim_output(cfg)
    info = {"format": FORMAT, "version": VERSION, "base": cfg.base, "adapter": str(Path(cfg.adapter).resolve()),
            "adapter_config": asdict(adapter_cfg)}
    with atomic_dir(out, KIND) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "merge.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv=None) -> Path:
    """Check, load base + adapter, merge, write; returns the output folder."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, MergeConfig)
    try:
        cfg = MergeConfig(**given(p.parse_args(argv), MergeConfig)).validate()
        model, adapter_cfg = merged_model(cfg)
        tokenizer = alpaca.load_tokenizer(cfg.base, cfg.data_dir, model.config.vocab_size)
        out = write_merged(cfg, model, tokenizer, adapter_cfg)
    except (ValueError, FileNotFoundError, OutputError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"[merge] {cfg.adapter} (rank {adapter_cfg.lora_dim}, {len(adapter_cfg.target_modules)} modules) merged "
          f"into {cfg.base} -> {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
