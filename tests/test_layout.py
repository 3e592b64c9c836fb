"""Cross-folder checks: bpe/, pretrain/, finetune/ and report/ import nothing from each other, the shared helpers'
copies are identical, fileio.find finds data files the way the README says, and the code keeps its plain shape
(functions <= 60 lines, lines <= 120 characters, <= 16 modules a folder, trainers <= 320 lines and 8 local imports)."""
import ast
import re
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["bpe", "pretrain", "finetune", "report"]
# Helpers several folders need: one canonical file, copied identically (folders share no code).
SHARED_COPIES = {
    "fileio.py": ["bpe", "pretrain", "finetune", "report"],
    "ddp.py": ["pretrain", "finetune"],
    "flags.py": ["pretrain", "finetune"],
    "runlog.py": ["pretrain", "finetune"],
    "checkpoint.py": ["pretrain", "finetune"],
    "livelogs.py": ["pretrain/tests", "finetune/tests"],  # test helper: reads back what --live wrote
}


def modules_of(folder):
    """Top-level importable names a folder provides (its .py files and sub-packages)."""
    d = ROOT / folder
    return {p.stem for p in d.glob("*.py")} | {p.name for p in d.iterdir() if (p / "__init__.py").exists()}


def imports_of(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def cross_imports(folder):
    """(file, line, name) for each import in `folder` of a module that only another folder provides."""
    own = modules_of(folder)
    others = set(FOLDERS) - {folder}
    foreign = set(others)
    for other in others:
        foreign |= modules_of(other) - own
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name, line in imports_of(path):
            if name in foreign:
                bad.append((str(path.relative_to(ROOT)), line, name))
        # sys.path tricks that reach into a sibling folder are imports too
        for i, text in enumerate(path.read_text().splitlines(), 1):
            if "sys.path" in text and any(other in text for other in set(FOLDERS) - {folder}):
                bad.append((str(path.relative_to(ROOT)), i, text.strip()))
    return bad


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_imports_nothing_from_the_others(folder):
    assert (ROOT / folder).is_dir(), f"missing folder {folder}/"
    assert cross_imports(folder) == []


def test_cross_import_detector_catches_a_violation(tmp_path, monkeypatch):
    # The check above must be able to fail: plant a file importing pretrain's model from bpe/.
    planted = ROOT / "bpe" / "_planted_violation_test.py"
    planted.write_text("import modeling_gpt2\nfrom finetune import lora\nsys.path.insert(0, '../pretrain')\n")
    try:
        names = {name for _, _, name in cross_imports("bpe")}
    finally:
        planted.unlink()
    assert "finetune" in names and "sys.path.insert(0, '../pretrain')" in names
    if (ROOT / "pretrain" / "modeling_gpt2.py").exists():
        assert "modeling_gpt2" in names


@pytest.mark.parametrize("name", sorted(SHARED_COPIES))
def test_shared_helper_copies_identical(name):
    texts = {f: (ROOT / f / name).read_text() for f in SHARED_COPIES[name]}
    assert len(set(texts.values())) == 1, f"{name} differs between folders; keep one identical copy per folder"
    assert "identical copy" in next(iter(texts.values()))[:600], f"{name} must say in its docstring that it is copied"


def load_fileio(folder="bpe"):
    spec = importlib.util.spec_from_file_location(f"fileio_{folder}", ROOT / folder / "fileio.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_data_file_lookup_order(tmp_path, monkeypatch):
    dd = load_fileio()
    flag_dir, env_dir, cache = tmp_path / "flag", tmp_path / "env", tmp_path / "cache"
    for d in (flag_dir, env_dir, cache):
        (d / "bpe").mkdir(parents=True)
        (d / "bpe" / "manual.txt").write_text(d.name)
    monkeypatch.setenv("LLMHW_DATA_DIR", str(env_dir))
    monkeypatch.setenv("LLMHW_CACHE_DIR", str(cache))
    assert dd.find("bpe/manual.txt", flag_dir).read_text() == "flag"
    assert dd.find("bpe/manual.txt").read_text() == "env"
    (env_dir / "bpe" / "manual.txt").unlink()
    assert dd.find("bpe/manual.txt").read_text() == "cache"


def test_data_file_offline_error_names_file_folder_and_setting(tmp_path, monkeypatch):
    dd = load_fileio()
    monkeypatch.setenv("LLMHW_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("LLMHW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMHW_OFFLINE", "1")
    with pytest.raises(dd.DataFileNotFound) as e:
        dd.find("tinyshakespeare.txt")
    msg = str(e.value)
    assert "tinyshakespeare.txt" in msg and str(tmp_path / "nowhere") in msg and "LLMHW_DATA_DIR" in msg
    assert "\n" not in msg


def test_data_file_failed_download_leaves_nothing(tmp_path, monkeypatch):
    dd = load_fileio()
    monkeypatch.delenv("LLMHW_DATA_DIR", raising=False)
    monkeypatch.delenv("LLMHW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("LLMHW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(dd.SOURCES, "x.txt", "http://127.0.0.1:9/nothing-listens-here")
    with pytest.raises(dd.DataFileNotFound, match="download from"):
        dd.find("x.txt")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_ci_data_directory_is_set_and_complete():
    # CI must see the offline data; a missing file fails loudly here rather than skipping elsewhere.
    assert os.environ.get("LLMHW_DATA_DIR"), "LLMHW_DATA_DIR is not set (tests/run.sh sets it from ../shared/data)"
    d = Path(os.environ["LLMHW_DATA_DIR"]).expanduser()
    for name in ["gpt2/encoder.json", "gpt2/vocab.bpe", "tinyshakespeare.txt", "alpaca/alpaca_data.json.xz",
                 "bpe/manual.txt", "bpe/homework_english.txt", "bpe/homework_chinese.txt",
                 "webtext/wikitext2_valid.txt", "hellaswag/hellaswag_val_activitynet.jsonl"]:
        assert (d / name).is_file(), f"data file {name} missing from {d}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tests/run.sh" in readme.split("\n## ")[0], "README must open with the test command"
    assert "bash tests/run.sh" in ci


def project_files(*suffixes):
    for folder in FOLDERS + ["tests", ".ci"]:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
                yield path
    if ".md" in suffixes:
        yield ROOT / "README.md"


def long_functions(path, limit=60):
    """(name, lines) of each function in ``path`` longer than ``limit`` lines (decorators and docstring included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit]


def test_no_function_over_60_lines_outside_tests():
    too_long = {str(p.relative_to(ROOT)): long_functions(p) for p in project_files(".py")
                if "tests" not in p.relative_to(ROOT).parts}
    assert {k: v for k, v in too_long.items() if v} == {}


def test_no_line_over_120_characters():
    long_lines = [f"{p.relative_to(ROOT)}:{i}" for p in project_files(".py", ".sh")
                  for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 120]
    assert long_lines == []


def non_test_modules(folder):
    return sorted(p for p in (ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("folder", FOLDERS)
def test_few_modules_per_folder(folder):
    assert len(non_test_modules(folder)) <= 16, [p.name for p in non_test_modules(folder)]


@pytest.mark.parametrize("folder", ["pretrain", "finetune"])
def test_trainers_read_as_one_short_script(folder):
    path = ROOT / folder / "train.py"
    local = {p.stem for p in non_test_modules(folder)}
    imported = {name for name, _ in imports_of(path)} & local
    assert len(path.read_text().splitlines()) <= 320 and len(imported) <= 8, sorted(imported)


def test_function_length_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "f.py").write_text(f"def f():\n{body}\n")
    assert long_functions(tmp_path / "f.py") == [("f", 62)]


TRACKER_WORDS = re.compile(r"\bissue\s*#?\d+|\(issue\b|issue figure|\breviewer", re.IGNORECASE)


def test_project_speaks_of_itself_only():
    # Code, comments and docs name what the project does, not the tracker or review that asked for it.
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in project_files(".py", ".md", ".sh")
            if p.name != "test_layout.py"
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if TRACKER_WORDS.search(line)]
    assert hits == []


def test_the_oldest_transformers_test_runs_in_ci():
    # tests/run.sh builds the environment and names it; the bpe test skips only when that name is missing
    run = (ROOT / "tests" / "run.sh").read_text()
    assert "export LLMHW_OLDEST_TRANSFORMERS_PYTHON=" in run and "requirements.txt" in run
    assert 'os.environ.get("LLMHW_OLDEST_TRANSFORMERS_PYTHON")' in (ROOT / "bpe" / "tests" / "test_io.py").read_text()
