"""Slow-path notices: said once per process, each with its fix. LEAF module: imports nothing from rolekit.

Library code calls `notice(key, text)` where it takes a slow path (Whisper on the CPU through MLX,
MLX on the reference BLAS); the CLI decides where notices go (`set_sink`, default: stderr). A key
is said at most once, however many runs of a suite take the same path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

_said: set[str] = set()
_sink: Callable[[str], None] | None = None


def _stderr(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def set_sink(sink: Callable[[str], None] | None) -> None:
    """Send notices to `sink` (None: back to stderr)."""
    global _sink
    _sink = sink


def notice(key: str, text: str) -> bool:
    """Say `text` unless `key` was said before in this process; True when it was said now."""
    if key in _said:
        return False
    _said.add(key)
    (_sink or _stderr)(text)
    return True


def said() -> frozenset[str]:
    """Keys said so far (for tests and `--json` outputs)."""
    return frozenset(_said)


def reset() -> None:
    """Forget what was said (tests)."""
    _said.clear()
