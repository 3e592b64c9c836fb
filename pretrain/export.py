"""Our GPT from a training checkpoint, a HF folder or a hub name (hellaswag.py and sample.py load it here), and the
Hugging Face export: a checkpoint -> a folder that transformers' AutoModelForCausalLM and AutoTokenizer load.

    python pretrain/export.py pretrain/output/tiny-cpu --out_dir DIR                  # the latest checkpoint
    python pretrain/export.py pretrain/output/tiny-cpu/ckpt_000200.pt --out_dir DIR   # an intermediate step

--out_dir is new, empty, or an earlier export (replaced only with --overwrite); anything else is refused in one line
and nothing is deleted. Checkpoints are read only through checkpoint.py (weights_only: no code runs from the file).
"""
import argparse
import os
import sys
from pathlib import Path

from checkpoint import LATEST, CheckpointError, load_checkpoint, resolve_checkpoint
from config import CKPT_FORMAT
from fileio import OutputError, claim_output_dir
from modeling_gpt2 import GPT, HF_KIND, HF_NAMES, GPTConfig
from prepare import load_tokenizer


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint file, a ``latest`` pointer or a run folder holding one (else: a HF folder or a hub name)."""
    p = Path(path)
    return p.is_file() or (p.is_dir() and (p / LATEST).is_file())


def load_model(path: str | os.PathLike, device="cpu") -> GPT:
    """Our GPT from a checkpoint (run folder with ``latest``, pointer, ckpt file), a local HF folder or a hub name."""
    if not is_checkpoint(path):
        return GPT.from_pretrained(path).to(device)
    ckpt = load_checkpoint(path, CKPT_FORMAT)
    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt['path']}: model_config or weights do not fit "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.to(device)


def tokenizer_dir(path: str | os.PathLike) -> Path:
    """The tokenizer folder that belongs to a checkpoint (the run's ``tokenizer/``), or to a HF folder (itself)."""
    p = Path(path)
    return p if p.is_dir() and not is_checkpoint(p) else resolve_checkpoint(p).parent / "tokenizer"


def export_checkpoint(path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Export the checkpoint at ``path`` with the tokenizer of its run folder into ``out_dir`` (fileio's rule)."""
    ckpt_file, tok_dir = resolve_checkpoint(path), tokenizer_dir(path)
    claim_output_dir(out_dir, HF_KIND, HF_NAMES, overwrite=overwrite, inputs=[ckpt_file, tok_dir], flag="--out_dir")
    return load_model(ckpt_file).save_hf(out_dir, eos_token_id=load_tokenizer(tok_dir).eot_id,
                                         extra_files=sorted(tok_dir.glob("[!.]*")))  # the HF tokenizer files


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run folder, its 'latest' pointer, or a ckpt_NNNNNN.pt file")
    p.add_argument("--out_dir", required=True, help="new, empty, or an earlier export (with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out_dir")
    args = p.parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out_dir, args.overwrite)
    except (CheckpointError, OutputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"exported {args.checkpoint} -> {out}")
    return out


if __name__ == "__main__":
    main()
