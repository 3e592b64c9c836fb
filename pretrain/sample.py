"""Continue raw prompts (no instruction template) with a pretrained model: our checkpoint or a Hugging Face folder.

--model is a training checkpoint (run folder, `latest` or `ckpt_000500.pt`; loaded by export.py, weights_only; the
run's `tokenizer/`; our `GPT.generate` with its KV cache) or a HF model folder (transformers' AutoModelForCausalLM,
AutoTokenizer and `generate`, local files only). Rows stop at end-of-text; temperature 0 is greedy, `--top_k 0` and
`--top_p 1` switch those filters off; each prompt is seeded with `--seed` (same seed, same samples).

    python pretrain/sample.py --model pretrain/output/tiny-cpu --prompt "ROMEO:" --num_samples 3
    python pretrain/sample.py --model pretrain/output/tiny-cpu/hf --prompts_file prompts.txt --temperature 0 \\
        --json samples.json                   # the schema: README.md, "Sampling"
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ddp import device_problem
from export import is_checkpoint, load_model, tokenizer_dir
from fileio import OutputError, atomic_write_json, claim_output_file
from flags import add_flags, typed_flags
from modeling_gpt2 import autocast_for, load_torch_weights
from prepare import load_tokenizer

JSON_KIND = "pretrain-samples"


@dataclass
class SampleConfig:
    """What to sample; checked once by `check_config` before any model is loaded."""
    model: str = field(default="", metadata={"help": "checkpoint (run folder, latest, ckpt_N.pt) or HF model folder"})
    prompts_file: str = field(default="", metadata={"help": "UTF-8 file, one prompt per line (blank lines skipped)"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens to generate per sample"})
    num_samples: int = field(default=1, metadata={"help": "samples per prompt"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature; 0 = greedy"})
    top_k: int = field(default=50, metadata={"help": "keep the k most likely tokens; 0 = all"})
    top_p: float = field(default=1.0, metadata={"help": "keep the smallest set reaching probability p; 1 = all"})
    seed: int = field(default=1337, metadata={"help": "random seed (each prompt starts from it)"})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device"})
    tokenizer: str = field(default="", metadata={"help": "tokenizer spec; empty: the one that came with the model"})
    data_dir: str = field(default="", metadata={"help": "data directory (for --tokenizer gpt2)"})
    json: str = field(default="", metadata={"help": "also write the samples to this JSON file"})
    overwrite: bool = field(default=False, metadata={"help": "replace an earlier --json output of this script"})


def parse_args(argv=None) -> tuple[SampleConfig, list[str]]:
    """(config, prompts) from the command line; every setting checked, bad ones end in one line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, SampleConfig)
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable; '' = start from nothing)")
    args = p.parse_args(argv)
    cfg = SampleConfig(**typed_flags(args, SampleConfig))
    check_config(cfg)
    prompts = args.prompt + (read_prompts(Path(cfg.prompts_file)) if cfg.prompts_file else [])
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompts_file FILE")
    return cfg, prompts


def check_config(cfg: SampleConfig) -> None:
    """Settings that cannot work, found before the model is loaded."""
    if not cfg.model or not Path(cfg.model).exists():
        raise ValueError(f"--model {cfg.model!r}: no such file or folder (a checkpoint or a HF model folder)")
    if not (math.isfinite(cfg.temperature) and cfg.temperature >= 0):
        raise ValueError(f"--temperature {cfg.temperature}: needs a finite value >= 0 (0 = greedy)")
    if cfg.top_k < 0 or not 0 <= cfg.top_p <= 1:  # `not` also catches nan
        raise ValueError(f"--top_k {cfg.top_k} / --top_p {cfg.top_p}: need top_k >= 0 and 0 <= top_p <= 1")
    if cfg.max_new_tokens < 1 or cfg.num_samples < 1:
        raise ValueError(f"--max_new_tokens {cfg.max_new_tokens} / --num_samples {cfg.num_samples}: need >= 1")
    if device_problem(cfg.device):
        raise ValueError(device_problem(cfg.device))
    if cfg.json:
        claim_output_file(cfg.json, JSON_KIND, overwrite=cfg.overwrite, flag="--json")


def read_prompts(path: Path) -> list[str]:
    """One prompt per line of a UTF-8 file, blank lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read the prompts file ({e.strerror})") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: holds no prompt (only blank lines)")
    return prompts


def model_tokenizer(path: str | Path, tokenizer: str = "", data_dir: str | None = None):
    """The TextTokenizer `tokenizer` if given, else the one that came with the model at `path` (a run's
    tokenizer/ folder, or the HF folder's own files); GPT-2's for a hub name."""
    # a hub name (online only): OpenAI's GPT-2 models all use the GPT-2 tokenizer
    spec = tokenizer or (tokenizer_dir(path) if Path(path).exists() else "gpt2")
    try:
        return load_tokenizer(spec, data_dir or None)
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no tokenizer with the model ({e}); pass --tokenizer") from None


def load_ours(path: str | Path, device="cpu", tokenizer: str = "", data_dir: str | None = None):
    """(our GPT in eval mode, its TextTokenizer) from a checkpoint or a GPT-2 HF folder (see load_tokenizer)."""
    model = load_model(path, device).eval()
    tok = model_tokenizer(path, tokenizer, data_dir)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{path}: its tokenizer has {tok.vocab_size} tokens, the model only "
                         f"{model.config.vocab_size}: not this model's tokenizer")
    return model, tok


def sample_ours(model, tok, prompt: str, cfg: SampleConfig) -> list[list[int]]:
    """num_samples continuations (new token ids, cut at end-of-text) of one prompt with GPT.generate."""
    device = next(model.parameters()).device
    ids = tok.encode(prompt) if prompt else [tok.eot_id if tok.eot_id is not None else 0]
    idx = torch.tensor([ids] * cfg.num_samples, dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)  # own generator: same prompt + seed, same samples
    with autocast_for("auto", device)():  # bf16 on CUDA, as the training run evaluates; fp32 elsewhere
        out = model.generate(idx, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None,
                             top_p=cfg.top_p, generator=gen, eos_token_id=tok.eot_id)
    return [cut_at(row[len(ids):].tolist(), tok.eot_id) for row in out]


def load_hf(path: str | Path, device="cpu"):
    """(transformers causal LM in eval mode, its tokenizer) from a local folder; failures become one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(path) / "model.safetensors").is_file() and (Path(path) / "pytorch_model.bin").is_file():
        load_torch_weights(Path(path) / "pytorch_model.bin")  # safely first: a crafted pickle is one line, no code
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{path}: transformers cannot load this model folder ({first})") from None
    return model, tok


def hf_positions(model) -> int | None:
    """How many positions a transformers model takes (GPT-2 calls it n_positions, most others
    max_position_embeddings)."""
    return getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)


def sample_hf(model, tok, prompt: str, cfg: SampleConfig) -> list[list[int]]:
    """num_samples continuations (new token ids, cut at end-of-text) of one prompt with transformers' generate."""
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else [start if start is not None else 0]
    limit = hf_positions(model)
    if limit and len(ids) + cfg.max_new_tokens > limit:
        raise ValueError(f"prompt of {len(ids)} tokens + --max_new_tokens {cfg.max_new_tokens} exceeds the model's "
                         f"{limit} positions")
    x = torch.tensor([ids], device=model.device)
    torch.manual_seed(cfg.seed)  # transformers samples from the global RNG
    greedy = cfg.temperature == 0  # transformers refuses num_return_sequences > 1 when greedy: all rows are alike
    sampling = {} if greedy else dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                      num_return_sequences=cfg.num_samples)
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=not greedy,
                             max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.eos_token_id, **sampling)
    rows = [cut_at(row[len(ids):].tolist(), tok.eos_token_id) for row in out]
    return rows * cfg.num_samples if greedy else rows


def cut_at(ids: list[int], eos: int | None) -> list[int]:
    """The ids before the first end-of-text token (generation pads finished rows with it)."""
    return ids[:ids.index(eos)] if eos is not None and eos in ids else ids


def run(cfg: SampleConfig, prompts: list[str]) -> dict:
    """Load the model, sample every prompt, print the samples; returns the JSON document."""
    hf = (Path(cfg.model) / "config.json").is_file() and not is_checkpoint(cfg.model)  # a transformers folder
    if hf:
        model, tok = load_hf(cfg.model, cfg.device)
    else:
        model, tok = load_ours(cfg.model, cfg.device, cfg.tokenizer, cfg.data_dir)
    sample, decode = (sample_hf if hf else sample_ours), tok.decode
    records = []
    for i, prompt in enumerate(prompts):
        for j, ids in enumerate(sample(model, tok, prompt, cfg)):
            records.append({"prompt": prompt, "sample": j, "continuation": decode(ids), "new_tokens": len(ids)})
            print(f"--- prompt {i + 1}, sample {j + 1} ---\n{prompt}{records[-1]['continuation']}", flush=True)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("model", "json", "prompts_file", "overwrite")}
    return {"kind": JSON_KIND, "model": str(cfg.model),
            "loader": "transformers" if hf else "ours", "settings": settings, "samples": records}


def main(argv=None) -> dict:
    try:
        cfg, prompts = parse_args(argv)
        doc = run(cfg, prompts)
        if cfg.json:
            atomic_write_json(cfg.json, doc)
    except (ValueError, FileNotFoundError, OutputError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return doc


if __name__ == "__main__":
    main()
