"""Hugging Face export: a checkpoint (run folder, ``latest`` or any ``ckpt_NNNNNN.pt``) -> a folder that
``transformers.AutoModelForCausalLM`` and ``AutoTokenizer`` load (config.json, model.safetensors, tokenizer files).

    python pretrain/export.py pretrain/output/tiny-cpu --out DIR                  # the latest checkpoint
    python pretrain/export.py pretrain/output/tiny-cpu/ckpt_000200.pt --out DIR   # an intermediate step

--out is new, empty, or an earlier export (replaced only with --overwrite); a run folder, a data set or any folder
holding a user's file is refused in one line, and nothing is deleted.

train.py exports its final model the same way (save_hf_with_tokenizer) into <out_dir>/hf.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import text_tokenizer
from checkpoint import CheckpointError, resolve_checkpoint
from fileio import OutputError, claim_output_dir
from modeling_gpt2 import GPT, HF_KIND, HF_NAMES
from models import model_from_checkpoint, tokenizer_dir


def save_hf_with_tokenizer(model: GPT, out_dir: Path, tok_dir: Path, eos_token_id: int | None) -> Path:
    """model.safetensors + config.json + the HF tokenizer files of ``tok_dir``, swapped in as one folder."""
    files = sorted(p for p in Path(tok_dir).iterdir() if p.is_file())
    return model.save_hf(out_dir, eos_token_id=eos_token_id, extra_files=files)


def export_checkpoint(path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Export the checkpoint at ``path`` with the tokenizer of its run folder. ``out_dir`` must be new, empty or an
    earlier export (then only with ``overwrite``): a run folder or a user's files are refused, nothing deleted."""
    ckpt_file = resolve_checkpoint(path)
    claim_output_dir(out_dir, HF_KIND, HF_NAMES, overwrite=overwrite, inputs=[ckpt_file, tokenizer_dir(path)],
                     flag="--out")
    model, _ = model_from_checkpoint(ckpt_file)
    tok_dir = tokenizer_dir(path)
    tok = text_tokenizer.load(tok_dir)
    return save_hf_with_tokenizer(model, Path(out_dir), tok_dir, tok.eot_id)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run folder, its 'latest' pointer, or a ckpt_NNNNNN.pt file")
    p.add_argument("--out", required=True, help="output folder: new, empty, or an earlier export (with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    args = p.parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out, args.overwrite)
    except (CheckpointError, OutputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"exported {args.checkpoint} -> {out}")
    return out


if __name__ == "__main__":
    main()
