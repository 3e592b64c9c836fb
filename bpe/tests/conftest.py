"""Put bpe/ on sys.path (scripts there import siblings plainly) and share fixtures across the bpe tests."""
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI must be deterministic: Hypothesis draws the same examples on every run and machine (no example database either).
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.load_profile("deterministic")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fileio  # noqa: E402
from tokenizer import Tokenizer, gpt2_encoding  # noqa: E402


@pytest.fixture(scope="session")
def gpt2_tok():
    """Our Tokenizer loaded from OpenAI's GPT-2 files in the data directory (fails if they are missing)."""
    return Tokenizer.from_gpt2_files(fileio.find("gpt2/encoder.json"), fileio.find("gpt2/vocab.bpe"))


@pytest.fixture(scope="session")
def tiktoken_gpt2():
    """tiktoken's own gpt2 encoding, built from the same local files with tiktoken's loader and pattern."""
    return gpt2_encoding()


@pytest.fixture(scope="session")
def manual_text():
    return fileio.find("bpe/manual.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def small_trained():
    """One small trained tokenizer per pattern, with two special tokens (shared by the export tests)."""
    text = fileio.find("bpe/manual.txt").read_text(encoding="utf-8")[:40000] + \
        fileio.find("tinyshakespeare.txt").read_text(encoding="utf-8")[:40000]
    return {p: Tokenizer(p).train(text, 700, special_tokens=["<|endoftext|>", "<|pad|>"])
            for p in ("none", "gpt2", "gpt4")}


@pytest.fixture
def user_error(capsys):
    """``user_error(argv, words)``: train.py refuses ``argv`` as a user error: exit status 2 and one line on stderr
    naming ``words`` (the last line: progress bars come first where the refusal follows training). Returns stderr."""
    import train

    def check(argv, words=""):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            train.main(argv)
        err = capsys.readouterr().err
        line = err.rstrip("\n").split("\n")[-1]
        assert e.value.code == 2 and line.startswith("error: ") and words in line, (e.value.code, err)
        assert err.count("error: ") == 1, err
        return err
    return check
