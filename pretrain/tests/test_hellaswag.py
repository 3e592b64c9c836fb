"""hellaswag.py: our model's score equals the HF model's with the same weights, scoring equals a naive reference,
the per-character acc_norm equals lm-eval-harness's formula, odd rows end in one line, data-file choice,
standalone CLI on a HF directory and on our checkpoint."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

import fileio
import hellaswag
from conftest import user_error
from prepare import load_tokenizer
from modeling_gpt2 import GPT


def continuation_lls(model, tok, ex):
    """Reference: each ending scored alone, unpadded: (log-likelihood of the tokens of " " + ending given the
    context, summed token by token; its token count), as lm-eval's loglikelihood request computes it."""
    ctx = tok.encode(ex["ctx"])
    lls, lengths = [], []
    for ending in ex["endings"]:
        cont = tok.encode(" " + ending)
        x = torch.tensor([(ctx + cont)[-64:]])
        logp = F.log_softmax(model(x).logits[0].double(), dim=-1)
        n = x.size(1)
        lls.append(sum(logp[t - 1, x[0, t]].item() for t in range(n - len(cont), n)))
        lengths.append(len(cont))
    return np.array(lls), np.array(lengths)


def naive_pred_norm(lls, n_tokens):
    """build-nanogpt's pick: the lowest mean token loss."""
    means = -lls / n_tokens
    return min(range(4), key=means.__getitem__)


def lm_eval_pred_norm(lls, ex):
    """lm-eval-harness's acc_norm pick, as lm_eval/api/task.py process_results writes it."""
    completion_len = np.array([float(len(i)) for i in ex["endings"]])
    return int(np.argmax(lls / completion_len))


def test_ours_equals_hf_and_naive_reference(hf_tiny_dir):
    tok = load_tokenizer("gpt2")
    examples = hellaswag.load_examples(hellaswag.find_data(), 12)
    hf = GPT2LMHeadModel.from_pretrained(hf_tiny_dir).eval()
    ours = GPT.from_pretrained(hf_tiny_dir).eval()
    r_ours = hellaswag.evaluate(lambda x: ours(x)[0], tok, examples, 64)
    r_hf = hellaswag.evaluate(lambda x: hf(x).logits, tok, examples, 64)
    assert r_ours == r_hf and r_ours["n"] == 12
    with torch.no_grad():
        reference = [continuation_lls(hf, tok, ex) for ex in examples]
    assert r_ours["preds_norm"] == [naive_pred_norm(*ref) for ref in reference]
    assert r_ours["preds_norm_char"] == [lm_eval_pred_norm(ref[0], ex) for ref, ex in zip(reference, examples)]
    assert r_ours["preds_norm"] != r_ours["preds_norm_char"]  # on these 12 examples the conventions disagree
    # split over 3 "ranks", the counts add up to the single-process ones
    parts = [hellaswag.evaluate(lambda x: ours(x)[0], tok, examples, 64, rank=r, world_size=3) for r in range(3)]
    assert sum(p["correct_norm"] for p in parts) == r_ours["correct_norm"] and sum(p["n"] for p in parts) == 12
    assert sum(p["correct_norm_char"] for p in parts) == r_ours["correct_norm_char"]


class WordTokenizer:
    """Toy tokenizer: one token per space-separated word of a fixed vocabulary."""
    vocab = {"<rest>": 0, "ctx": 1, "aaaaaaaa": 2, "b": 3, "c": 4, "d": 5, "e": 6}

    def encode(self, text):
        return [self.vocab[w] for w in text.split()]


# Toy unigram model: every position predicts these log-probabilities (the rest of the mass on "<rest>"), so an
# ending's log-likelihood is the sum over its words, checkable by hand.
LOGP = {"aaaaaaaa": -6.6, "b": -4.5, "c": -4.5, "d": -6.0, "e": -1.8}


def unigram_logits(tokens):
    logp = torch.full((len(WordTokenizer.vocab),), -math.inf, dtype=torch.float64)
    for word, lp in LOGP.items():
        logp[WordTokenizer.vocab[word]] = lp
    logp[0] = math.log(1 - sum(math.exp(v) for v in LOGP.values()))
    return logp.expand(*tokens.shape, -1)  # (B, L, V): log_softmax of it is itself


def test_three_conventions_on_hand_made_examples():
    """By hand: endings (log-likelihood, tokens, characters) = aaaaaaaa (-6.6, 1, 8), 'b c' (-9.0, 2, 3),
    d (-6.0, 1, 1), 'e e e e' (-7.2, 4, 7). Highest total: d. Per token: -6.6, -4.5, -6.0, -1.8 -> 'e e e e'.
    Per character (lm-eval): -0.825, -3.0, -6.0, -1.03 -> aaaaaaaa. Three conventions, three different picks."""
    endings = ["aaaaaaaa", "b c", "d", "e e e e"]
    tok = WordTokenizer()
    tokens, mask, _ = hellaswag.render(tok, {"ctx": "ctx", "endings": endings, "label": 0}, 64)
    picks = hellaswag.score(unigram_logits(tokens), tokens, mask, [len(e) for e in endings])
    assert picks == {"acc": 2, "acc_norm_per_token": 3, "acc_norm_per_char": 0}
    # lm-eval's formula, literally (lls / completion_len, np.argmax), on the hand-computed log-likelihoods
    lls = np.array([-6.6, -9.0, -6.0, -7.2])
    assert int(np.argmax(lls / np.array([float(len(i)) for i in endings]))) == picks["acc_norm_per_char"]
    assert int(np.argmax(lls)) == picks["acc"]
    # each label is credited to the convention that picks it; accuracies carry sqrt(p (1 - p) / n)
    examples = [{"ctx": "ctx", "endings": endings, "label": label} for label in (0, 2, 3, 1)]
    counts = hellaswag.evaluate(unigram_logits, tok, examples, 64)
    assert (counts["correct"], counts["correct_norm"], counts["correct_norm_char"]) == (1, 1, 1)
    acc = hellaswag.accuracies(counts)
    assert acc["acc_norm_per_char"] == 0.25 and acc["acc_norm_per_char_stderr"] == pytest.approx(
        math.sqrt(0.25 * 0.75 / 4))


ODD_ROWS = {
    "not JSON": ('{"ctx": "a", "endings": [', "not JSON"),
    "not an object": ('["a", "b"]', "not a JSON object"),
    "no ctx": (json.dumps({"endings": ["a", "b", "c", "d"], "label": 0}), "field 'ctx' is missing"),
    "ctx not text": (json.dumps({"ctx": 3, "endings": ["a", "b", "c", "d"], "label": 0}), "field 'ctx' is int"),
    "3 endings": (json.dumps({"ctx": "x", "endings": ["a", "b", "c"], "label": 0}), "field 'endings' must be"),
    "ending not text": (json.dumps({"ctx": "x", "endings": ["a", "b", "c", 4], "label": 0}), "field 'endings'"),
    "label 4": (json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 4}), "field 'label' is 4"),
    "label true": (json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": True}), "field 'label' is T"),
    "no label": (json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"]}), "field 'label' is missing"),
}


@pytest.mark.parametrize("case", list(ODD_ROWS) + ["not UTF-8"])
def test_odd_rows_end_in_one_line_naming_file_line_field(tmp_path, case, hf_tiny_dir, capsys):
    good = json.dumps({"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": "1"})  # text label, as on the hub
    (tmp_path / "hellaswag").mkdir()
    path = tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    if case == "not UTF-8":
        path.write_bytes(good.encode() + b"\n" + b'{"ctx": "\xff"}\n')
        words = "not UTF-8"
    else:
        row, words = ODD_ROWS[case]
        path.write_text(good + "\n" + row + "\n", encoding="utf-8")
    assert hellaswag.load_examples(path, 1)[0]["label"] == 1
    with pytest.raises(hellaswag.DataError, match=f"^{path}:2: ") as e:
        hellaswag.load_examples(path)
    assert words in str(e.value) and "\n" not in str(e.value)
    # the command line says it in one line, before loading any model
    err = user_error(hellaswag.main, ["--model", str(hf_tiny_dir), "--data_dir", str(tmp_path), "--out",
                                      str(tmp_path / "o.json")], capsys)
    assert err.startswith(f"error: {path}:2: ")
    assert not (tmp_path / "o.json").exists()


def test_data_file_preference(tmp_path):
    line = json.dumps({"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": 1}) + "\n"
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "hellaswag_val_activitynet.jsonl").write_text(line)
    assert hellaswag.find_data(tmp_path).name == "hellaswag_val_activitynet.jsonl"
    (tmp_path / "hellaswag" / "hellaswag_val.jsonl").write_text(line * 3 + '{"ctx": "x", "endings": []}\n')
    assert hellaswag.find_data(tmp_path).name == "hellaswag_val.jsonl"
    assert len(hellaswag.load_examples(tmp_path / "hellaswag" / "hellaswag_val.jsonl", 2)) == 2
    with pytest.raises(ValueError, match=r"hellaswag_val.jsonl:4: field 'label' is missing"):
        hellaswag.load_examples(tmp_path / "hellaswag" / "hellaswag_val.jsonl")
    # the offline subset itself: 3,243 well-formed examples
    assert len(hellaswag.load_examples(fileio.find("hellaswag/hellaswag_val_activitynet.jsonl"))) == 3243


def test_cli_on_hf_dir_and_checkpoints_agree(tiny_run, capsys, tmp_path):
    import checkpoint

    step_file = checkpoint.step_checkpoints(tiny_run)[-1]
    runs = {}
    for name, args in {"hf": [str(tiny_run / "hf")], "run": [str(tiny_run)], "latest": [str(tiny_run / "latest")],
                       "step": [str(step_file)], "transformers": [str(tiny_run / "hf"), "--hf"]}.items():
        out = tmp_path / f"new_folder_{name}" / "hs.json"  # --out into a folder that does not exist yet
        result = hellaswag.main(["--model", *args, "--limit", "8", "--out", str(out)])
        assert json.loads(out.read_text()) == result
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
        runs[name] = result
    figures = ("n", "acc", "acc_norm_per_token", "acc_norm_per_char", "acc_stderr")
    assert runs["hf"]["n"] == 8 and all(
        [r[k] for k in figures] == [runs["hf"][k] for k in figures] for r in runs.values())
    p = runs["hf"]["acc_norm_per_char"]
    assert runs["hf"]["acc_norm_per_char_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 8))
    assert set(runs["hf"]["conventions"]) == {"acc", "acc_norm_per_token", "acc_norm_per_char"}
    # and train.py's own final evaluation on the same 8 examples (build-nanogpt's per-token acc_norm)
    log = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert [r["hellaswag_acc_norm"] for r in log if "hellaswag_acc_norm" in r][-1] == runs["run"]["acc_norm_per_token"]
    # the default output goes into the run folder
    hellaswag.main(["--model", str(tiny_run), "--limit", "2"])
    assert json.loads((tiny_run / "hellaswag.json").read_text())["n"] == 2


class RunsCode:
    """A pickle that would create a file when unpickled (what a crafted checkpoint could do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_or_foreign_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    crafted = tmp_path / "ckpt_000001.pt"
    torch.save({"model": RunsCode(marker)}, crafted)
    text = tmp_path / "ckpt_000002.pt"
    text.write_text("hello")
    for bad in (crafted, text, tmp_path / "missing.pt"):
        err = user_error(hellaswag.main, ["--model", str(bad), "--limit", "1", "--out", str(tmp_path / "o.json")],
                         capsys)
        assert err.startswith(f"error: {bad}")
    assert not marker.exists() and not (tmp_path / "o.json").exists()
