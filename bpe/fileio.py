"""Safe outputs: every file or folder a script writes is built aside and moved into place only when complete, and a
script only ever replaces a folder that holds nothing but its own kind of output.

One identical copy of this file lives in each of bpe/, pretrain/, finetune/ and report/ (they share no code; a test
checks the copies stay identical; the canonical copy is finetune/fileio.py).

Guarantees (what each folder's README calls "atomic"):
  - ``atomic_write(path)`` / ``atomic_write_text`` / ``atomic_write_json`` / ``save_torch``: the file at ``path`` is
    either the old one or the complete new one, never a mix; a failure (disk full, kill, exception) leaves no temp
    file behind (a kill may: the next start of the command removes it, see below).
  - ``atomic_dir(path, kind)``: a whole output *set* (a folder) is built in a temp sibling and swapped in. On Linux the
    swap is one ``renameat2(RENAME_EXCHANGE)``, so a complete folder is at ``path`` at every instant; elsewhere two
    renames, and ``recover(path)`` (called by ``atomic_dir``, ``claim_output_dir`` and readers) puts the old folder
    back if a kill fell between them. With ``kind`` the set carries the hidden marker file naming its kind.
  - ``OutputError``: one line naming the path and the problem (not writable, a symlink loop, disk full with the MiB
    free and the folder; torch's own write failure, "unexpected pos" in inline_container.cc, is named as disk full).

The run-folder rule, one function for every command that writes a folder (``claim_output_dir``), called at start-up
before any work and before anything is created:
  - the folder is new (nothing is created yet; ``OutputDir.create`` makes it when the writer fills it in place and
    ``OutputDir.abandon`` removes what ``create`` made if the run is refused later), or empty, or holds nothing but
    this command's kind of output: every entry matches one of the writer's ``names`` (glob patterns, e.g.
    ``"ckpt_*.pt"``) and the hidden marker ``.llmhw-output`` (JSON ``{"kind": ...}``, written by ``create`` and by
    ``atomic_dir(path, kind)``), if present, names this kind. A folder written before the marker existed is
    recognized by its names alone;
  - anything else (a user's file, another kind's marker, a file where the folder should be, an input inside it, a
    symlink loop, an unwritable place) is refused with one line, ``--overwrite`` included: nothing is deleted;
  - an earlier output of the same kind is refused unless ``overwrite`` (or ``resume`` where the command can resume);
    ``OutputDir.clear`` deletes it, to be called once the new run's inputs were checked;
  - leftover temporaries of killed writes (names ``.<name>.llmhw-<random>.tmp``, only ours) inside the folder and
    beside it are removed, and a swap a kill interrupted is undone.

    out = claim_output_dir(args.out_dir, "bpe-tokenizer", ["tokenizer.model", "*.json"], overwrite=args.overwrite,
                           inputs=[corpus])          # OutputError: one line; nothing created, nothing deleted
    with atomic_dir(out.path, out.kind) as tmp:       # a set swapped in whole ...
        ...
    out.create(); out.clear()                         # ... or a folder filled in place (a training run)
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
MARKER = ".llmhw-output"  # hidden file naming the kind of output a folder holds: {"kind": "..."}
TEMP_TAG = ".llmhw-"      # every temp name is ".<name>.llmhw-<random>.tmp": recognizable as ours, and only ours
OURS = re.compile(r"^\..+\.llmhw-[A-Za-z0-9_]+\.tmp$")
# torch.save to a path reports a short write (a full disk) as "[enforce fail at inline_container.cc] unexpected pos"
TORCH_WRITE_FAILURE = ("unexpected pos", "inline_container", "PytorchStreamWriter failed")


class OutputError(OSError):
    """An output that cannot be written; the message is one line naming the path and what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _nearest_existing(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path.cwd())


def disk_full(path: str | os.PathLike) -> OutputError:
    """The one line for a full disk while writing ``path``: the path, the folder and the MiB still free."""
    path = Path(path)
    usage = shutil.disk_usage(_nearest_existing(path.parent))
    return OutputError(f"{path}: no space left on the disk holding {path.parent} "
                       f"({usage.free / 2**20:.0f} MiB free); free some space or choose another output folder")


def _torch_write_failure(e: BaseException) -> bool:
    """torch's writer hides the errno of a short write; in practice that is a full disk."""
    return isinstance(e, RuntimeError) and any(s in str(e) for s in TORCH_WRITE_FAILURE)


def _describe(path: Path, e: BaseException) -> OutputError:
    """One line for an OSError (or torch's write failure) met while writing ``path``."""
    if isinstance(e, OSError) and e.errno in DISK_FULL or _torch_write_failure(e):
        return disk_full(path)
    return OutputError(f"{path}: cannot write ({getattr(e, 'strerror', None) or e})")


def check_writable(path: str | os.PathLike, is_dir: bool = False) -> Path:
    """Fail now, before the work, if ``path`` (a file, or a folder with ``is_dir``) could not be written later.
    Creates the folder (or the file's parent); ``claim_output_dir`` is the check that creates nothing."""
    path = Path(path)
    parent = path if is_dir else path.parent
    if is_dir and path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file, but an output folder is needed here")
    if not is_dir and path.is_dir():
        raise OutputError(f"{path}: is a folder, but an output file is needed here")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise OutputError(f"{parent}: cannot write there ({e.strerror or e})") from None
    return path


def _probe_writable(folder: Path, label: str) -> None:
    """Create and remove one temp file in ``folder`` (which exists): the only reliable test (ACLs, read-only mounts)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputError(f"{label}: cannot write in {folder} ({e.strerror or e})") from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Yield an open temp file beside ``path``; on success it is flushed, synced and renamed onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_TAG}", suffix=".tmp")
    except OSError as e:
        raise _describe(path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600: give the file the mode open() would
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, OSError) and (e.errno in DISK_FULL or e.filename in (tmp, str(path))) \
                or _torch_write_failure(e):
            raise _describe(path, e) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def save_torch(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` written aside and renamed into place; a full disk is one line with the MiB free."""
    import torch  # only the folders that save tensors pay for the import

    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def recover(path: str | os.PathLike) -> Path:
    """Undo a swap that a kill interrupted: if ``path`` is missing but its old copy is there, put it back."""
    path = Path(path)
    old = _old(path)
    if old.exists():
        if not path.exists():
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    return path


def write_marker(folder: str | os.PathLike, kind: str) -> None:
    """The hidden file that says ``folder`` holds this kind of output (read by ``claim_output_dir``)."""
    atomic_write_json(Path(folder) / MARKER, {"kind": kind})


def read_marker(folder: str | os.PathLike) -> str | None:
    """The kind named by ``folder``'s marker; None without one; "?" for one that is not ours (damaged, foreign)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None if not path.exists() else "?"
    try:
        kind = json.loads(path.read_bytes().decode("utf-8")).get("kind")
    except (ValueError, UnicodeDecodeError, AttributeError, OSError):
        return "?"
    return kind if isinstance(kind, str) else "?"


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str | None = None):
    """Yield a temp folder; on success it replaces ``path`` as a whole (old contents removed only afterwards).
    With ``kind`` the new set carries the marker naming it (``claim_output_dir`` recognizes it next time)."""
    path = recover(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{TEMP_TAG}", suffix=".tmp"))
    except OSError as e:
        raise _describe(path, e) from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700: give the folder the mode mkdir would
        try:
            if kind is not None:
                write_marker(tmp, kind)
            yield tmp
        except (OSError, RuntimeError) as e:  # a full disk met by the caller's writes (torch's included)
            if isinstance(e, OSError) and e.errno in DISK_FULL or _torch_write_failure(e):
                raise disk_full(path) from None
            raise
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, path: Path) -> None:
    try:
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        else:
            if path.exists():  # a folder cannot be os.replace'd onto a non-empty one: move the old one aside
                os.replace(path, _old(path))
            os.replace(tmp, path)
            shutil.rmtree(_old(path), ignore_errors=True)
    except OSError as e:
        raise _describe(path, e) from None


# -- the run-folder rule ----------------------------------------------------------------------------------------------

def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove our temporaries of killed writes (``.<name>.llmhw-<random>.tmp``) in ``folder`` and its sub-folders
    (symlinks are not followed). Returns what was removed. Call it only on a folder that one command writes."""
    removed = []
    for root, dirs, files in os.walk(folder):
        for name in [n for n in dirs + files if OURS.match(n)]:
            p = Path(root) / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p)
        dirs[:] = [d for d in dirs if not OURS.match(d) and not (Path(root) / d).is_symlink()]
    return removed


@dataclass
class OutputDir:
    """A folder that ``claim_output_dir`` found fit for this command's output (see the module docstring)."""
    path: Path                       # resolved
    kind: str
    earlier: list[str]               # entries of an earlier output of this kind (empty: new or empty folder)
    leftovers: list[Path]            # temporaries of killed writes that the claim removed
    made: list[Path] = field(default_factory=list)  # folders create() made, outermost first

    def create(self) -> Path:
        """Make the folder (and missing parents) and write its marker: for writers that fill it in place."""
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()][::-1]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.made += [p for p in missing if p not in self.made]
            if read_marker(self.path) != self.kind:
                write_marker(self.path, self.kind)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot create the output folder ({e.strerror or e})") from None
        return self.path

    def clear(self) -> None:
        """Delete the earlier output (the claim checked every entry is ours); the marker stays."""
        for name in self.earlier:
            p = self.path / name
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        self.earlier = []

    def abandon(self) -> None:
        """A run refused after ``create``: remove the folders it made if they hold nothing but the marker."""
        if self.made and os.listdir(self.path) == [MARKER]:
            (self.path / MARKER).unlink()
        for p in reversed(self.made):
            with contextlib.suppress(OSError):
                p.rmdir()  # only an empty folder goes
        self.made = []


def _resolve(path: str | os.PathLike, flag: str) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11: RuntimeError("Symlink loop from ..."); later: ELOOP
        raise OutputError(f"{flag} {path}: cannot be resolved ({e}); a symlink loop?") from None


def _check_place(out: Path, flag: str, inputs) -> None:
    """Refuse a file where the folder should be, an input inside (or around) it, an unwritable place."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out}: is a file, but an output folder is needed here")
    for p in inputs:
        if p is None:
            continue
        q = Path(p).expanduser().resolve()
        if out == q or out in q.parents or q in out.parents:
            raise OutputError(f"{flag} {out}: holds (or is inside) the input {p}; choose another folder")
    _probe_writable(_nearest_existing(out.parent), f"{flag} {out}")
    if out.is_dir():
        _probe_writable(out, f"{flag} {out}")


def _earlier_output(out: Path, kind: str, names, flag: str) -> list[str]:
    """The entries of ``out`` if they are all this kind's output; one line refusing anything else."""
    entries = sorted(n for n in os.listdir(out) if n != MARKER and not OURS.match(n))
    found = read_marker(out)
    if found is not None and found != kind:
        what = "a damaged or foreign marker" if found == "?" else f"a {found} (its {MARKER} says so)"
        raise OutputError(f"{flag} {out}: holds {what}, not a {kind}; choose another folder (nothing was deleted)")
    foreign = [n for n in entries if not any(fnmatch.fnmatchcase(n, pat) for pat in names)]
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        raise OutputError(f"{flag} {out}: holds files that are not a {kind}'s output ({', '.join(foreign[:3])}{more});"
                          " choose an empty or new folder (nothing was deleted)")
    return entries


def claim_output_dir(path: str | os.PathLike, kind: str, names, *, overwrite: bool = False,
                     resume: bool | None = None, inputs=(), flag: str = "--out_dir") -> OutputDir:
    """Check, at start-up, that ``path`` may receive this command's ``kind`` of output (the rule in the module
    docstring); ``names``: glob patterns of every top-level entry this kind writes; ``resume``: None for a command
    that cannot resume, else whether ``--resume`` was given; ``inputs``: paths (files or folders) that must not
    be, hold or lie inside the folder (None entries are skipped).
    Creates nothing; removes only our leftover temporaries; raises OutputError (one line) otherwise."""
    out = recover(_resolve(path, flag))
    _check_place(out, flag, inputs)
    leftovers = [p for p in out.parent.glob(f".{glob_escape(out.name)}{TEMP_TAG}*.tmp") if OURS.match(p.name)]
    for p in leftovers:  # killed atomic_dir / atomic_write of this very path
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for old in out.glob(".*.old") if out.is_dir() else []:  # a sub-folder's swap that a kill interrupted
        recover(old.with_name(old.name[1:-len(".old")]))
    earlier = _earlier_output(out, kind, names, flag) if out.is_dir() else []
    if earlier and not (overwrite or resume):
        how = "pass --resume to continue it or --overwrite" if resume is not None else "pass --overwrite"
        raise OutputError(f"{flag} {out}: holds an earlier run's {kind} output ({', '.join(earlier[:3])}"
                          f"{', ...' if len(earlier) > 3 else ''}); {how} to replace it")
    if out.is_dir():
        leftovers += remove_leftovers(out)
    return OutputDir(out, kind, earlier, leftovers)


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)


# -- data files (was datadir.py) --


import os
import urllib.request
from pathlib import Path

ENV_DATA_DIR = "LLMHW_DATA_DIR"
ENV_CACHE_DIR = "LLMHW_CACHE_DIR"
ENV_OFFLINE = "LLMHW_OFFLINE"

# Canonical public sources (name under the data directory -> URL). Users online get these; CI never downloads.
SOURCES = {
    "gpt2/encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "gpt2/vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "tinyshakespeare.txt": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "alpaca/alpaca_data.json": "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json",
    "bpe/manual.txt": "https://raw.githubusercontent.com/htlou/Alignment_hw/"
    "689c41fe80c36018f8d7c169ff715c4f8d974760/hw1/bpe/manual.txt",
    "bpe/lunyu.txt": None,  # built from chinese-poetry's lunyu.json; see ../shared/data/README.md
    "hellaswag/hellaswag_val.jsonl": "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "hellaswag/hellaswag_val_activitynet.jsonl": None,  # offline subset only; see ../shared/data/README.md
    "webtext/wikitext2_valid.txt": "https://raw.githubusercontent.com/pytorch/examples/"
    "77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2/valid.txt",
}


class DataFileNotFound(FileNotFoundError):
    """Raised when a data file is neither local nor downloadable; the message says what to set."""


def data_dir(flag: str | os.PathLike | None = None) -> Path | None:
    """The configured data directory: the flag if given, else $LLMHW_DATA_DIR, else None."""
    value = flag if flag else os.environ.get(ENV_DATA_DIR)
    return Path(value).expanduser().resolve() if value else None


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR, Path.home() / ".cache" / "llmhw")).expanduser()


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


def find(name: str, data_dir_flag: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the path of data file ``name`` (see module docstring for the lookup order)."""
    folders = [d for d in (data_dir(data_dir_flag), cache_dir()) if d is not None]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    searched = ", ".join(str(f) for f in folders)
    hint = f"pass --data_dir DIR or set {ENV_DATA_DIR}=DIR (offline copy: ../shared/data)"
    url = SOURCES.get(name)
    if not download or offline() or url is None:
        why = "offline" if offline() else ("no public source known" if url is None else "download disabled")
        raise DataFileNotFound(f"data file '{name}' not found in [{searched}] ({why}); {hint}")
    target = cache_dir() / name
    try:
        _download(url, target)
    except OSError as e:
        raise DataFileNotFound(f"data file '{name}' not found in [{searched}] and download from {url} failed "
                               f"({e}); {hint}") from e
    return target


def _download(url: str, target: Path) -> None:
    """Stream ``url`` into ``target`` with a progress bar; temp file + rename so a broken download leaves nothing."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
