"""One suite at a time per output folder: an OS file lock (`filelock`) on `<out>/.rolekit.lock`.

A second process that wants the same folder is refused at once with a clear message (exit 2)
instead of racing the first one's run folders and results.jsonl. The lock is released when the
holder exits, even on kill -9 (the OS drops it). Within one process the lock is re-entrant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from rolekit.errors import ConfigError, Problem

LOCK_FILE = ".rolekit.lock"

_LOCKS: dict[Path, FileLock] = {}  # one lock object per folder in this process (re-entrant)


@contextmanager
def suite_lock(out: Path) -> Iterator[None]:
    """Hold the lock of output folder `out` (created if needed) for the block; refuse if another
    process holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = (out / LOCK_FILE).resolve()
    lock = _LOCKS.setdefault(path, FileLock(str(path)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            problems=[
                Problem(
                    "another rolekit suite is writing to this folder right now; wait for it to finish "
                    "or pick another --out",
                    str(out),
                    field="--out",
                )
            ]
        ) from None
    try:
        yield
    finally:
        lock.release()
