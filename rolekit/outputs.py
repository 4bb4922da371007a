"""Checks of output paths before any work: a file option must name a writable file, a folder option a
writable folder. Each failure is one ConfigError naming the path and the option (exit code 2).

No rolekit imports beyond errors: every layer (cli, suite, convert, transcribe) may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from rolekit.errors import ConfigError, Problem


def _fail(path: Path, option: str, message: str) -> ConfigError:
    return ConfigError(problems=[Problem(message, str(path), field=option)])


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: Path | str, option: str, *, create_parents: bool = False) -> Path:
    """`path` can be written as a file: not a folder, in a writable folder (that exists unless
    `create_parents`), and writable itself if it exists. Returns the path unchanged."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise _fail(path, option, "is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise _fail(path, option, "exists and cannot be overwritten (no write permission)")
    parent = path.absolute().parent
    if not parent.exists():
        if not create_parents:
            raise _fail(path, option, f"the folder {parent} does not exist")
        parent = _nearest_existing(parent)
    if not parent.is_dir():
        raise _fail(path, option, f"{parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _fail(path, option, f"cannot write in {parent} (no permission)")
    return path


def check_output_dir(path: Path | str, option: str) -> Path:
    """`path` is, or can be created as, a writable folder. Returns the path unchanged."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise _fail(path, option, "is a file; give a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise _fail(path, option, f"{existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _fail(path, option, f"cannot write in {existing} (no permission)")
    return path
