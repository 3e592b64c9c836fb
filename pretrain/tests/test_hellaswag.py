"""hellaswag.py: our model's score equals the HF model's with the same weights, scoring equals a naive reference,
data-file choice, standalone CLI on a HF directory and on our checkpoint."""
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

import datadir
import hellaswag
import text_tokenizer
from modeling_gpt2 import GPT


def naive_pred_norm(model, tok, ex):
    """Reference: score each ending alone, unpadded, summing -log p of its tokens token by token."""
    ctx = tok.encode(ex["ctx"])
    means = []
    for ending in ex["endings"]:
        end = tok.encode(" " + ending)
        x = torch.tensor([(ctx + end)[-64:]])
        logp = F.log_softmax(model(x).logits[0].double(), dim=-1)
        n = x.size(1)
        means.append(-sum(logp[t - 1, x[0, t]].item() for t in range(n - len(end), n)) / len(end))
    return min(range(4), key=means.__getitem__)


def test_ours_equals_hf_and_naive_reference(hf_tiny_dir):
    tok = text_tokenizer.load("gpt2")
    examples = hellaswag.load_examples(hellaswag.find_data(), 12)
    hf = GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()
    ours = GPT.from_pretrained(hf_tiny_dir).eval()
    r_ours = hellaswag.evaluate(lambda x: ours(x)[0], tok, examples, 64)
    r_hf = hellaswag.evaluate(lambda x: hf(x).logits, tok, examples, 64)
    assert r_ours == r_hf and r_ours["n"] == 12
    with torch.no_grad():
        assert r_ours["preds_norm"] == [naive_pred_norm(hf, tok, ex) for ex in examples]
    # split over 3 "ranks", the counts add up to the single-process ones
    parts = [hellaswag.evaluate(lambda x: ours(x)[0], tok, examples, 64, rank=r, world_size=3) for r in range(3)]
    assert sum(p["correct_norm"] for p in parts) == r_ours["correct_norm"] and sum(p["n"] for p in parts) == 12


def test_data_file_preference(tmp_path):
    line = json.dumps({"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": 1}) + "\n"
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "hellaswag_val_activitynet.jsonl").write_text(line)
    assert hellaswag.find_data(tmp_path).name == "hellaswag_val_activitynet.jsonl"
    (tmp_path / "hellaswag" / "hellaswag_val.jsonl").write_text(line * 3 + '{"ctx": "x", "endings": []}\n')
    assert hellaswag.find_data(tmp_path).name == "hellaswag_val.jsonl"
    assert len(hellaswag.load_examples(tmp_path / "hellaswag" / "hellaswag_val.jsonl", 2)) == 2
    with pytest.raises(ValueError, match=r"hellaswag_val.jsonl:4: not a HellaSwag example"):
        hellaswag.load_examples(tmp_path / "hellaswag" / "hellaswag_val.jsonl")
    # the offline subset itself: 3,243 well-formed examples
    assert len(hellaswag.load_examples(datadir.find("hellaswag/hellaswag_val_activitynet.jsonl"))) == 3243


def test_cli_on_hf_dir_and_checkpoint_agree(tiny_run, capsys):
    runs = {}
    for name, args in {"hf": [str(tiny_run / "hf")], "ckpt": [str(tiny_run / "ckpt.pt")],
                       "transformers": [str(tiny_run / "hf"), "--hf"]}.items():
        out = tiny_run / f"new_folder_{name}" / "hs.json"  # --out into a folder that does not exist yet
        result = hellaswag.main(["--model", *args, "--limit", "8", "--out", str(out)])
        assert json.loads(out.read_text()) == result
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
        runs[name] = result
    assert runs["hf"]["n"] == 8 and runs["hf"]["acc_norm"] == runs["ckpt"]["acc_norm"] == \
        runs["transformers"]["acc_norm"]
    # and train.py's own final evaluation on the same 8 examples
    log = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert [r["hellaswag_acc_norm"] for r in log if "hellaswag_acc_norm" in r][-1] == runs["ckpt"]["acc_norm"]
