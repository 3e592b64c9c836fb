"""merge.py: base + adapter (ours or PEFT's) -> a standalone HF folder whose logits equal PEFT's merge_and_unload;
output built aside, inputs never written over, mismatches refused in one line."""
import json

import pytest
import torch
from conftest import contents, tiny_gpt2, user_error

import lora
import merge


def random_adapter(folder, base_name, n_embd=16, rank=4, rslora=False, seed=3):
    """Our adapter with random (non-zero) L and R on every Conv1D of the blocks, saved with PEFT's files too."""
    model = tiny_gpt2(n_embd=n_embd)
    lora.convert_linear_layer_to_lora(model, "h.", lora_dim=rank, lora_scaling=8, use_rslora=rslora)
    torch.manual_seed(seed)
    for m in lora.lora_modules(model).values():
        torch.nn.init.normal_(m.lora_left_weight, std=0.3)
    return lora.save_adapter(model, folder, base_model_name_or_path=base_name)


def peft_merged_logits(base_dir, adapter_dir, ids):
    """Reference: PEFT loads the adapter onto the base and merges it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().eval()
    with torch.no_grad():
        return merged(ids).logits


def load_standalone(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


IDS = torch.tensor([[15496, 995, 11, 428, 318, 257, 1332, 13, 50256, 40, 716]])


@pytest.mark.parametrize("rslora", [False, True])
def test_our_adapter_merged_equals_peft_merge_and_unload(tiny_model_dir, tmp_path, rslora):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = random_adapter(tmp_path / "adapter", str(tiny_model_dir), rslora=rslora)
    out = merge.main(["--base", str(tiny_model_dir), "--adapter", str(adapter), "--out_dir", str(tmp_path / "m")])
    model = load_standalone(out)
    with torch.no_grad():
        logits = model(IDS).logits
    assert torch.allclose(logits, peft_merged_logits(tiny_model_dir, adapter, IDS), atol=1e-5, rtol=0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        assert (logits - base(IDS).logits).abs().max() > 1e-2  # the adapter did change the model
    assert set(model.state_dict()) == set(base.state_dict())  # plain GPT-2: no LoRA tensors, same names
    assert {"config.json", "model.safetensors", "merge.json"} <= {p.name for p in out.iterdir()}
    assert AutoTokenizer.from_pretrained(out)("Hello world")["input_ids"] == [15496, 995]
    info = json.loads((out / "merge.json").read_text())
    assert info["format"] == "llmhw-merged-model" and info["adapter_config"]["lora_dim"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_peft_made_adapter_merged_equals_peft(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=5, target_modules=["c_attn", "c_fc"],
                                                 fan_in_fan_out=True, init_lora_weights=True))
    torch.manual_seed(4)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.3)
    peft_model.save_pretrained(tmp_path / "peft")
    assert not (tmp_path / "peft" / "lora_config.json").exists()  # PEFT's files only
    out = merge.main(["--base", str(tiny_model_dir), "--adapter", str(tmp_path / "peft"),
                      "--out_dir", str(tmp_path / "m")])  # PEFT recorded the base's folder: no flag needed
    with torch.no_grad():
        logits = load_standalone(out)(IDS).logits
    assert torch.allclose(logits, peft_merged_logits(tiny_model_dir, tmp_path / "peft", IDS), atol=1e-5, rtol=0)


def test_refusals_are_one_line_and_leave_everything_in_place(tiny_model_dir, tmp_path, gpt2_tok):
    adapter = random_adapter(tmp_path / "adapter", str(tiny_model_dir))
    other = random_adapter(tmp_path / "other", "someone/other-model", seed=5)
    wide = tmp_path / "wide_base"
    tiny_gpt2(n_embd=32).save_pretrained(wide)
    wide_adapter = random_adapter(tmp_path / "wide_adapter", str(tiny_model_dir), n_embd=32)
    good = merge.main(["--base", str(tiny_model_dir), "--adapter", str(adapter), "--out_dir",
                       str(tmp_path / "m")])
    before = contents(good)
    base_files = contents(tiny_model_dir)
    args = lambda a, o, *x: ["--base", str(tiny_model_dir), "--adapter", str(a), "--out_dir", str(o), *x]  # noqa
    cases = [
        (args(adapter, tiny_model_dir, "--overwrite"), f"holds (or is inside) the input {tiny_model_dir}"),
        (args(adapter, adapter, "--overwrite"), f"holds (or is inside) the input {adapter}"),
        (args(adapter, tmp_path, "--overwrite"), "holds (or is inside) the input"),  # the swap would delete them
        (args(adapter, tmp_path / "user", "--overwrite"), "not a merged model's output (notes.txt)"),
        (args(other, tmp_path / "n"), "was trained on someone/other-model, but --base is"),
        (args(wide_adapter, tmp_path / "m", "--overwrite", "--allow_other_base"), "has shape"),
        (args(tmp_path / "wide_base", tmp_path / "n"), "not an adapter folder"),
        (args(adapter, tmp_path / "m"), "merged model output (config.json"),  # an earlier one: --overwrite
        (args(adapter, tmp_path / "adapter" / "lora_config.json" / "x"), "holds (or is inside) the input"),
        (["--base", str(tmp_path / "nope"), "--adapter", str(adapter), "--out_dir", str(tmp_path / "n"),
          "--allow_other_base"], "cannot load model"),
        (["--adapter", str(adapter), "--out_dir", str(tmp_path / "n")], "--base is required"),
    ]
    (tmp_path / "afile").write_text("x")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("a user's file: never deleted, --overwrite or not")
    cases.append((args(adapter, tmp_path / "afile"), "is a file"))
    for argv, message in cases:
        assert message in user_error(merge.main, argv), argv
    assert contents(good) == before  # the earlier output survived the refusals
    assert contents(tiny_model_dir) == base_files
    assert not (tmp_path / "n").exists()
    assert [p.name for p in (tmp_path / "user").iterdir()] == ["notes.txt"]
    merge.main(args(other, tmp_path / "m", "--overwrite", "--allow_other_base"))  # told: replaced as a whole
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != before["model.safetensors"]


def test_disk_full_while_saving_keeps_the_earlier_output(tiny_model_dir, tmp_path, monkeypatch):
    import errno

    adapter = random_adapter(tmp_path / "adapter", str(tiny_model_dir))
    out = merge.main(["--base", str(tiny_model_dir), "--adapter", str(adapter), "--out_dir", str(tmp_path / "m")])
    before = contents(out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", full)
    assert "no space left on the disk" in user_error(merge.main, ["--base", str(tiny_model_dir), "--adapter",
                                                                  str(adapter), "--out_dir", str(out), "--overwrite"])
    assert contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "m"]  # no temp folder left behind
