"""Where files named inside personas and scenarios may live.

Persona and scenario files are shared between people, so every path they name (`prompt_file`,
`{% include %}`, `extends`, `voice`, `audio` clips, a scenario's `persona` / `voice` path) must
resolve, after following `..` and symbolic links, inside the document's ROOT: the folder that holds
the document itself (and its subfolders). Names looked up on the persona search path (`extends:
refund-desk`, `persona: refund-desk`) are not paths and are always allowed.

The user may allow more folders on the command line: `rolekit --allow-path DIR ...` (repeatable) or
`$ROLEKIT_ALLOW_PATH` (folders separated by `os.pathsep`). Paths the user types on the command line
(`persona render ../x.yaml`, `respond --voice /tmp/v.wav`) are the user's own choice and not checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from rolekit.errors import DocumentError, Problem

ALLOW_ENV = "ROLEKIT_ALLOW_PATH"

_ALLOWED: ContextVar[tuple[Path, ...]] = ContextVar("rolekit_allowed_paths", default=())


def allowed_roots() -> tuple[Path, ...]:
    """Folders the user allowed beyond each document's own root (--allow-path, then $ROLEKIT_ALLOW_PATH)."""
    env = tuple(Path(p).expanduser().resolve() for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p)
    return _ALLOWED.get() + env


def set_allowed(paths: list[Path] | tuple[Path, ...]) -> None:
    """Set the folders of `--allow-path` for this process (or context)."""
    _ALLOWED.set(tuple(Path(p).expanduser().resolve() for p in paths))


@contextmanager
def allowing(paths: list[Path] | tuple[Path, ...]) -> Iterator[None]:
    """Temporarily allow `paths` (tests, embedding)."""
    token = _ALLOWED.set(_ALLOWED.get() + tuple(Path(p).expanduser().resolve() for p in paths))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path` (resolved: `..` and symlinks followed) lies in `root` or below it."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def contained(path: Path, root: Path) -> bool:
    """Inside `root` or inside a folder the user allowed."""
    return any(is_inside(path, r) for r in (root, *allowed_roots()))


def resolve_named(document: str | Path, name: str, what: str, line: int | None, field: str) -> Path:
    """The path `name` (relative to the document's folder, or absolute), resolved and checked to lie in
    the document's root; else a DocumentError naming the file, line and field."""
    doc = Path(document)
    root = doc.parent
    try:
        path = (root / Path(name).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise DocumentError(
            problems=[Problem(f"{what} {name!r}: bad path ({exc})", str(doc), line, field)]
        ) from None
    if not contained(path, root):
        raise DocumentError(
            problems=[
                Problem(
                    f"{what} {name!r} resolves to {path}, outside this document's folder {root.resolve()} "
                    f"(files named in personas and scenarios must stay inside it; allow a folder with "
                    f"`rolekit --allow-path DIR ...`)",
                    str(doc),
                    line,
                    field,
                )
            ]
        )
    return path
