"""Files: outputs written whole or not at all, one rule for output folders and files, where data files are found.

One identical copy in each of bpe/, pretrain/, finetune/ and report/ (checked by tests/test_layout.py; canonical here).
Outputs are built in a temp ``.<name>.llmhw-<random>.tmp`` beside the target and renamed into place. The output rule
(``claim_output_dir``/``claim_output_file``, at start-up, creating nothing): replace only a folder whose marker
``.llmhw-output`` names our kind and whose entries all match our names (a file: its "kind"), and only with
``overwrite``/``resume``; a ``flock`` on ``.llmhw-lock`` keeps one writer per folder. ``find``: data files by name.
"""
import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

MARKER, LOCK = ".llmhw-output", ".llmhw-lock"
TEMP = re.compile(r"^\..+\.llmhw-\w+\.tmp$")  # our temporaries, and only ours
_locks: dict[Path, object] = {}               # folder -> open lock file: held until this process ends


class OutputError(OSError):
    """An output that cannot or may not be written; the message is one line naming the path and what to do."""


def _write_error(path: Path, e: BaseException, names=None) -> OutputError | None:
    """The one line for a failed write (disk full, torch's short write, an OSError on one of ``names``), else None."""
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "unexpected pos" in str(e):
        free = shutil.disk_usage(next(p for p in path.parents if p.exists())).free / 2**20
        return OutputError(f"{path}: no space left on the disk holding {path.parent} ({free:.0f} MiB free); "
                           "free some space or choose another output folder")
    if isinstance(e, OSError) and (names is None or e.filename in names):
        return OutputError(f"{path}: cannot write ({e.strerror or e})")


def _remove(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def _restore(path: Path) -> Path:
    """Undo a folder swap that a kill split (the old folder goes back if the new one never arrived); its old name."""
    old = path.with_name(f".{path.name}.llmhw-old")
    if old.exists():
        os.replace(old, path) if not path.exists() else shutil.rmtree(old)
    return old


@contextlib.contextmanager
def _aside(path: Path):
    """Yield a temp path beside ``path``, renamed to ``path`` when the block ends without error."""
    tmp, old = path.with_name(f".{path.name}.llmhw-{os.urandom(6).hex()}.tmp"), _restore(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_dir() and path.exists():  # a folder: two renames; a kill between them is undone by _restore
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    except (OSError, RuntimeError) as e:
        raise (_write_error(path, e, {str(p) for p in (tmp, path, *path.parents)}) or e) from None
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Yield an open temp file beside ``path``; when the block ends without error it replaces ``path``."""
    with _aside(Path(path)) as tmp, open(tmp, mode.replace("w", "x"), encoding=None if "b" in mode else "utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str):
    """Yield a temp folder carrying ``kind``'s marker; when the block ends without error it replaces ``path`` whole."""
    with _aside(Path(path)) as tmp:
        tmp.mkdir()
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        yield tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """JSON as the standard allows it: a NaN or infinity is an error here, never an unreadable file."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _place(path: str | os.PathLike, flag: str, inputs, folder: bool) -> Path:
    """``path`` resolved and checked: the right type of thing, no input at/inside/around it, writable."""
    try:
        out = Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop
        raise OutputError(f"{flag} {path}: cannot be resolved ({e}); a symlink loop?") from None
    _restore(out)
    if out.exists() and out.is_dir() != folder:
        need, have = ("folder", "file") if folder else ("file", "folder")
        raise OutputError(f"{flag} {out}: is a {have}, but an output {need} is needed here")
    for p in filter(None, inputs):
        q = Path(p).expanduser().resolve()
        if out == q or q in out.parents or (folder and out in q.parents):
            raise OutputError(f"{flag} {out}: holds (or is inside) the input {p}; choose another place")
    where = out if out.is_dir() else next(p for p in out.parents if p.exists())
    if not (where.is_dir() and os.access(where, os.W_OK | os.X_OK)):
        raise OutputError(f"{flag} {out}: cannot write in {where} (not a writable folder)")
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.llmhw-*.tmp"):  # of killed writes of this very output
        _remove(tmp)
    return out


def _lock(folder: Path, flag: str) -> None:
    """Hold an exclusive lock on ``folder`` until this process ends; refuse if another process holds it."""
    if folder in _locks:
        return
    f = open(folder / LOCK, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise OutputError(f"{flag} {folder}: in use by {holder}; wait for it to end or choose another folder") from None
    f.truncate(0)
    f.write(f"PID {os.getpid()} on {os.uname().nodename}\n")
    f.flush()
    _locks[folder] = f


class OutputDir:
    """A folder ``claim_output_dir`` found fit for this command's output."""

    def __init__(self, path: Path, kind: str, earlier: list[str]):
        self.path, self.kind, self.earlier, self.made = path, kind, earlier, None

    def create(self) -> Path:
        """Make the folder (for writers that fill it in place), with its marker and lock."""
        made = next((p for p in [*self.path.parents][::-1] + [self.path] if not p.exists()), None)
        if not (self.path / MARKER).exists():
            atomic_write_json(self.path / MARKER, {"kind": self.kind})
        _lock(self.path, "output folder")
        self.made = made  # the outermost folder this made
        return self.path

    def clear(self) -> None:
        """Delete the earlier output (every entry was checked to be ours)."""
        for name in self.earlier:
            _remove(self.path / name)
        self.earlier = []

    def abandon(self) -> None:
        """A run refused after ``create``: remove the folders it made, if they hold no file but marker and lock."""
        if self.made and all(p.name in (MARKER, LOCK) for p in self.made.rglob("*") if not p.is_dir()):
            _locks.pop(self.path).close()
            shutil.rmtree(self.made)


def _kind_of(path: Path) -> str | None:
    """The top-level "kind" of JSON file ``path`` (a folder: its marker); None if missing, "?" if unreadable."""
    path = path / MARKER if path.is_dir() else path
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None if not path.exists() else "?"


def claim_output_dir(path: str | os.PathLike, kind: str, names, *, overwrite: bool = False,
                     resume: bool | None = None, inputs=(), flag: str = "--out_dir") -> OutputDir:
    """Check at start-up that folder ``path`` may take this command's ``kind`` of output (the rule above).
    ``names``: glob patterns of every entry this kind writes; ``resume``: None where the command cannot resume."""
    out = _place(path, flag, inputs, folder=True)
    if not out.is_dir():
        return OutputDir(out, kind, [])
    for name in [n for n in os.listdir(out) if n.endswith(".llmhw-old")]:
        _restore(out / name[1:-len(".llmhw-old")])  # a sub-folder's swap that a kill split
    entries = sorted(n for n in os.listdir(out) if n not in (MARKER, LOCK) and not TEMP.match(n))
    found = _kind_of(out)
    foreign = [n for n in entries if not any(fnmatch.fnmatchcase(n, pat) for pat in names)]
    if found not in (None, kind):
        what = "a damaged or foreign marker" if found == "?" else f"a {found} (its {MARKER} says so)"
        raise OutputError(f"{flag} {out}: holds {what}, not a {kind}; choose another folder (nothing was deleted)")
    if foreign or (entries and found is None):  # a folder of ours always carries the marker
        names = ", ".join((foreign or entries)[:3])
        raise OutputError(f"{flag} {out}: holds files that are not a {kind}'s output ({names}); "
                          "choose an empty or new folder (nothing was deleted)")
    _lock(out, flag)
    if entries and not (overwrite or resume):
        how = "pass --resume to continue it or --overwrite" if resume is not None else "pass --overwrite"
        raise OutputError(f"{flag} {out}: holds an earlier run's {kind} output ({', '.join(entries[:3])}); "
                          f"{how} to replace it")
    for root, dirs, files in os.walk(out):  # temporaries of killed writes inside
        for name in filter(TEMP.match, dirs + files):
            _remove(Path(root, name))
        dirs[:] = [d for d in dirs if not TEMP.match(d)]
    return OutputDir(out, kind, entries)


def claim_output_file(path: str | os.PathLike, kind: str, *, overwrite: bool = False, inputs=(),
                      flag: str = "--out") -> Path:
    """The same rule for one JSON output file: ours when its top-level "kind" is ``kind``."""
    out = _place(path, flag, inputs, folder=False)
    if out.exists() and _kind_of(out) != kind:
        raise OutputError(f"{flag} {out}: is a file this command did not write; choose another path (nothing was "
                          "replaced)")
    if out.exists() and not overwrite:
        raise OutputError(f"{flag} {out}: holds an earlier {kind}; pass --overwrite to replace it")
    return out


def start_child(cmd, **popen_kwargs) -> subprocess.Popen:
    """A child process that gets SIGTERM when this process dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG)."""
    parent = os.getpid()

    def tie_to_parent():
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)
    return subprocess.Popen(cmd, preexec_fn=tie_to_parent if sys.platform == "linux" else None, **popen_kwargs)


SOURCES = {  # name under the data directory -> canonical public copy (others: offline copy only)
    "gpt2/encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "gpt2/vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "tinyshakespeare.txt": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "alpaca/alpaca_data.json": "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json",
    "bpe/manual.txt": "https://raw.githubusercontent.com/htlou/Alignment_hw/"
    "689c41fe80c36018f8d7c169ff715c4f8d974760/hw1/bpe/manual.txt",
    "hellaswag/hellaswag_val.jsonl":
        "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "webtext/wikitext2_valid.txt": "https://raw.githubusercontent.com/pytorch/examples/"
    "77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2/valid.txt",
}


class DataFileNotFound(FileNotFoundError):
    """A data file that is neither here nor downloadable; the message says what to set."""


def find(name: str, data_dir_flag: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The path of data file ``name``: the data directory, the cache, else a download into the cache."""
    cache = Path(os.environ.get("LLMHW_CACHE_DIR", Path.home() / ".cache" / "llmhw")).expanduser()
    given = data_dir_flag or os.environ.get("LLMHW_DATA_DIR")
    folders = [Path(given).expanduser().resolve(), cache] if given else [cache]
    if found := next((f / name for f in folders if (f / name).is_file()), None):
        return found
    offline = any(os.environ.get(v, "") not in ("", "0") for v in ("LLMHW_OFFLINE", "HF_HUB_OFFLINE"))
    url = SOURCES.get(name)
    where = (f"data file '{name}' not found in [{', '.join(map(str, folders))}]; pass --data_dir DIR or set "
             "LLMHW_DATA_DIR=DIR (offline copy: ../shared/data)")
    if not download or offline or url is None:
        why = "offline" if offline else ("no public source known" if url is None else "download disabled")
        raise DataFileNotFound(f"{where} ({why})")
    print(f"downloading {url} into {cache / name}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, atomic_write(cache / name) as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise DataFileNotFound(f"{where} (download from {url} failed: {e})") from None
    return cache / name
