"""sample.py: greedy continuations from our checkpoint equal transformers' generate on the HF export of the same
weights; every way of naming a checkpoint works; seeds repeat; bad inputs end in one line."""
import json

import pytest
import torch
from transformers import GPT2LMHeadModel

import checkpoint
import sample
from modeling_gpt2 import GPT, GPTConfig
from config import CKPT_FORMAT
from conftest import user_error
from prepare import load_tokenizer

PROMPTS = ["Hello, I'm a language model,", "The capital of France is"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as train.py leaves it: two step checkpoints + latest, tokenizer/, hf/ (a random tiny GPT-2)."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    tok = load_tokenizer("gpt2")
    files = sorted(tok.write_files(run / "tokenizer", hf=True, model_max_length=config.block_size).glob("[!.]*"))
    for step in (500, 1000):
        state = {"model": model.state_dict(), "model_config": vars(config), "step": step, "optimizer": {},
                 "data_position": {}, "rng": {}, "train_config": {}, "tokenizer": tok.describe()}
        checkpoint.save_checkpoint(run, state, CKPT_FORMAT, keep=2)
    model.save_hf(run / "hf", eos_token_id=tok.eot_id, extra_files=files)
    return run


def reference_greedy(hf_dir, prompt: str, n: int) -> str:
    """transformers' own greedy generate on the HF export, decoded with the GPT-2 tokenizer, cut at end-of-text."""
    tok = load_tokenizer("gpt2")
    model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    x = torch.tensor([tok.encode(prompt)])
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                         pad_token_id=tok.eot_id)[0, x.size(1):].tolist()
    return tok.decode(out[:out.index(tok.eot_id)] if tok.eot_id in out else out)


def continuations(doc: dict) -> list[str]:
    return [r["continuation"] for r in doc["samples"]]


def test_greedy_from_checkpoint_equals_transformers_generate(run_dir, tmp_path, capsys):
    flags = ["--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--temperature", "0", "--max_new_tokens", "12"]
    out = tmp_path / "samples" / "s.json"
    doc = sample.main(["--model", str(run_dir), *flags, "--out", str(out)])
    assert doc["loader"] == "ours" and json.loads(out.read_text()) == doc
    expected = [reference_greedy(run_dir / "hf", p, 12) for p in PROMPTS]
    assert continuations(doc) == expected and all(expected)
    assert f"{PROMPTS[0]}{expected[0]}" in capsys.readouterr().out
    # the same model named as the latest pointer, a step file, and the HF folder (transformers' loader)
    for model in (run_dir / "latest", run_dir / "ckpt_000500.pt", run_dir / "hf"):
        assert continuations(sample.main(["--model", str(model), *flags])) == expected
    assert sample.main(["--model", str(run_dir / "hf"), *flags])["loader"] == "transformers"


def test_top_k_1_and_top_p_0_are_greedy_and_seeds_repeat(run_dir, tmp_path):
    base = ["--model", str(run_dir), "--prompt", PROMPTS[0], "--max_new_tokens", "8"]
    greedy = continuations(sample.main([*base, "--temperature", "0"]))
    assert continuations(sample.main([*base, "--top_k", "1", "--num_samples", "2"])) == greedy * 2
    assert continuations(sample.main([*base, "--top_k", "0", "--top_p", "0"])) == greedy
    for model in (run_dir, run_dir / "hf"):  # ours and transformers' sampling: a seed gives the same samples again
        args = ["--model", str(model), "--prompt", PROMPTS[0], "--max_new_tokens", "8", "--num_samples", "3"]
        a, b = (continuations(sample.main([*args, "--seed", "7"])) for _ in range(2))
        c = continuations(sample.main([*args, "--seed", "8"]))
        assert a == b and a != c and len(set(a)) > 1  # a near-uniform random model: samples differ from each other
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n", encoding="utf-8")
    doc = sample.main(["--model", str(run_dir), "--prompts_file", str(prompts), "--temperature", "0",
                       "--max_new_tokens", "8"])
    assert [r["prompt"] for r in doc["samples"]] == PROMPTS and continuations(doc)[0] == greedy[0]


@pytest.mark.parametrize("case", ["missing", "foreign", "temperature", "nan", "top_p", "no_prompt", "empty_file",
                                  "out_is_dir", "device"])
def test_bad_inputs_end_in_one_line(run_dir, tmp_path, capsys, case):
    foreign = tmp_path / "model.pt"
    foreign.write_bytes(b"not a checkpoint at all")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    ok = ["--model", str(run_dir), "--prompt", "Hi"]
    argv, words = {
        "missing": (["--model", str(tmp_path / "nope"), "--prompt", "Hi"], "no such file"),
        "foreign": (["--model", str(foreign), "--prompt", "Hi"], f"{foreign}: "),
        "temperature": ([*ok, "--temperature", "-1"], "--temperature -1.0"),
        "nan": ([*ok, "--temperature", "nan"], "--temperature nan"),
        "top_p": ([*ok, "--top_p", "1.5"], "top_p 1.5"),
        "no_prompt": (["--model", str(run_dir)], "no prompt"),
        "empty_file": (["--model", str(run_dir), "--prompts_file", str(empty)], "holds no prompt"),
        "out_is_dir": ([*ok, "--out", str(tmp_path)], "is a folder"),
        "device": ([*ok, "--device", "cuda:0"] if not torch.cuda.is_available() else [*ok, "--device", "tpu9"],
                   "--device"),
    }[case]
    assert words in user_error(sample.main, argv, capsys)
