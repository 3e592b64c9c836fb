"""Continue raw prompts (no instruction template) with a training checkpoint (our `GPT.generate`, the run's
`tokenizer/`) or a HF model folder (transformers' `generate`, local files only). Rows stop at end-of-text; each prompt
is seeded with `--seed` (same seed, same samples).

    python pretrain/sample.py --model pretrain/output/tiny-cpu --prompt "ROMEO:" --num_samples 3
    python pretrain/sample.py --model pretrain/output/tiny-cpu/hf --prompts_file prompts.txt --temperature 0 \\
        --out samples.json                    # the schema: README.md, "Sampling"
"""
import argparse
import math
import sys
from pathlib import Path

import torch

from ddp import device_problem
from export import is_checkpoint, load_model, tokenizer_dir
from fileio import OutputError, atomic_write_json, claim_output_file
from modeling_gpt2 import autocast_for, load_torch_weights
from prepare import load_tokenizer

JSON_KIND = "pretrain-samples"


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """(settings, prompts) from the command line; every setting checked before the model is loaded (one line)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="checkpoint (run folder, latest, ckpt_N.pt) or HF model folder")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable; '' = start from nothing)")
    p.add_argument("--prompts_file", default="", help="UTF-8 file, one prompt per line (blank lines skipped)")
    p.add_argument("--max_new_tokens", type=int, default=64, help="tokens to generate per sample")
    p.add_argument("--num_samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy")
    p.add_argument("--top_k", type=int, default=50, help="keep the k most likely tokens; 0 = all")
    p.add_argument("--top_p", type=float, default=1.0, help="keep the smallest set reaching probability p; 1 = all")
    p.add_argument("--seed", type=int, default=1337, help="random seed (each prompt starts from it)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokenizer", default="", help="tokenizer spec; empty: the one that came with the model")
    p.add_argument("--data_dir", default="", help="data directory (for --tokenizer gpt2)")
    p.add_argument("--out", default="", help="also write the samples to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out of this script")
    cfg = p.parse_args(argv)
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
    if cfg.out:
        claim_output_file(cfg.out, JSON_KIND, overwrite=cfg.overwrite)
    prompts = list(cfg.prompt)
    if cfg.prompts_file:  # one prompt per line, blank lines skipped
        try:
            text = Path(cfg.prompts_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{cfg.prompts_file}: cannot read the prompts as UTF-8 text ({e})") from None
        prompts += [line for line in text.splitlines() if line.strip()]
        if len(prompts) == len(cfg.prompt):
            raise ValueError(f"{cfg.prompts_file}: holds no prompt (only blank lines)")
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompts_file FILE")
    return cfg, prompts


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


def sample_ours(model, tok, prompt: str, cfg) -> list[list[int]]:
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
    """How many positions a transformers model takes (GPT-2: n_positions, most others: max_position_embeddings)."""
    return getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)


def sample_hf(model, tok, prompt: str, cfg) -> list[list[int]]:
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


def run(cfg, prompts: list[str]) -> dict:
    """Load the model, sample every prompt, print the samples; returns the JSON document."""
    hf = (Path(cfg.model) / "config.json").is_file() and not is_checkpoint(cfg.model)  # a transformers folder
    model, tok = (load_hf(cfg.model, cfg.device) if hf
                  else load_ours(cfg.model, cfg.device, cfg.tokenizer, cfg.data_dir))
    records = []
    for i, prompt in enumerate(prompts):
        for j, ids in enumerate((sample_hf if hf else sample_ours)(model, tok, prompt, cfg)):
            records.append({"prompt": prompt, "sample": j, "continuation": tok.decode(ids), "new_tokens": len(ids)})
            print(f"--- prompt {i + 1}, sample {j + 1} ---\n{prompt}{records[-1]['continuation']}", flush=True)
    settings = {k: v for k, v in vars(cfg).items() if k not in ("model", "prompt", "out", "prompts_file", "overwrite")}
    return {"kind": JSON_KIND, "model": str(cfg.model),
            "loader": "transformers" if hf else "ours", "settings": settings, "samples": records}


def main(argv=None) -> dict:
    try:
        cfg, prompts = parse_args(argv)
        doc = run(cfg, prompts)
        if cfg.out:
            atomic_write_json(cfg.out, doc)
    except (ValueError, FileNotFoundError, OutputError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return doc


if __name__ == "__main__":
    main()
