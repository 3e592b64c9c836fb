"""LoRA (Hu et al. 2021, arXiv:2106.09685) with the homework's API, numerically identical to PEFT's LoRA.

The homework's four names (``LoRALinear``, ``convert_linear_layer_to_lora``, ``only_optimize_lora_parameters``,
``get_lora_state_dict``), merging, adapter folders that PEFT reads and writes too, and loading the base models.

Math (one adapted layer, base weight W (out, in) frozen, r = lora_dim):
    y = x Wᵀ + b + s · (dropout(x) Rᵀ) Lᵀ     R = lora_right_weight (r, in), Kaiming-uniform (a=√5, as nn.Linear)
                                               L = lora_left_weight (out, r), zeros: a new adapter changes nothing
    s = lora_scaling / r   (rsLoRA, Kalajdzievski 2023, arXiv:2312.03732: s = lora_scaling / √r)
PEFT's names: R = lora_A.weight, L = lora_B.weight, lora_scaling = lora_alpha.

Trap: transformers' ``Conv1D`` (GPT-2's c_attn, c_proj, c_fc) stores its weight as (in, out) and computes x W + b.
We keep a transposed *view* of that storage as our (out, in) weight, so no copy is made and F.linear runs the very
same GEMM as Conv1D; PEFT calls this ``fan_in_fan_out=True``.
"""
import json
import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fileio import atomic_dir

from transformers.pytorch_utils import Conv1D  # GPT-2's projection layer

ADAPTABLE = (nn.Linear, Conv1D)
ADAPTER_FORMAT, ADAPTER_VERSION = "llmhw-lora-adapter", 1
OUR_CONFIG, OUR_WEIGHTS = "lora_config.json", "lora_weights.safetensors"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (the math and the Conv1D trap: module docstring)."""
    fused = True  # forward_fused: the sum of forward's reference line with less memory (tests compare the two)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, lora_dim: int, lora_scaling: float,
                 lora_dropout: float = 0.0, use_rslora: bool = False, fan_in_fan_out: bool = False):
        super().__init__()  # arguments are trusted: LoRAConfig.validate checks them where they enter
        out_features, in_features = weight.shape
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None
        self.lora_right_weight = nn.Parameter(weight.new_empty(lora_dim, in_features))   # (r, in)
        self.lora_left_weight = nn.Parameter(weight.new_empty(out_features, lora_dim))   # (out, r)
        self.lora_dim, self.lora_scaling, self.use_rslora = lora_dim, float(lora_scaling), use_rslora
        self.dropout_p = float(lora_dropout)
        self.scaling = self.lora_scaling / (math.sqrt(lora_dim) if use_rslora else lora_dim)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.fan_in_fan_out, self.merged = fan_in_fan_out, False
        nn.init.kaiming_uniform_(self.lora_right_weight, a=math.sqrt(5))  # as nn.Linear / PEFT / loralib
        nn.init.zeros_(self.lora_left_weight)  # a new adapter changes nothing

    @classmethod
    def from_layer(cls, layer: nn.Module, lora_dim: int, lora_scaling: float, lora_dropout: float = 0.0,
                   use_rslora: bool = False) -> "LoRALinear":
        """Wrap an nn.Linear or a transformers Conv1D (sharing its weight storage, no copy)."""
        conv = isinstance(layer, Conv1D)  # (in, out) storage seen as (out, in)
        return cls(layer.weight.detach().t() if conv else layer.weight, layer.bias, lora_dim, lora_scaling,
                   lora_dropout, use_rslora, fan_in_fan_out=conv)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_left_weight @ self.lora_right_weight)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:  # W already holds W + s·L·R, so training would silently not train R and L
            if self.training and torch.is_grad_enabled() and self.lora_right_weight.requires_grad:
                raise RuntimeError("LoRALinear is merged, so its LoRA weights would get no gradient: "
                                   "unmerge it (merge(undo=True)) before training")
            return F.linear(x, self.weight, self.bias)
        if self.fused:
            return self.forward_fused(x)
        # loralib's two lines: base(x) + dropout(x) Rᵀ Lᵀ · s
        return F.linear(x, self.weight, self.bias) \
            + (self.lora_dropout(x) @ self.lora_right_weight.t() @ self.lora_left_weight.t()) * self.scaling

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """out += s · (dropout(x) Rᵀ) Lᵀ as one in-place GEMM: no (..., out) temporaries, unlike ``base + lora * s``
        (the README's memory saving). Safe for autograd: F.linear's backward does not need ``out``."""
        out = F.linear(x, self.weight, self.bias)                    # (..., out)
        h = F.linear(self.lora_dropout(x), self.lora_right_weight)   # (..., r)
        left = self.lora_left_weight                                  # (out, r)
        if h.dtype != out.dtype or left.dtype != out.dtype:  # autocast does not cast for in-place ops: do it here
            h, left = h.to(out.dtype), left.to(out.dtype)
        out.view(-1, out.shape[-1]).addmm_(h.reshape(-1, self.lora_dim), left.t(), alpha=self.scaling)
        return out

    @torch.no_grad()
    def merge(self, undo: bool = False) -> None:
        """Fold s·L·R into the base weight (``undo``: take it out again, unmerge); a second call does nothing."""
        if self.merged == undo:
            self.weight.add_(self.delta_weight(), alpha=-1 if undo else 1)
            self.merged = not undo

    @torch.no_grad()
    def to_plain(self) -> nn.Module:
        """A plain nn.Linear (or Conv1D, if that is what was wrapped) holding the merged weight."""
        w = self.weight + (0 if self.merged else self.delta_weight())  # (out, in), new: self is left unchanged
        out_features, in_features = w.shape
        with torch.device("meta"):  # skip the random init of weights we overwrite anyway
            layer = Conv1D(out_features, in_features) if self.fan_in_fan_out else \
                nn.Linear(in_features, out_features, bias=self.bias is not None)
        layer.weight = nn.Parameter(w.t().contiguous() if self.fan_in_fan_out else w)
        layer.bias = None if self.bias is None else nn.Parameter(self.bias.detach().clone())
        return layer

    def extra_repr(self) -> str:
        return (f"weight (out, in)={tuple(self.weight.shape)}, lora_dim={self.lora_dim}, scaling={self.scaling:g}, "
                f"fan_in_fan_out={self.fan_in_fan_out}, merged={self.merged}")


@dataclass
class LoRAConfig:
    """What an adapter is: everything needed to rebuild it on a base model."""
    lora_dim: int = 8
    lora_scaling: float = 32.0        # PEFT's lora_alpha; scaling = lora_scaling / lora_dim
    lora_module_name: str = "h."      # substring filter on module names (the homework's)
    lora_dropout: float = 0.0
    use_rslora: bool = False          # scaling = lora_scaling / sqrt(lora_dim)
    target_modules: list[str] = field(default_factory=list)  # exact names, filled in by conversion

    def validate(self) -> "LoRAConfig":
        for name, ok, what in (("lora_dim", isinstance(self.lora_dim, int) and self.lora_dim > 0, "a positive integer"),
                               ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
                               ("lora_scaling", self.lora_scaling > 0, "> 0")):
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")
        return self


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name), attr, new)  # get_submodule("") is root itself


def _convert_modules(model: nn.Module, names: list[str], cfg: LoRAConfig) -> nn.Module:
    for name in names:
        layer = model.get_submodule(name)  # an nn.Linear / Conv1D (the callers pick no LoRALinear)
        if cfg.lora_dim > min(layer.weight.shape):  # else a "low-rank" update would be full-rank or bigger
            raise ValueError(f"lora_dim {cfg.lora_dim} exceeds min(in, out) of module '{name}' (weight "
                             f"{tuple(layer.weight.shape)}); choose a rank <= {min(layer.weight.shape)}")
        tied = next((other for other, p in model.named_parameters(remove_duplicate=False)  # GPT-2's lm_head: wte
                     if p.data_ptr() == layer.weight.data_ptr() and not other.startswith(name + ".")), None)
        if tied:  # merge() would add the update to the shared tensor, changing the other module too
            raise ValueError(f"module '{name}' shares its weight with '{tied}' (tied weights): LoRA on it would "
                             "change both when merged; choose a module filter that leaves it out")
        _replace(model, name, LoRALinear.from_layer(layer, cfg.lora_dim, cfg.lora_scaling, cfg.lora_dropout,
                                                    cfg.use_rslora))
    cfg.target_modules = sorted(set(cfg.target_modules) | set(names))
    model.lora_config = cfg  # what save_adapter writes (PEFT keeps its peft_config on the model too)
    return model


def convert_linear_layer_to_lora(model: nn.Module, part_module_name: str, lora_dim: int = 0, lora_scaling: float = 1,
                                 lora_dropout: float = 0.0, use_rslora: bool = False) -> nn.Module:
    """Replace every nn.Linear / Conv1D whose name contains ``part_module_name`` with a LoRALinear (in place)."""
    cfg = LoRAConfig(lora_dim, lora_scaling, part_module_name, lora_dropout, use_rslora).validate()
    names = [n for n, m in model.named_modules() if part_module_name in n and isinstance(m, ADAPTABLE)]
    if not names:
        some = [n for n, m in model.named_modules() if isinstance(m, ADAPTABLE)][:4]
        raise ValueError(f"module filter '{part_module_name}' matches no nn.Linear/Conv1D module of "
                         f"{type(model).__name__} (linear modules are named like {some})")
    return _convert_modules(model, names, cfg)


def only_optimize_lora_parameters(model: nn.Module) -> nn.Module:
    """Freeze everything except the LoRA weights."""
    for name, p in model.named_parameters():
        p.requires_grad = "lora_right_weight" in name or "lora_left_weight" in name
    return model


def get_lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors, keyed by the model's parameter names."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_right_weight", ".lora_left_weight"))}


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Copy LoRA tensors into a converted model; names and shapes are checked, errors say which tensor."""
    params, own = dict(model.named_parameters()), set(get_lora_state_dict(model))
    missing, unexpected = sorted(own - set(state_dict)), sorted(set(state_dict) - own)
    if missing or unexpected:
        raise ValueError(f"LoRA state dict does not fit the model: missing {missing[:3]} ({len(missing)}), "
                         f"unexpected {unexpected[:3]} ({len(unexpected)})")
    for name, mod in lora_modules(model).items():
        if mod.merged:
            raise RuntimeError(f"LoRA layer '{name}' is merged; merge(undo=True) before loading new LoRA weights")
    for k in own:
        if params[k].shape != state_dict[k].shape:
            raise ValueError(f"LoRA tensor '{k}' has shape {tuple(state_dict[k].shape)}, the model expects "
                             f"{tuple(params[k].shape)}")
        params[k].copy_(state_dict[k])
    return model


def merge_lora(model: nn.Module, undo: bool = False) -> nn.Module:
    for m in lora_modules(model).values():
        m.merge(undo)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by a plain layer holding W + s·L·R (back to the original architecture)."""
    for name, m in lora_modules(model).items():
        _replace(model, name, m.to_plain())
    return model


def save_adapter(model: nn.Module, path: str | Path, base_model_name_or_path: str | None = None,
                 extra: dict | None = None) -> Path:
    """Write an adapter folder atomically: our files and PEFT's, so either library can load it."""
    from safetensors.torch import save_file

    cfg, mods = model.lora_config, lora_modules(model)
    cfg.target_modules = sorted(mods)
    ours = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, **asdict(cfg),
            "scaling": next(iter(mods.values())).scaling,
            "fan_in_fan_out": {n: m.fan_in_fan_out for n, m in mods.items()},
            "base_model_name_or_path": base_model_name_or_path, **(extra or {})}
    # PEFT sets fan_in_fan_out per layer type anyway (True for Conv1D, False for nn.Linear, with a warning when the
    # flag disagrees); we write the value of the majority so that a GPT-2 adapter loads without warnings.
    alpha = cfg.lora_scaling  # an int where it is one, as PEFT writes it
    peft = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
            "r": cfg.lora_dim, "lora_alpha": int(alpha) if float(alpha).is_integer() else float(alpha),
            "lora_dropout": cfg.lora_dropout, "target_modules": sorted(mods), "bias": "none",
            "fan_in_fan_out": sum(m.fan_in_fan_out for m in mods.values()) * 2 > len(mods),
            "use_rslora": cfg.use_rslora, "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
            "use_dora": False}
    peft_tensors = {f"base_model.model.{name}.lora_{ab}.weight": w.detach().contiguous() for name, m in mods.items()
                    for ab, w in (("A", m.lora_right_weight), ("B", m.lora_left_weight))}  # (r, in), (out, r)
    with atomic_dir(path, "LoRA adapter") as tmp:
        (tmp / OUR_CONFIG).write_text(json.dumps(ours, indent=2, allow_nan=False) + "\n")
        save_file({k: v.contiguous() for k, v in get_lora_state_dict(model).items()}, str(tmp / OUR_WEIGHTS),
                  metadata={"format": "pt"})
        (tmp / PEFT_CONFIG).write_text(json.dumps(peft, indent=2) + "\n")
        save_file(peft_tensors, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
    return Path(path)


def _attach(model: nn.Module, cfg: LoRAConfig, state_dict: dict[str, torch.Tensor], where: Path) -> nn.Module:
    """Convert exactly cfg.target_modules (unless already converted with that rank) and load the weights."""
    have, modules = lora_modules(model), dict(model.named_modules(remove_duplicate=False))
    want = (cfg.lora_dim, float(cfg.lora_scaling), cfg.use_rslora, float(cfg.lora_dropout))
    for n in cfg.target_modules:
        if n not in modules:
            raise ValueError(f"{where}: adapter targets module '{n}', which {type(model).__name__} does not have "
                             "(adapter made for another architecture?)")
        got = n in have and (have[n].lora_dim, have[n].lora_scaling, have[n].use_rslora, have[n].dropout_p)
        if got and got != want:  # already converted: only the weights are loaded, so everything else must agree
            raise ValueError(f"{where}: module '{n}' already has LoRA (rank, scaling, rslora, dropout) = {got}, "
                             f"the adapter {want}; load it into a model without LoRA layers")
        if not got and not isinstance(modules[n], ADAPTABLE):
            raise ValueError(f"{where}: adapter targets '{n}', a {type(modules[n]).__name__}, not nn.Linear/Conv1D")
    _convert_modules(model, [n for n in cfg.target_modules if n not in have], cfg)
    return load_lora_state_dict(model, state_dict)


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing (adapters are read from safetensors files only)") from None
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception) for a bad header
        raise ValueError(f"{path}: not a readable safetensors file ({str(e).strip() or type(e).__name__})") from None


def _read_config(path: Path) -> tuple[Path, dict]:
    """The adapter folder's config file (ours, else PEFT's) and what it holds."""
    if not path.is_dir():
        raise FileNotFoundError(f"adapter folder {path} does not exist")
    config = next((path / n for n in (OUR_CONFIG, PEFT_CONFIG) if (path / n).is_file()), None)
    if config is None:
        raise FileNotFoundError(f"{path} holds neither {OUR_CONFIG} nor {PEFT_CONFIG}: not an adapter folder")
    try:
        return config, json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config}: not valid JSON ({e})") from None


def check_adapter(adapter: str | Path, base: str | None = None, base_flag: str = "", allow_other: bool = False) -> int:
    """The rank of an adapter folder (ours or PEFT's), read from its config alone. Given ``base``: an adapter that
    records another base model is refused (a same-shaped adapter of another base loads silently into nonsense)."""
    config, meta = _read_config(Path(adapter))
    key = "lora_dim" if config.name == OUR_CONFIG else "r"
    if not isinstance(meta.get(key), int) or meta[key] <= 0:
        raise ValueError(f"{config}: '{key}' is {meta.get(key)!r}, not a positive integer")
    recorded = meta.get("base_model_name_or_path")
    norm = [str(Path(x).expanduser().resolve()) if Path(x).expanduser().exists() else x.rstrip("/")
            for x in (recorded, base) if isinstance(x, str)]
    if len(norm) == 2 and norm[0] != norm[1] and not allow_other:
        raise ValueError(f"adapter {adapter} was trained on {recorded}, but {base_flag} is {base}; pass "
                         "--allow_other_base to use it anyway")
    return meta[key]


def load_adapter(model: nn.Module, path: str | Path) -> tuple[nn.Module, LoRAConfig]:
    """Attach the adapter in ``path`` (our folder, or any PEFT LoRA folder) to ``model``; returns (model, config)."""
    path = Path(path)
    config, meta = _read_config(path)
    if config.name == OUR_CONFIG:
        if meta.get("format") != ADAPTER_FORMAT or meta.get("version", 0) > ADAPTER_VERSION:
            raise ValueError(f"{config}: format {meta.get('format')!r} v{meta.get('version')}; this code reads "
                             f"{ADAPTER_FORMAT!r} up to v{ADAPTER_VERSION}")
        cfg = LoRAConfig(**{k: v for k, v in meta.items() if k in LoRAConfig.__dataclass_fields__}).validate()
        return _attach(model, cfg, _load_weights(path / OUR_WEIGHTS), path), cfg
    # PEFT's folder, read as our LoRALinear layers
    if meta.get("peft_type") != "LORA":
        raise ValueError(f"{config}: peft_type {meta.get('peft_type')!r}, only 'LORA' is supported")
    unsupported = {k: meta[k] for k in ("use_dora", "lora_bias", "rank_pattern", "alpha_pattern", "modules_to_save",
                                        "layer_replication", "bias") if meta.get(k) and meta[k] != "none"}
    if unsupported:
        raise ValueError(f"{config}: unsupported PEFT options {unsupported}")
    weights_file, state = path / PEFT_WEIGHTS, {}
    for key, t in _load_weights(weights_file).items():
        # base_model.model.<module>.lora_A[.<adapter>].weight
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if m is None:
            raise ValueError(f"{weights_file}: unexpected tensor '{key}' (not a LoRA A/B weight)")
        state[f"{m.group(1)}.lora_{'right' if m.group(2) == 'A' else 'left'}_weight"] = t
    cfg = LoRAConfig(int(meta["r"]), float(meta.get("lora_alpha", 8)), "", float(meta.get("lora_dropout", 0.0)),
                     bool(meta.get("use_rslora", False)), sorted({k.rsplit(".", 1)[0] for k in state})).validate()
    return _attach(model, cfg, state, path), cfg


# ---------------------------------------------------------------------------------------------- base models
DTYPES = ("auto", "float32", "bfloat16")
IGNORE_INDEX = -100  # the label of prompt and padding tokens (data.py's; F.cross_entropy's default)
# Models whose forward is `lm_head(backbone(x).last_hidden_state)` with nothing in between (no logit scaling or
# soft-capping), so logits may be computed on the target positions only.
PLAIN_HEAD_MODELS = {"GPT2LMHeadModel", "GPTNeoForCausalLM", "GPTNeoXForCausalLM", "LlamaForCausalLM",
                     "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}


def target_index(labels: torch.Tensor) -> torch.Tensor:
    """(N,) flat indices into (B*(T-1)) of the target positions; made on the host (on the GPU it would sync)."""
    return torch.nonzero(labels[:, 1:].reshape(-1) != IGNORE_INDEX).squeeze(1)


class TargetLoss(nn.Module):
    """(sum of target-token cross entropies, number of target tokens) of a causal LM batch; one module for DDP."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.fast = model, type(model).__name__ in PLAIN_HEAD_MODELS

    def forward(self, input_ids, attention_mask, labels, targets=None):
        y = labels[:, 1:].reshape(-1)                 # (B*(T-1),): position t predicts token t+1
        n = (y != IGNORE_INDEX).sum()          # a device tensor: nobody waits for it
        if self.fast:  # logits at the target positions only (the vocabulary projection dominates small models)
            targets = target_index(labels) if targets is None else targets                    # (N,)
            h = getattr(self.model, self.model.base_model_prefix)(
                input_ids=input_ids, attention_mask=attention_mask).last_hidden_state          # (B, T, C)
            h = h[:, :-1].reshape(-1, h.shape[-1]).index_select(0, targets)                    # (N, C)
            logits, y = self.model.get_output_embeddings()(h), y.index_select(0, targets)      # (N, V), (N,)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
            logits = logits.reshape(-1, logits.shape[-1])                                     # (B*(T-1), V)
        # fp32 cross entropy even under bf16 autocast: the log-softmax over V needs the range. ignore_index masks
        # prompt and padding by multiplying their terms by 0 inside (no boolean indexing, no host sync).
        return F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum"), n


def autocast_for(dtype: str, device: torch.device):
    """A context factory for forward passes: bf16 autocast (``auto`` on CUDA, or asked), else nothing; TF32 on CUDA."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _pretrained(auto, name: str, **kwargs):
    """``auto.from_pretrained(name)``; a failure is one line naming the model and the cause (for a hub name: how to
    go on without the hub)."""
    try:
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it: one line is ours
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return auto.from_pretrained(name, **kwargs)
    except Exception as e:  # OSError, ValueError, safetensors' own error for a truncated or foreign weights file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # torch's own text advises turning the safe loader off: never quoted
        if "Weights only load failed" in first or "Unpickl" in type(e).__name__:
            first = ("its weights file holds Python objects, not only tensors: refused, since loading it could run "
                     "code (save the model as model.safetensors)")
        hint = ("" if Path(name).exists() else " (no local folder of that name; without the hub, pass a local HF "
                "model folder, e.g. --model_name_or_path pretrain/output/tiny-cpu/hf, which `python pretrain/train.py`"
                " writes)")
        raise ValueError(f"cannot load model '{name}': {first}{hint}") from None


def model_shape(name: str) -> tuple[int | None, int | None]:
    """(positions, vocabulary size) of the model, read from its config alone."""
    from transformers import AutoConfig

    conf = _pretrained(AutoConfig, name)
    return (getattr(conf, "n_positions", None) or getattr(conf, "max_position_embeddings", None),
            getattr(conf, "vocab_size", None))


def load_model(name: str, device: torch.device):
    """A float32 AutoModelForCausalLM on ``device`` (autocast decides the compute dtype)."""
    from transformers import AutoModelForCausalLM

    return _pretrained(AutoModelForCausalLM, name, dtype=torch.float32).to(device)
