"""Atomic writes: a file or a folder appears complete or not at all. LEAF module: imports nothing
from rolekit, so every layer may use it.

`replaced_file(path)` yields a temporary path beside `path` (same folder, so the final rename stays
on one file system); when the block ends without an exception the file is fsynced, made
world-readable (0o644: `mkstemp` creates 0o600), renamed over `path` with `os.replace`, and the
folder is fsynced. On an exception the temporary file is removed and `path` is untouched.

`replaced_folder(folder)` does the same for a folder built in a temporary sibling. An existing
`folder` is replaced only once the new one is complete (moved aside, the new one renamed in, the old
one removed). With `keep_if`, an existing `folder` that `keep_if(folder)` accepts when the new one
is ready wins (a concurrent builder finished first) and the new one is discarded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644
FOLDER_MODE = 0o755


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def replaced_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically (module contract).

    `suffix` ends the temporary name, for writers that pick a format from it (`np.save` adds
    `.npy` to any other name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns `path`."""
    with replaced_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with replaced_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def replaced_folder(
    folder: str | os.PathLike, keep_if: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on success it becomes `folder` (module contract)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    os.chmod(tmp, FOLDER_MODE)
    try:
        yield tmp
        fsync_dir(tmp)
        _swap_in(tmp, folder, keep_if)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(folder.parent)


def remove_leftovers(folder: str | os.PathLike) -> None:
    """Remove the temporaries a crashed `replaced_folder(folder)` left beside it. Only safe while no
    other process builds `folder` (call it under the builder's file lock)."""
    folder = Path(folder)
    for pattern in (f".{folder.name}.partial-*", f".{folder.name}.old-*"):
        for stale in folder.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _swap_in(tmp: Path, folder: Path, keep_if: Callable[[Path], bool] | None) -> None:
    if not folder.exists():
        try:
            os.rename(tmp, folder)
            return
        except OSError:
            if not folder.exists():  # a real error, not a concurrent builder that finished first
                raise
    if keep_if is not None and keep_if(folder):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    os.replace(folder, old)  # a folder onto an empty folder: allowed on POSIX
    try:
        os.replace(tmp, folder)
    except OSError:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
