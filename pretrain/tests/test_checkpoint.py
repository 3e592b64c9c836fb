"""checkpoint.py: safe loading (weights_only), what a path may name, keep-last-K, one-line errors; export.py."""
import pickle

import pytest
import torch

import checkpoint
from checkpoint import CheckpointError, resolve_checkpoint
from conftest import load_checkpoint
from config import CKPT_FORMAT
from export import load_model


def test_run_folder_pointer_and_step_file_name_the_same_checkpoint(tiny_run):
    newest = resolve_checkpoint(tiny_run)
    assert newest.name == "ckpt_000006.pt" == (tiny_run / "latest").read_text().strip()
    assert resolve_checkpoint(tiny_run / "latest") == newest == resolve_checkpoint(newest)
    from_ckpt, from_hf = load_model(tiny_run), load_model(tiny_run / "hf")  # the final export = the last checkpoint
    for k, v in from_ckpt.state_dict().items():
        assert torch.equal(v, from_hf.state_dict()[k]), k
    older = checkpoint.step_checkpoints(tiny_run)  # ckpt_interval 3: checkpoints at 3 and 6 (keep 2)
    assert [p.name for p in older] == ["ckpt_000003.pt", "ckpt_000006.pt"]
    assert load_checkpoint(older[0])["step"] == 3


def test_keeps_the_last_k_and_never_unpickles(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in range(1, 6):
        checkpoint.save_checkpoint(tmp_path, {"step": step, "model": model.state_dict()}, CKPT_FORMAT,
                                   keep=2)
    assert [p.name for p in checkpoint.step_checkpoints(tmp_path)] == ["ckpt_000004.pt", "ckpt_000005.pt"]
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left
    # a pickle that would run code when unpickled: refused by the safe loader, and the code never runs
    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "pwned"),))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": CKPT_FORMAT, "model": Evil()}, f)
    with pytest.raises(CheckpointError, match="refused: holds Python objects"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), r"truncated or not a PyTorch checkpoint \(0 bytes\)"),
    (lambda p: p.write_text("hello"), r"truncated or not a PyTorch checkpoint \(5 bytes\)"),
    (lambda p: torch.save({"x": 1}, p), "expected 'llmhw-pretrain-checkpoint/4'"),
    (lambda p: torch.save({"format": "llmhw-pretrain-checkpoint", "format_version": 2, "step": 1}, p),
     "format 'llmhw-pretrain-checkpoint', expected 'llmhw-pretrain-checkpoint/4'"),
])
def test_foreign_files_give_one_line(tmp_path, make, message):
    make(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(tmp_path / "x.pt")
    assert "\n" not in str(e.value) and "x.pt" in str(e.value)


def test_truncated_checkpoint_and_bad_pointers(tiny_run, tmp_path):
    data = resolve_checkpoint(tiny_run).read_bytes()
    (tmp_path / "ckpt_000001.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "ckpt_000001.pt")
    (tmp_path / "latest").write_text("ckpt_000009.pt\n")
    with pytest.raises(CheckpointError, match="not a pointer to a checkpoint here \\('ckpt_000009.pt'\\)"):
        load_checkpoint(tmp_path)
    (tmp_path / "latest").write_text("../../etc/passwd\n")
    with pytest.raises(CheckpointError, match="not a pointer to a checkpoint here"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no such checkpoint \\(no 'latest' pointer file\\)"):
        load_checkpoint(tmp_path / "empty_run")


def test_export_of_an_intermediate_step_loads_with_transformers(tiny_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import export

    export.main([str(tiny_run / "ckpt_000003.pt"), "--out_dir", str(tmp_path / "hf3")])
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf3").eval()
    ids = AutoTokenizer.from_pretrained(tmp_path / "hf3")("To be, or not", return_tensors="pt")["input_ids"]
    ours = load_model(tiny_run / "ckpt_000003.pt").eval()
    with torch.no_grad():
        assert (ours(ids)[0] - hf(ids).logits).abs().max().item() <= 1e-5
