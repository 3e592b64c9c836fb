"""modeling_gpt2: parity with transformers' GPT2LMHeadModel both ways, conversion checks, generation, optimizer."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

import modeling_gpt2 as mg
from modeling_gpt2 import GPT, GPTConfig


def tokens(vocab, B=3, T=24, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_hf_to_ours_logits_equal(hf_tiny_dir):
    hf = GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()
    ours = GPT.from_pretrained(hf_tiny_dir).eval()
    x = tokens(50257)
    with torch.no_grad():
        assert (ours(x)[0] - hf(x).logits).abs().max().item() <= 1e-5


def test_ours_to_hf_logits_equal_and_tied(tmp_path):
    torch.manual_seed(1)
    ours = GPT(GPTConfig(block_size=40, vocab_size=300, n_layer=3, n_head=4, n_embd=48)).eval()
    ours.save_hf(tmp_path, eos_token_id=None)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied on load, not two copies
    x = tokens(300, T=40)
    with torch.no_grad():
        assert (ours(x)[0] - hf(x).logits).abs().max().item() <= 1e-5
        # loss too: ours is the mean next-token cross-entropy, as HF's labels= loss
        assert abs(ours(x[:, :-1], x[:, 1:])[1].item() - hf(x, labels=x).loss.item()) <= 1e-5
    # and the round trip back gives the same tensors
    back = GPT.from_pretrained(tmp_path)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_conversion_is_explicit_about_layout_and_names(hf_tiny_dir):
    hf_state = mg.read_hf_state_dict(hf_tiny_dir)
    config = mg.config_from_hf(json.loads((hf_tiny_dir / "config.json").read_text()))
    ours = mg.hf_to_ours(hf_state, config)
    for k in mg.TRANSPOSED:  # Conv1D (in, out) -> Linear (out, in)
        key = f"transformer.h.0.{k}"
        assert torch.equal(ours[key], hf_state[key].t())
    # OpenAI-converted checkpoints: no "transformer." prefix, causal-mask buffers, an explicit (tied) lm_head
    legacy = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
    legacy["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    legacy["lm_head.weight"] = hf_state["transformer.wte.weight"].clone()
    ours2 = mg.hf_to_ours(legacy, config)
    assert all(torch.equal(ours[k], ours2[k]) for k in ours)
    assert set(mg.ours_to_hf(ours, config)) == set(hf_state)


def test_conversion_rejects_mismatches(hf_tiny_dir):
    hf_state = mg.read_hf_state_dict(hf_tiny_dir)
    config = mg.config_from_hf(json.loads((hf_tiny_dir / "config.json").read_text()))
    bad = dict(hf_state)
    bad["transformer.h.1.mlp.c_fc.weight"] = bad["transformer.h.1.mlp.c_fc.weight"].t()
    with pytest.raises(AssertionError, match="mlp.c_fc.weight: shape"):
        mg.hf_to_ours(bad, config)
    with pytest.raises(ValueError, match="missing"):
        mg.hf_to_ours({k: v for k, v in hf_state.items() if "ln_f" not in k}, config)
    untied = dict(hf_state, **{"lm_head.weight": torch.zeros_like(hf_state["transformer.wte.weight"])})
    with pytest.raises(ValueError, match="untied"):
        mg.hf_to_ours(untied, config)
    hf_config = json.loads((hf_tiny_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="activation_function"):
        mg.config_from_hf({**hf_config, "activation_function": "relu"})
    with pytest.raises(FileNotFoundError, match="neither a local directory"):
        GPT.from_pretrained("no-such-model")
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_embd=30, n_head=4)


def test_forward_rejects_too_long_input():
    model = GPT(GPTConfig(block_size=8, vocab_size=50, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="exceeds block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_gpt2_124m_size_and_flops():
    with torch.device("meta"):  # no memory, no init cost
        model = GPT(GPTConfig())
    assert model.num_params() == 124_439_808  # HF gpt2's parameter count (tied head counted once)
    # 6 N (N without the 1024 x 768 position table) + 12 L C T  (hand-computed)
    assert model.flops_per_token(1024) == 6 * (124_439_808 - 786_432) + 12 * 12 * 768 * 1024


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=8, n_head=4, n_embd=256))
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 5e-4
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 5e-4
    assert model.lm_head.weight is model.transformer.wte.weight


def test_kv_cache_logits_equal_full_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=97, n_layer=2, n_head=2, n_embd=16)).eval()
    x = tokens(97, B=2, T=20)
    full = model(x)[0]
    cache = mg.KVCache(model.config, 2, "cpu", torch.float32)
    parts = [model(x[:, :7], cache=cache)[0], model(x[:, 7:12], cache=cache)[0]]  # a multi-token chunk after a prefix
    parts += [model(x[:, t:t + 1], cache=cache)[0] for t in range(12, 20)]
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.9, top_k=10, top_p=0.8)])
def test_generate_with_cache_equals_without(sampling):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=97, n_layer=2, n_head=2, n_embd=16))
    prompt = tokens(97, B=2, T=5)
    runs = [model.generate(prompt, 20, use_cache=c, generator=torch.Generator().manual_seed(3), **sampling)
            for c in (True, False)]  # 25 tokens > block_size 16: also the sliding-window fallback
    assert runs[0].shape == (2, 25) and torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :5], prompt)


def test_greedy_generate_equals_hf(hf_tiny_dir):
    hf = GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()
    ours = GPT.from_pretrained(hf_tiny_dir)
    prompt = tokens(50257, B=1, T=6)
    want = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, min_new_tokens=12,
                       do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, 12, temperature=0), want)


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draw = lambda **kw: {mg.sample_next(logits, generator=gen, **kw).item() for _ in range(300)}  # noqa: E731
    assert draw(top_k=1) == {0}
    assert draw(top_k=2) == {0, 1}
    assert draw(top_p=0.7) == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: the nucleus is {0, 1}
    assert draw(top_p=0.5) == {0}
    assert draw() == {0, 1, 2, 3}
    assert mg.sample_next(logits, temperature=0).item() == 0
    # edge values: top_p 0 keeps the most likely token; top_k 0 means no top-k (as in HF)
    assert draw(top_p=0.0) == {0}
    assert draw(top_k=0) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="top_p"):
        mg.sample_next(logits, top_p=1.5)


def test_optimizer_decays_only_matrices():
    model = GPT(GPTConfig(block_size=8, vocab_size=50, n_layer=2, n_head=2, n_embd=8))
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied weight once


def test_fused_cpu_optimizer_matches_the_per_tensor_reference():
    """configure_optimizers uses torch's fused AdamW on CPU; the same steps with the plain per-tensor loop
    (foreach=False, fused=False: the textbook update, one tensor at a time) land on the same weights."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    ref = GPT(model.config)
    ref.load_state_dict(model.state_dict())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    opt = model.configure_optimizers(0.1, 3e-3)
    assert opt.defaults["fused"]
    groups = [{"params": [p for p in ref.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in ref.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    ref_opt = torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False, fused=False)
    x = tokens(64, B=4, T=17)
    for m, o in ((model, opt), (ref, ref_opt)):
        for _ in range(5):
            m(x[:, :-1], x[:, 1:])[1].backward()
            o.step()
            o.zero_grad()
    moved = max((v - start[k]).abs().max().item() for k, v in model.state_dict().items())
    assert moved > 1e-3  # the steps did change the weights
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        # atol: the key bias's true gradient is zero (softmax ignores a shift shared by all keys), so its gradient
        # is rounding noise that Adam scales up to lr-sized steps: 5e-6 apart there, about 1e-8 elsewhere
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def newton_schulz(G, steps=5, a=3.4445, b=-4.7750, c=2.0315):
    """The Muon paper's quintic iteration, written out: X -> a X + (b A + c A^2) X with A = X X^T, from G scaled to
    spectral norm <= 1 (Frobenius), on the wide orientation; pushes every singular value of G towards 1."""
    X = G / (G.norm() + 1e-7)
    wide = X.size(0) <= X.size(1)
    X = X if wide else X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X if wide else X.T


def test_muon_updates_the_block_matrices_as_the_paper_and_adamw_the_rest():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    opt = model.configure_optimizers(0.1, 3e-3, optimizer="muon")
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for g in opt.optimizers["muon"].param_groups for p in g["params"]]
    assert sorted(muon) == sorted(n for n, p in model.named_parameters() if p.dim() == 2 and ".h." in n)
    adamw = [names[id(p)] for g in opt.optimizers["adamw"].param_groups for p in g["params"]]
    assert "lm_head.weight" in adamw or "transformer.wte.weight" in adamw  # the tied embedding: AdamW
    assert len(muon) + len(adamw) == len(list(model.parameters()))  # every parameter once
    W = model.transformer.h[0].mlp.c_fc.weight  # (4C, C) = (128, 32): a tall matrix
    before = W.detach().clone()
    model(*(lambda x: (x[:, :-1], x[:, 1:]))(tokens(64, B=4, T=17)))[1].backward()
    G = W.grad.clone()
    for group in opt.param_groups:
        group["lr"] = 3e-3  # as the trainer sets it: one schedule for both
    opt.step()
    # first step: the momentum buffer and its Nesterov mix are multiples of G (the scale cancels in the
    # normalisation); decoupled weight decay; the step scaled to AdamW's size, 0.2 sqrt(max(rows, cols))
    update = newton_schulz(G) * 0.2 * math.sqrt(max(W.shape))
    taken = (before * (1 - 3e-3 * 0.1) - W.detach()) / 3e-3
    # in bfloat16 (newton_schulz_dtype: CUDA, bf16-capable CPUs) the iteration amplifies rounding in the small
    # singular directions: 4 % apart here (1-3 % on random matrices); fp32 is far closer. Torch's default
    # "original" scale, sqrt(rows / cols) = 2 instead of 2.26, would be 12 % off.
    assert (taken - update).norm() < 0.08 * update.norm()
    assert (taken - G * (taken.norm() / G.norm())).norm() > 0.3 * taken.norm()  # not a rescaled gradient
    # nearly orthogonal: singular values near 1 whatever G's were; the last one is G's null direction (the
    # LayerNorm before c_fc centres its input, so G has rank C - 1) and stays 0
    s, g = torch.linalg.svdvals(update / (0.2 * math.sqrt(max(W.shape))))[:-1], torch.linalg.svdvals(G)[:-1]
    assert 0.5 < s.min() and s.max() < 1.5 and g.max() / g.min() > 5


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    x = tokens(64, B=4, T=17)
    opt = model.configure_optimizers(0.0, 3e-3)
    for _ in range(120):
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.05  # from ln(64) = 4.16


def test_chunked_loss_equals_plain_loss_and_gradients():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=300, n_layer=2, n_head=2, n_embd=32))
    x, y = tokens(300, B=20, T=16), tokens(300, B=20, T=16, seed=2)  # 320 rows: 1.25 chunks of 256
    y[0, :5] = -1  # ignored targets
    grads = []
    for return_logits in (True, False):
        logits, loss = model(x, y, return_logits=return_logits)
        (loss * 0.5).backward()  # a scaled loss, as with gradient accumulation
        grads.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        model.zero_grad()
        assert (logits is None) == (not return_logits)
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    for n, g in grads[0][1].items():
        assert (g - grads[1][1][n]).abs().max().item() <= 1e-6, n
    with torch.no_grad():  # no gradient wanted: the plain path, logits included
        assert model(x, y, return_logits=False)[0] is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the plain path too
        assert model(x, y, return_logits=False)[0] is not None


@pytest.mark.parametrize("chunk", [7, 256, 1000])
def test_linear_cross_entropy_equals_cross_entropy_of_the_head(chunk):
    """value and both gradients (rows h and weight W) of mean CE(h @ W.T, y), ignored rows included, to fp32
    rounding; chunks that divide the rows, do not, and exceed them"""
    g = torch.Generator().manual_seed(0)
    h, W = torch.randn(300, 24, generator=g), torch.randn(500, 24, generator=g) * 0.3
    y = torch.randint(0, 500, (300,), generator=g)
    y[::7] = -1
    grads = []
    for fused in (False, True):
        hh, WW = h.clone().requires_grad_(), W.clone().requires_grad_()
        loss = (mg.LinearCrossEntropy.apply(hh, WW, y, chunk) if fused
                else F.cross_entropy(hh @ WW.t(), y, ignore_index=-1))
        (3 * loss).backward()
        grads.append((loss.detach(), hh.grad, WW.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_newton_schulz_dtype_follows_the_device(monkeypatch):
    """bf16 where the hardware computes it natively, fp32 where it would be emulated (AVX2, plain AVX-512)"""
    monkeypatch.setattr(mg, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512bw"}))
    assert mg.newton_schulz_dtype("cpu") == torch.float32
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(mg, "cpu_flags", lambda: frozenset({"avx2", flag}))
        assert mg.newton_schulz_dtype("cpu") == torch.bfloat16
    assert mg.newton_schulz_dtype("cuda") == torch.bfloat16 and mg.newton_schulz_dtype("mps") == torch.float32
    model = GPT(GPTConfig(block_size=8, vocab_size=50, n_layer=1, n_head=1, n_embd=8))
    assert model.configure_optimizers(0.1, 1e-3, optimizer="muon").optimizers["muon"].ns_dtype == torch.bfloat16


def muon_steps(opt, params, grads):
    """Step `opt` once per gradient list (the same gradients for every optimizer compared)."""
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()


def test_muon_in_bf16_is_torch_muon_and_in_fp32_is_closer_to_exact():
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g) * 0.1 for s in ((96, 32), (32, 32), (32, 128))]  # tall, square, wide
    grads = [[torch.randn(p.shape, generator=g) for p in start] for _ in range(3)]
    runs = {}
    for name in ("torch", "bf16", "fp32", "fp64"):
        params = [torch.nn.Parameter(p.clone().double() if name == "fp64" else p.clone()) for p in start]
        kw = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
        opt = (torch.optim.Muon(params, **kw) if name == "torch" else mg.Muon(params, ns_dtype={
            "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}[name], **kw))
        muon_steps(opt, params, [[x.double() if name == "fp64" else x for x in gs] for gs in grads])
        runs[name] = [(p.detach() - s.to(p.dtype)).float() for p, s in zip(params, start)]  # the steps taken
    for t, b, f, e in zip(*runs.values()):
        assert torch.equal(t, b)  # the same function as torch's, op for op
        # bf16 keeps ~3 significant digits and the iteration amplifies rounding: a few % of the update
        assert (f - b).norm() < 0.08 * b.norm()
        assert (f - e).norm() < 1e-4 * e.norm() < (b - e).norm()  # fp32: at the exact iteration's rounding
    for G in grads[0]:  # the iteration alone against the naive one above, in fp64
        exact = newton_schulz(G.double())
        assert (mg.newton_schulz(G, dtype=torch.float32) - exact).norm() < 1e-5 * exact.norm()
        assert (mg.newton_schulz(G, dtype=torch.bfloat16) - exact).norm() < 0.05 * exact.norm()


def test_muon_checkpoints_are_torch_muon_checkpoints_and_resume_exactly():
    """the same state_dict layout as torch.optim.Muon (either loads the other's), and a run stopped after 2 steps
    and resumed from its state dict ends on the same weights as one run straight through"""
    g = torch.Generator().manual_seed(1)
    start = [torch.randn(s, generator=g) for s in ((24, 8), (8, 24))]
    grads = [[torch.randn(p.shape, generator=g) for p in start] for _ in range(4)]
    params = [torch.nn.Parameter(p.clone()) for p in start]
    ours, theirs = mg.Muon(params, ns_dtype=torch.float32, lr=0.01), torch.optim.Muon(params, lr=0.01)
    muon_steps(ours, params, grads[:2])
    state = copy.deepcopy(ours.state_dict())  # as saved: a state dict's tensors are the live buffers
    theirs.load_state_dict(copy.deepcopy(state))
    assert state.keys() == theirs.state_dict().keys() and state["param_groups"] == theirs.state_dict()["param_groups"]
    assert state["state"][0].keys() == {"momentum_buffer"}
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = mg.Muon(resumed_params, ns_dtype=torch.float32, lr=0.01)
    resumed.load_state_dict(state)
    muon_steps(ours, params, grads[2:])
    muon_steps(resumed, resumed_params, grads[2:])
    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params))
