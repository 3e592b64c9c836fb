"""Safe outputs: every file or folder a script writes is built aside and moved into place only when complete.

One identical copy of this file lives in each of bpe/, pretrain/, finetune/ and report/ (they share no code; a test
checks the copies stay identical; the canonical copy is finetune/fileio.py).

Guarantees (what each folder's README calls "atomic"):
  - ``atomic_write(path)`` / ``atomic_write_text`` / ``atomic_write_json``: the file at ``path`` is either the old one
    or the complete new one, never a mix; a failure (disk full, kill, exception) leaves no temp file behind.
  - ``atomic_dir(path)``: a whole output *set* (a folder) is built in a temp sibling and swapped in. On Linux the
    swap is one ``renameat2(RENAME_EXCHANGE)``, so a complete folder is at ``path`` at every instant; elsewhere two
    renames, and ``recover(path)`` (called by ``atomic_dir`` itself and by readers) puts the old folder back if a kill
    fell between them.
  - ``OutputError``: one line naming the path and the problem (not writable, disk full with the bytes free).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutputError(OSError):
    """An output that cannot be written; the message is one line naming the path and what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe(path: Path, e: OSError) -> OutputError:
    """One line for an OSError met while writing ``path``."""
    if e.errno == errno.ENOSPC:
        usage = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd())
        return OutputError(f"{path}: no space left on the disk holding {path.parent} "
                           f"({usage.free / 2**20:.0f} MiB free); free some space or choose another output folder")
    return OutputError(f"{path}: cannot write ({e.strerror or e})")


def check_writable(path: str | os.PathLike, is_dir: bool = False) -> Path:
    """Fail now, before the work, if ``path`` (a file, or a folder with ``is_dir``) could not be written later."""
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


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Yield an open temp file beside ``path``; on success it is flushed, synced and renamed onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _describe(path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600: give the file the mode open() would
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in DISK_FULL or e.filename in (tmp, str(path)):
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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temp folder; on success it replaces ``path`` as a whole (old contents removed only afterwards)."""
    path = recover(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise _describe(path, e) from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700: give the folder the mode mkdir would
        try:
            yield tmp
        except OSError as e:
            if e.errno in DISK_FULL:
                raise _describe(path, e) from None
            raise
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
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
