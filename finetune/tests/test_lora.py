"""LoRA layers against a naive formula and against PEFT (logits and gradients, both directions)."""
import copy
import json
import math

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2

import lora

X = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))


def small_gpt2(seed=0):
    return tiny_gpt2(vocab_size=100, n_embd=32, seed=seed)


def small_llama(seed=0):
    """nn.Linear projections (GPT-2 has Conv1D)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def randomize_left(model, seed=0):
    """A fresh adapter's left weight is zero; make it non-zero so the adapter does something."""
    g = torch.Generator().manual_seed(seed)
    for m in lora.lora_modules(model).values():
        with torch.no_grad():
            m.lora_left_weight.copy_(torch.randn(m.lora_left_weight.shape, generator=g) * 0.05)
    return model


def converted(base, r=4, alpha=32.0, rslora=False, name="h."):
    m = copy.deepcopy(base)
    lora.convert_linear_layer_to_lora(m, name, r, alpha, use_rslora=rslora)
    return lora.only_optimize_lora_parameters(m)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("rslora", [False, True])
def test_lora_linear_matches_naive_formula(kind, rslora):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = nn.Linear(6, 5) if kind == "linear" else Conv1D(5, 6)
    W = layer.weight.detach().clone() if kind == "linear" else layer.weight.detach().t().clone()  # (out, in)
    m = lora.LoRALinear.from_layer(layer, 3, 12.0, use_rslora=rslora)
    assert m.lora_right_weight.shape == (3, 6) and m.lora_left_weight.shape == (5, 3)
    assert torch.all(m.lora_left_weight == 0) and m.lora_right_weight.abs().sum() > 0
    assert m.fan_in_fan_out == (kind == "conv1d") and not m.weight.requires_grad and not m.bias.requires_grad
    torch.nn.init.normal_(m.lora_left_weight)
    s = 12.0 / (math.sqrt(3) if rslora else 3)
    x = torch.randn(2, 4, 6)
    want = x @ W.T + layer.bias + s * (x @ m.lora_right_weight.T) @ m.lora_left_weight.T
    torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)
    # gradients of the fused in-place update equal those of the naive formula
    m(x).square().sum().backward()
    R, L = m.lora_right_weight.detach().clone().requires_grad_(), m.lora_left_weight.detach().clone().requires_grad_()
    (x @ W.T + layer.bias + s * (x @ R.T) @ L.T).square().sum().backward()
    torch.testing.assert_close(m.lora_right_weight.grad, R.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(m.lora_left_weight.grad, L.grad, atol=1e-4, rtol=1e-5)
    assert m.weight.grad is None


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("autocast", [False, True])
def test_fused_forward_equals_the_reference_line(kind, autocast, monkeypatch):
    """forward_fused (in-place addmm_) and loralib's line give the same output and gradients, with dropout and
    under bf16 autocast."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = nn.Linear(6, 5) if kind == "linear" else Conv1D(5, 6)
    m = lora.LoRALinear.from_layer(layer, 3, 12.0, lora_dropout=0.3).train()
    torch.nn.init.normal_(m.lora_left_weight)
    x = torch.randn(2, 4, 6)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(lora.LoRALinear, "fused", fused)
        m.zero_grad()
        torch.manual_seed(1)  # the same dropout mask for both
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = m(x)
        y.float().square().sum().backward()
        results.append((y, m.lora_right_weight.grad.clone(), m.lora_left_weight.grad.clone()))
    (y1, r1, l1), (y2, r2, l2) = results
    assert y1.dtype == y2.dtype == (torch.bfloat16 if autocast else torch.float32)
    tol = dict(atol=5e-2, rtol=5e-2) if autocast else dict(atol=1e-5, rtol=1e-5)  # bf16: 8 mantissa bits
    torch.testing.assert_close(y1, y2, **tol)
    torch.testing.assert_close(r1, r2, **tol)
    torch.testing.assert_close(l1, l2, **tol)


def test_lora_dropout_only_in_training():
    torch.manual_seed(0)
    m = lora.LoRALinear.from_layer(nn.Linear(8, 8), 2, 4.0, lora_dropout=0.5)
    torch.nn.init.normal_(m.lora_left_weight)
    x = torch.randn(4, 8)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_zero_initialised_adapter_leaves_outputs_unchanged():
    base = small_gpt2()
    m = converted(base)
    assert torch.equal(m(X).logits, base(X).logits)


def test_only_lora_tensors_require_and_receive_gradients():
    m = converted(small_gpt2()).train()
    m(X, labels=X).loss.backward()
    for name, p in m.named_parameters():
        is_lora = name.endswith("lora_right_weight") or name.endswith("lora_left_weight")
        assert p.requires_grad == is_lora, name
        assert (p.grad is not None) == is_lora, name
    # right weights get gradient even though left is zero at init (left's gradient flows from right's output)
    mods = lora.lora_modules(m)
    assert all(mod.lora_left_weight.grad.abs().sum() > 0 for mod in mods.values())


def test_after_a_step_merged_equals_unmerged_and_differs_from_base_merge_twice_safe():
    base = small_gpt2()
    m = converted(base).train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m(X, labels=X).loss.backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        unmerged, ref = m(X).logits, base(X).logits
        lora.merge_lora(m)
        merged = m(X).logits
        lora.merge_lora(m)  # second merge: no-op
        merged2 = m(X).logits
        lora.merge_lora(m, undo=True)
        lora.merge_lora(m, undo=True)
        back = m(X).logits
    assert (unmerged - ref).abs().max() > 1e-3
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged2, unmerged, atol=1e-5, rtol=0)
    torch.testing.assert_close(back, unmerged, atol=1e-5, rtol=0)
    assert not any(mod.merged for mod in lora.lora_modules(m).values())


def test_training_a_merged_layer_is_refused():
    m = lora.LoRALinear.from_layer(nn.Linear(4, 4), 2, 2.0)
    m.merge()
    m.train()
    with pytest.raises(RuntimeError, match="unmerge"):
        m(torch.randn(1, 4))


@pytest.mark.parametrize("factory,name", [(small_gpt2, "h."), (small_llama, "layers.")])
def test_merge_and_unload_gives_plain_layers_and_same_logits(factory, name, tmp_path):
    from transformers import AutoModelForCausalLM

    base = factory()
    m = randomize_left(converted(base, name=name))
    want = m(X).logits
    plain = lora.merge_and_unload(m)
    assert not lora.lora_modules(plain)
    assert set(plain.state_dict()) == set(base.state_dict())
    assert all(plain.state_dict()[k].shape == v.shape for k, v in base.state_dict().items())
    plain.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(again(X).logits, want, atol=1e-5, rtol=0)


def test_state_dict_round_trip_and_errors():
    base = small_gpt2()
    m = randomize_left(converted(base))
    sd = lora.get_lora_state_dict(m)
    assert sd and all(k.endswith(("lora_right_weight", "lora_left_weight")) for k in sd)
    assert len(sd) == 2 * len(lora.lora_modules(m)) == 2 * 4 * 2  # c_attn, c_proj (attn), c_fc, c_proj (mlp)
    fresh = converted(base)
    lora.load_lora_state_dict(fresh, sd)
    assert torch.equal(fresh(X).logits, m(X).logits)
    with pytest.raises(ValueError, match="missing"):
        lora.load_lora_state_dict(fresh, dict(list(sd.items())[1:]))
    k = next(iter(sd))
    with pytest.raises(ValueError, match="shape"):
        lora.load_lora_state_dict(fresh, {**sd, k: torch.zeros(1, 1)})


def test_adapter_save_load_round_trip(tmp_path):
    base = small_gpt2()
    m = randomize_left(converted(base, r=3, alpha=6.0))
    lora.save_adapter(m, tmp_path / "a", base_model_name_or_path="tiny")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [".llmhw-output", "adapter_config.json", "adapter_model.safetensors", "lora_config.json",
                     "lora_weights.safetensors"]  # the first: fileio's marker of the folder's kind
    conf = json.loads((tmp_path / "a" / "lora_config.json").read_text())
    assert conf["format"] == lora.ADAPTER_FORMAT and conf["lora_dim"] == 3 and conf["lora_scaling"] == 6.0
    assert conf["scaling"] == 2.0 and len(conf["target_modules"]) == 8
    other, cfg = lora.load_adapter(copy.deepcopy(base), tmp_path / "a")
    assert cfg.lora_dim == 3 and torch.equal(other(X).logits, m(X).logits)
    # saving again over an existing folder replaces it
    lora.save_adapter(m, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == files


@pytest.mark.parametrize("factory,name", [(small_gpt2, "h."), (small_llama, "layers.")])
@pytest.mark.parametrize("rslora", [False, True])
def test_peft_loads_our_adapter_same_logits_and_gradients(factory, name, rslora, tmp_path):
    from peft import PeftModel

    base = factory()
    ours = randomize_left(converted(base, r=4, alpha=16.0, rslora=rslora, name=name))
    lora.save_adapter(ours, tmp_path / "a")
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a", is_trainable=True).eval()
    torch.testing.assert_close(theirs(X).logits, ours(X).logits, atol=1e-5, rtol=0)
    ours(X, labels=X).loss.backward()
    theirs(X, labels=X).loss.backward()
    peft_grads = {n: p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    assert len(peft_grads) == len(lora.get_lora_state_dict(ours))
    for mod_name, mod in lora.lora_modules(ours).items():
        a = peft_grads[f"base_model.model.{mod_name}.lora_A.default.weight"]
        b = peft_grads[f"base_model.model.{mod_name}.lora_B.default.weight"]
        torch.testing.assert_close(mod.lora_right_weight.grad, a, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(mod.lora_left_weight.grad, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("factory,targets,fan", [(small_gpt2, ["c_attn", "c_proj", "c_fc"], True),
                                                 (small_llama, ["q_proj", "v_proj", "down_proj"], False)])
@pytest.mark.parametrize("rslora", [False, True])
def test_we_load_a_peft_adapter_same_logits_and_gradients(factory, targets, fan, rslora, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = factory()
    torch.manual_seed(3)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                                fan_in_fan_out=fan, use_rslora=rslora))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(tmp_path / "p")
    peft_model.eval()
    ours, cfg = lora.load_adapter(copy.deepcopy(base), tmp_path / "p")
    assert cfg.lora_dim == 4 and cfg.lora_scaling == 8 and cfg.use_rslora == rslora
    torch.testing.assert_close(ours(X).logits, peft_model(X).logits, atol=1e-5, rtol=0)
    lora.only_optimize_lora_parameters(ours)
    ours(X, labels=X).loss.backward()
    peft_model(X, labels=X).loss.backward()
    for n, p in peft_model.named_parameters():
        if p.grad is not None:
            mod, ab = n.removeprefix("base_model.model.").split(".lora_")
            mine = ours.get_submodule(mod)
            want = mine.lora_right_weight.grad if ab.startswith("A") else mine.lora_left_weight.grad
            torch.testing.assert_close(want, p.grad, atol=1e-6, rtol=1e-5)


def test_bad_rank_and_filter_matching_nothing():
    base = small_gpt2()
    for r in (0, -1, 2.5):
        with pytest.raises(ValueError, match="lora_dim"):
            lora.convert_linear_layer_to_lora(copy.deepcopy(base), "h.", r, 1.0)
    with pytest.raises(ValueError, match="module filter 'nothing_here' matches no"):
        lora.convert_linear_layer_to_lora(copy.deepcopy(base), "nothing_here", 4, 1.0)


def test_bad_adapter_folders(tmp_path):
    base = small_gpt2()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lora.load_adapter(copy.deepcopy(base), tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an adapter folder"):
        lora.load_adapter(copy.deepcopy(base), tmp_path / "empty")
    m = converted(base)
    lora.save_adapter(m, tmp_path / "a")
    (tmp_path / "a" / "lora_config.json").unlink()
    conf = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**conf, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        lora.load_adapter(copy.deepcopy(base), tmp_path / "a")
    # an adapter for another architecture names modules this model does not have
    lora.save_adapter(converted(small_llama(), name="layers."), tmp_path / "llama")
    with pytest.raises(ValueError, match="does not have"):
        lora.load_adapter(copy.deepcopy(base), tmp_path / "llama")


def test_tied_lm_head_is_refused():
    # GPT-2's lm_head is the token embedding: a merged update there would change the input embeddings too
    base = small_gpt2()
    assert base.lm_head.weight.data_ptr() == base.transformer.wte.weight.data_ptr()
    for name in ("lm_head", ""):
        with pytest.raises(ValueError, match="'lm_head' shares its weight with 'transformer.wte.weight'"):
            lora.convert_linear_layer_to_lora(copy.deepcopy(base), name, 4, 8.0)


def test_loading_into_lora_layers_with_other_settings_is_refused(tmp_path):
    base = small_gpt2()
    trained = converted(base, r=4, alpha=16.0)
    for p in lora.get_lora_state_dict(trained).values():
        torch.nn.init.normal_(p)
    lora.save_adapter(trained, tmp_path / "a16")
    fresh, _ = lora.load_adapter(copy.deepcopy(base), tmp_path / "a16")
    x = torch.randint(0, 100, (1, 8))
    torch.testing.assert_close(fresh(x).logits, trained(x).logits)  # the reference: a model without LoRA
    same, _ = lora.load_adapter(converted(base, r=4, alpha=16.0), tmp_path / "a16")  # same settings: fine
    torch.testing.assert_close(same(x).logits, trained(x).logits)
    with pytest.raises(ValueError, match="already has LoRA"):  # scaling 32 / 4 would be kept silently
        lora.load_adapter(converted(base, r=4, alpha=32.0), tmp_path / "a16")
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.load_adapter(converted(base, r=4, alpha=16.0, rslora=True), tmp_path / "a16")
    assert lora.check_adapter(tmp_path / "a16") == 4
