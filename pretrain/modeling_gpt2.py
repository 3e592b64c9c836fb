"""GPT-2 in plain PyTorch with Hugging Face parameter names (nanoGPT lineage), numerically transformers'
GPT2LMHeadModel: the model, HF conversion, optimizers and MFU peaks. Our projections are `nn.Linear` (weight (out, in)),
HF's `Conv1D` (in, out): conversion is a pure function with a transpose list (`TRANSPOSED`) and asserted shapes. MFU
(PaLM, appendix B) is against the datasheet peak of a GPU its name matches exactly (never a neighbour's), on CPU the
measured fp32 matmul peak.
"""
import functools
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.optim._muon import _adjust_lr  # the lr scaling by shape ("match_rms_adamw"), as torch's Muon

from fileio import atomic_dir


@dataclass
class GPTConfig:
    """Architecture only (training settings live in train.py's TrainConfig). Defaults: GPT-2 124M."""
    block_size: int = 1024  # max sequence length (HF: n_positions)
    vocab_size: int = 50257  # 50304 = 50257 padded to a multiple of 128 runs faster on GPUs
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self):
        for f in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, f) <= 0:
                raise ValueError(f"GPTConfig.{f} must be positive, got {getattr(self, f)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")


HUB_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # OpenAI's on the hub: 124M, 350M, 774M, 1558M


class LinearCrossEntropy(torch.autograd.Function):
    """mean cross_entropy(h @ W.T, y) (ignore_index -1) without the (N, V) logits, for CPU training (Liger-Kernel's
    fused linear cross-entropy): per chunk of rows the loss and at once d loss / d logits = softmax - onehot, turned
    into grad_h and grad_W; backward only scales them. Head + loss 78 against 126 ms (bench.py --parts)."""

    @staticmethod
    def forward(ctx, h, W, y, chunk: int = 256):  # h (N, C), W (V, C), y (N,)
        grad_h, grad_W = torch.empty_like(h), torch.zeros_like(W)
        valid = y != -1
        weight = valid / valid.sum().clamp(min=1)  # (N,) d mean-loss / d per-row loss
        y = y.clamp(min=0)[:, None]  # (N, 1)
        loss = h.new_zeros(())
        for s in range(0, h.size(0), chunk):
            hc, yc, wc = h[s:s + chunk], y[s:s + chunk], weight[s:s + chunk, None]
            logp = torch.log_softmax(hc @ W.t(), dim=-1)  # (c, V)
            loss -= (logp.gather(1, yc) * wc).sum()
            probs = logp.exp_()  # softmax, in place
            probs.scatter_add_(1, yc, torch.full_like(yc, -1, dtype=probs.dtype))  # - onehot(y)
            # the row weights go on the small (c, C) operands, not on the (c, V) probabilities
            grad_h[s:s + chunk] = (probs @ W).mul_(wc)
            grad_W.addmm_(probs.t(), hc * wc)
        ctx.save_for_backward(grad_h, grad_W)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_W = ctx.saved_tensors
        return grad_h * grad_out, grad_W * grad_out, None, None


@functools.lru_cache(maxsize=None)
def cpuinfo(field: str) -> str:
    """The value of the first `field` line of /proc/cpuinfo (x86 Linux: "flags", "model name"); "" elsewhere."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(field)), "")


def cpu_flags() -> frozenset[str]:
    return frozenset(cpuinfo("flags").split())


def newton_schulz_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 where its matmuls run natively (CUDA, CPUs with AVX512-BF16 or AMX), else float32: other CPUs
    emulate bf16 matmuls, 10x slower (the pipeline model's Muon step: 319 ms bf16, 31 ms fp32 on an AVX2 EPYC)."""
    device = torch.device(device)
    native = device.type == "cuda" or (device.type == "cpu" and bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}))
    return torch.bfloat16 if native else torch.float32


def newton_schulz(G, steps: int = 5, coefficients=(3.4445, -4.7750, 2.0315), eps: float = 1e-7,
                  dtype: torch.dtype = torch.bfloat16):
    """torch.optim.Muon's quintic Newton-Schulz iteration op for op, in `dtype` (in bfloat16 bit for bit torch's)."""
    a, b, c = coefficients
    X = G.to(dtype, copy=True)  # never G itself: the iteration works in place
    if G.size(0) > G.size(1):
        X = X.T
    X.div_(X.norm().clamp(min=eps))
    for _ in range(steps):
        A = X @ X.T
        X = torch.addmm(X, torch.addmm(A, A, A, beta=b, alpha=c), X, beta=a)  # a X + (b A + c A^2) X
    return X.T if G.size(0) > G.size(1) else X


class Muon(torch.optim.Muon):
    """torch.optim.Muon (same update, state, checkpoints) with Newton-Schulz in `ns_dtype`, not always bf16."""

    def __init__(self, params, ns_dtype: torch.dtype | None = None, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype or newton_schulz_dtype(self.param_groups[0]["params"][0].device)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = self.state[p]["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                update = newton_schulz(update, group["ns_steps"], group["ns_coefficients"], group["eps"],
                                       self.ns_dtype)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-_adjust_lr(group["lr"], group["adjust_lr_fn"], p.shape))


class Optimizers:
    """Several torch optimizers (AdamW and Muon) stepped, zeroed and saved as one; state dicts under their names."""

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:  # the same optimizers: config.check_resume
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to block_size."""

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, hs)  # (L, B, nh, T_max, hs)
        self.k, self.v = torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # tokens already cached (= position of the next token)

    def update(self, layer: int, k, v):
        """Append k, v (B, nh, T_new, hs) for `layer`; return all cached keys/values (B, nh, length+T_new, hs)."""
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE_INIT = True

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, past+T, hs)
        # SDPA's is_causal aligns the mask top-left, which is wrong once keys outnumber queries: query i (absolute
        # position past+i) may see keys 0..past+i (one new token sees them all).
        mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past) if past and T > 1 else None
        # Flash / memory-efficient kernels on CUDA, a fused kernel on CPU; scale 1/sqrt(hs) as GPT-2.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not past)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE_INIT = True

    def forward(self, x):
        # GPT-2 used the tanh approximation of GELU (HF "gelu_new"); the exact erf form differs by ~1e-3.
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (GPT-2, "Using the Output Embedding")
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # GPT-2: N(0, 0.02); residual projections scaled by 1/sqrt(2 * n_layer) because each block adds two of
        # them to the residual stream (GPT-2 paper, section 2.3; build-nanogpt's NANOGPT_SCALE_INIT).
        if isinstance(module, nn.Linear):
            residual = getattr(module, "RESIDUAL_SCALE_INIT", False)
            std = 0.02 * (2 * self.config.n_layer) ** -0.5 if residual else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count, the tied embedding counted once; non_embedding also drops the position table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, cache: KVCache | None = None, return_logits: bool = True):
        """idx (B, T) -> logits (B, T, V) and, with targets (B, T), the mean cross-entropy (-1 ignored). Training on
        CPU in fp32 with return_logits=False: the loss by LinearCrossEntropy, logits None."""
        B, T = idx.size()
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence length {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += T
        x = self.transformer.ln_f(x)
        if (targets is not None and not return_logits and torch.is_grad_enabled() and x.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu")):
            return None, LinearCrossEntropy.apply(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1))
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    # ---------------------------------------------------------------- optimizer and MFU
    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas=(0.9, 0.95), eps=1e-8,
                             device_type: str = "cpu", optimizer: str = "adamw"):
        """AdamW (decay on >= 2-D tensors; fused: 7 % off a CPU step), or Muon + AdamW for the rest (Optimizers)."""
        params = [p for p in self.parameters() if p.requires_grad]  # .parameters() yields the tied weight once
        matrices = self.block_matrices() if optimizer == "muon" else []
        rest = [p for p in params if all(p is not m for m in matrices)]
        groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},  # matrices, embeddings
                  {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]  # biases, LayerNorms
        adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=device_type in ("cuda", "cpu"))
        if optimizer == "adamw":
            return adamw
        # Muon (Jordan et al. 2024): momentum, then the update orthogonalized by Newton-Schulz; the embedding (tied
        # to the head), biases and LayerNorms stay on AdamW. "match_rms_adamw" scales each update to AdamW's typical
        # size (0.2 sqrt(max(rows, cols))), so both share one learning rate and schedule.
        ns_dtype = newton_schulz_dtype(device_type)
        if os.environ.get("RANK", "0") == "0":
            print(f"muon: Newton-Schulz in {str(ns_dtype).removeprefix('torch.')} on {device_type}", flush=True)
        muon = Muon(matrices, lr=learning_rate, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw",
                    ns_dtype=ns_dtype)
        return Optimizers(adamw=adamw, muon=muon)

    def block_matrices(self) -> list[nn.Parameter]:
        """The transformer blocks' 2-D weights (attention c_attn / c_proj, MLP c_fc / c_proj): Muon's parameters."""
        return [p for block in self.transformer.h for name, p in block.named_parameters()
                if p.dim() == 2 and name.endswith("weight")]

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6 N plus attention's 12 L C T (PaLM paper, appendix B;
        nanoGPT's estimate_mfu). N excludes the position table (a lookup, not a matmul)."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.n_embd * seq_len

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, use_cache: bool = True, generator: torch.Generator | None = None,
                 eos_token_id: int | None = None):
        """idx (B, T) -> (B, T + max_new_tokens), or fewer once every row has emitted eos; temperature 0 = greedy.
        Past block_size both paths use the last block_size tokens, so cached and uncached give the same tokens. (No
        dropout: train and eval mode compute the same.)"""
        cache, done = None, torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if use_cache and idx.size(1) <= self.config.block_size:
                if cache is None:
                    cache = KVCache(self.config, idx.size(0), idx.device, self.transformer.wte.weight.dtype)
                logits, _ = self(idx[:, cache.length:], cache=cache)  # the whole prompt first, then one token
            else:
                logits, _ = self(idx[:, -self.config.block_size:])
            next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            if eos_token_id is not None:
                next_token = torch.where(done[:, None], torch.full_like(next_token, eos_token_id), next_token)
                done |= next_token[:, 0] == eos_token_id
            idx = torch.cat([idx, next_token], dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
        return idx

    # ---------------------------------------------------------------- Hugging Face interop
    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike) -> "GPT":
        """Load a GPT-2 from a local HF directory or, online, a hub name (HUB_MODELS)."""
        path = Path(name_or_dir)
        if not path.is_dir():
            if str(name_or_dir) not in HUB_MODELS:
                raise FileNotFoundError(f"from_pretrained: '{name_or_dir}' is neither a local directory nor one of "
                                        f"the hub models {sorted(HUB_MODELS)}")
            from huggingface_hub import snapshot_download  # only for users online; offline pass a directory
            path = Path(snapshot_download(str(name_or_dir), allow_patterns=["config.json", "*.safetensors"]))
        config = config_from_hf(json.loads((path / "config.json").read_text()))
        model = cls(config)
        model.load_state_dict(hf_to_ours(read_hf_state_dict(path), config))
        return model

    def save_hf(self, out_dir: str | os.PathLike, eos_token_id: int | None = 50256, extra_files=()) -> Path:
        """config.json + model.safetensors for transformers, plus `extra_files`; built aside, swapped in whole."""
        with atomic_dir(out_dir, HF_KIND) as tmp:  # the marker: export.py may replace this folder, nothing else
            state = ours_to_hf(self.state_dict(), self.config)
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(config_to_hf(self.config, eos_token_id), indent=2) + "\n")
            for f in extra_files:
                shutil.copyfile(f, tmp / Path(f).name)
        return Path(out_dir)


# What save_hf writes (with a tokenizer's HF files, and hellaswag.py's default result beside them): a folder holding
# only these is an earlier export, which export.py --overwrite may replace (fileio.claim_output_dir)
HF_KIND = "gpt2-hf-export"
HF_NAMES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.json", "merges.txt", "hellaswag.json")


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None):
    """Next token (B, 1) from logits (B, V): greedy at temperature 0, else sampled from softmax(logits / t) within
    top_k and the smallest set reaching top_p (0 / None / 1: no restriction, as in HF; top_p 0: the most likely)."""
    if temperature < 0 or (top_k is not None and top_k < 0) or (top_p is not None and not 0 <= top_p <= 1):
        raise ValueError(f"sampling needs temperature >= 0, top_k >= 0, 0 <= top_p <= 1; got {temperature}, "
                         f"{top_k}, {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens before it already reach top_p (the most likely token always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False  # at top_p = 0 the comparison above would drop it too
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator)  # (B, 1)


# ---------------------------------------------------------------------------- conversion (pure functions)
# HF GPT-2 uses Conv1D (y = x @ W + b, W of shape (in, out)); ours nn.Linear (W of shape (out, in)).
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameter entries some HF GPT-2 checkpoints carry (the causal mask buffers of older transformers).
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")


def check_hf_layout(state: dict, config: GPTConfig, what: str) -> dict:
    """`state` once its names and shapes are those of a GPT2LMHeadModel with this config in HF's layout: ours with
    the TRANSPOSED ones reversed, the tied lm_head left out (a model on the meta device: shapes only, no memory)."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape)[::-1] if k.endswith(TRANSPOSED) else tuple(v.shape)
                  for k, v in GPT(config).state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or unexpected:
        raise ValueError(f"{what} does not match the config: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for k, v in state.items():
        assert tuple(v.shape) == shapes[k], f"{k}: shape {tuple(v.shape)}, expected {shapes[k]}"
    return state


def hf_to_ours(hf_state: dict, config: GPTConfig) -> dict:
    """HF GPT2LMHeadModel state dict (Conv1D; `transformer.` prefix and lm_head optional) -> ours, shapes checked."""
    # OpenAI-converted checkpoints name tensors h.0..., wte, ... (no "transformer." prefix)
    state = {k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k: v
             for k, v in hf_state.items() if not k.endswith(HF_BUFFERS)}
    head = state.pop("lm_head.weight", None)
    check_hf_layout(state, config, "HF state dict")
    if head is not None and not torch.equal(head, state["transformer.wte.weight"]):
        raise ValueError("HF checkpoint has an untied lm_head.weight; this GPT ties it to transformer.wte.weight")
    out = {k: v.t().contiguous() if k.endswith(TRANSPOSED) else v for k, v in state.items()}
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def ours_to_hf(state: dict, config: GPTConfig) -> dict:
    """Our state dict -> HF tensors (Conv1D layout; the tied lm_head left out), shapes checked."""
    state = {k: v.detach().cpu() for k, v in state.items() if k != "lm_head.weight"}
    # a copy of each, contiguous: safetensors refuses shared or non-contiguous storage
    hf = {k: (v.t() if k.endswith(TRANSPOSED) else v).contiguous().clone() for k, v in state.items()}
    return check_hf_layout(hf, config, "state dict")


def config_from_hf(hf: dict) -> GPTConfig:
    """GPTConfig from a HF GPT-2 config.json; refuses the options this model does not implement."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"config.json: model_type '{hf.get('model_type')}' is not gpt2")
    unsupported = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_weights": (True,),
                   "scale_attn_by_inverse_layer_idx": (False,), "reorder_and_upcast_attn": (False,),
                   "add_cross_attention": (False,), "tie_word_embeddings": (True,), "n_inner": (None,)}
    for key, allowed in unsupported.items():
        if key in hf and hf[key] not in allowed and not (key == "n_inner" and hf[key] == 4 * hf["n_embd"]):
            raise ValueError(f"config.json: {key}={hf[key]!r} is not supported (expected one of {allowed})")
    return GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5))


def config_to_hf(config: GPTConfig, eos_token_id: int | None = 50256) -> dict:
    """HF GPT2Config dict for our model. Dropouts are 0: this model was trained without dropout."""
    eos = eos_token_id if eos_token_id is not None and eos_token_id < config.vocab_size else None
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "n_positions": config.block_size, "n_ctx": config.block_size, "vocab_size": config.vocab_size,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_embd": config.n_embd, "n_inner": None,
        "layer_norm_epsilon": config.layer_norm_epsilon, "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "bos_token_id": eos, "eos_token_id": eos, "initializer_range": 0.02,
        "use_cache": True, "dtype": "float32",
    }


def load_torch_weights(path: Path) -> dict:
    """A pytorch_model.bin's tensors, loaded safely (weights_only: a crafted pickle runs no code); any failure is
    one line naming the file (never torch's advice to drop weights_only, which would run the file's code)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, zip errors...
        why = ("refused: holds Python objects that a safe load does not run" if "Weights only" in str(e)
               else "truncated or not a PyTorch weights file")
        raise ValueError(f"{path}: {why}; use a folder with model.safetensors") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


def read_hf_state_dict(path: Path) -> dict:
    """Tensors of a HF model directory: model.safetensors, sharded safetensors, or pytorch_model.bin."""
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    if (path / "model.safetensors.index.json").is_file():
        shards = sorted(set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values()))
        return {k: v for s in shards for k, v in load_file(str(path / s)).items()}
    if (path / "pytorch_model.bin").is_file():
        return load_torch_weights(path / "pytorch_model.bin")
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")


# ---------------------------------------------------------------------------- precision and MFU peaks
# Dense TFLOP/s from the vendors' datasheets: (bf16, fp16, tf32, fp32); None = no such tensor-core mode.
# Keys are what we print; patterns must match the whole of torch.cuda.get_device_name() as match_gpu normalises it.
GPU_PEAKS = {
    "H100 SXM": (r"H100( SXM5?)?( \d+GB)?( HBM3E?)?", (989.4, 989.4, 494.7, 66.9)),
    "H100 PCIe": (r"H100( \d+GB)? PCIE( \d+GB)?", (756.5, 756.5, 378.0, 51.2)),
    "H100 NVL": (r"H100 NVL( \d+GB)?", (835.5, 835.5, 417.5, 60.0)),
    "H200 SXM": (r"H200( SXM)?( \d+GB)?( HBM3E)?", (989.4, 989.4, 494.7, 66.9)),
    "H200 NVL": (r"H200 NVL( \d+GB)?", (835.5, 835.5, 417.5, 60.0)),
    "GH200": (r"GH200( \d+GB)?", (989.4, 989.4, 494.7, 66.9)),
    "A100 SXM": (r"A100 SXM4?( \d+GB)?", (312.0, 312.0, 156.0, 19.5)),
    "A100 PCIe": (r"A100( \d+GB)? PCIE( \d+GB)?", (312.0, 312.0, 156.0, 19.5)),
    "A10": (r"A10", (125.0, 125.0, 62.5, 31.2)),  # A10G (AWS) publishes no tensor figures: left out on purpose
    "L4": (r"L4", (121.0, 121.0, 60.0, 30.3)),
    "L40": (r"L40", (181.0, 181.0, 90.5, 90.5)),
    "L40S": (r"L40S", (362.0, 362.0, 183.0, 91.6)),
    "RTX 4090": (r"RTX 4090", (165.2, 165.2, 82.6, 82.6)),
    "RTX 3090": (r"RTX 3090", (71.0, 71.0, 35.6, 35.6)),
    "V100 SXM2": (r"V100 SXM2( \d+GB)?", (None, 125.0, None, 15.7)),  # Volta: no bf16, no TF32
    "V100 PCIe": (r"V100 PCIE( \d+GB)?", (None, 112.0, None, 14.0)),
    "T4": (r"T4", (None, 65.0, None, 8.1)),
}
MODES = ("bf16", "fp16", "tf32", "fp32")


def match_gpu(name: str) -> str | None:
    """The GPU_PEAKS key whose pattern matches the whole device name, or None (never a near miss)."""
    words = re.sub(r"[-_\s]+", " ", name.upper()).split()  # 'NVIDIA A100-SXM4-80GB' -> 'A100 SXM4 80GB'
    norm = " ".join(w for w in words if w not in ("NVIDIA", "TESLA", "GEFORCE"))
    hits = [key for key, (pattern, _) in GPU_PEAKS.items() if re.fullmatch(pattern, norm)]
    assert len(hits) <= 1, f"{name}: matched {hits}; the patterns must be disjoint"
    return hits[0] if hits else None


def precision_mode(dtype: torch.dtype, tf32: bool | None = None) -> str:
    """The matmul mode of a run in `dtype`: bf16 / fp16, or for float32 tf32 / fp32 (tf32 None: as torch is set)."""
    if dtype in (torch.bfloat16, torch.float16):
        return "bf16" if dtype == torch.bfloat16 else "fp16"
    return "tf32" if (torch.backends.cuda.matmul.allow_tf32 if tf32 is None else tf32) else "fp32"


def gpu_peak_flops(name: str, mode: str) -> float | None:
    """Datasheet dense peak FLOP/s of the GPU called `name` in `mode`; None for an unknown GPU or mode."""
    key = match_gpu(name)
    tflops = GPU_PEAKS[key][1][MODES.index(mode)] if key else None
    return None if tflops is None else tflops * 1e12


@functools.lru_cache(maxsize=None)
def measured_cpu_peak_flops(n: int = 1024, seconds: float = 1.0) -> float:
    """Best fp32 FLOP/s of an n x n matmul on this CPU (cached for the process)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up the BLAS threads
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32, tf32: bool | None = None
               ) -> float | None:
    """Peak FLOP/s for MFU on `device` (cpu or cuda) computing in `dtype`; None for an unknown GPU (describe_peak)."""
    device = torch.device(device)
    if device.type == "cpu":
        return measured_cpu_peak_flops()
    return gpu_peak_flops(torch.cuda.get_device_name(device), precision_mode(dtype, tf32))


def describe_peak(device: torch.device | str, dtype: torch.dtype = torch.float32, tf32: bool | None = None) -> str:
    """One line saying which peak MFU uses: the matched GPU key and mode, or why there is none."""
    device, peak = torch.device(device), peak_flops(device, dtype, tf32)
    if device.type == "cpu":
        return f"cpu: measured fp32 matmul peak {peak / 1e12:.3f} TFLOP/s ({torch.get_num_threads()} threads)"
    name, mode = torch.cuda.get_device_name(device), precision_mode(dtype, tf32)
    if (key := match_gpu(name)) is None:
        return f"{name!r}: not in modeling_gpt2.GPU_PEAKS (exact names only), MFU not computed"
    if peak is None:
        return f"{name!r} = {key}: has no {mode} tensor-core mode, MFU not computed"
    return f"{name!r} = {key}: {mode} dense peak {peak / 1e12:.1f} TFLOP/s (datasheet)"


def compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """--dtype auto|float32|bfloat16 on ``device``: auto = bf16 on CUDA, fp32 elsewhere."""
    return torch.bfloat16 if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda") else torch.float32


def autocast_for(dtype: str, device: torch.device):
    """Context factory for forward passes: bf16 autocast (auto on CUDA, or asked) or none; TF32 on CUDA only."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # = matmul precision "high"
    bf16 = compute_dtype(dtype, device) == torch.bfloat16
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilization; None when the peak is unknown."""
    return None if not peak else flops_per_token * tokens_per_s / peak
