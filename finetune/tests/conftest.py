"""Shared fixtures: the folder on sys.path, the offline data directory, tiny random GPT-2 models built locally
(no pretrained weights exist offline), and the one-line refusal every script prints."""
import contextlib
import io
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fileio  # noqa: E402


@pytest.fixture(scope="session")
def alpaca_path() -> Path:
    return fileio.find("alpaca/alpaca_data.json.xz")  # fails loudly when the data directory lacks it


def tiny_gpt2(vocab_size=50257, n_embd=16, n_layer=2, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=2, vocab_size=vocab_size, n_positions=256,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def gpt2_tok():
    import data
    return data.gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, gpt2_tok) -> Path:
    """A complete HF model folder: random tiny GPT-2 with GPT-2's vocabulary, plus the GPT-2 tokenizer."""
    d = tmp_path_factory.mktemp("tiny_gpt2")
    tiny_gpt2().save_pretrained(d)
    gpt2_tok.save_pretrained(d)
    return d


def user_error(main, argv) -> str:
    """The one line ``main(argv)`` prints on stderr when it refuses its input: exit status 2, one "error:" line."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(err):
        main(argv)
    lines = [line for line in err.getvalue().replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert e.value.code == 2 and len(lines) == 1, err.getvalue()
    return lines[0]


def contents(folder) -> dict:
    """{name: bytes} of a folder's files, without fileio's lock file (a writer's claim, not an output)."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.name != fileio.LOCK}
