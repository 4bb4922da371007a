"""What every command shares about user input: `--var` parsing and turning RolekitError into exit 2."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from rolekit.errors import ConfigError, Problem, RolekitError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


MAX_SEED = 2**32 - 1  # sampling seeds are unsigned 32-bit


def finite(lo: float, hi: float) -> Callable[[float | None], float | None]:
    """A typer option callback: the number must be finite and within [lo, hi] (click then prints a
    usage error naming the option and exits 2, before any work)."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number, got {value}")
        if not lo <= value <= hi:
            raise typer.BadParameter(f"must be between {lo:g} and {hi:g}, got {value:g}")
        return value

    return check


def is_text(value: str) -> bool:
    """Whether `value` is encodable text (argv holds undecodable bytes as lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_vars(items: list[str] | None) -> dict[str, str]:
    """`--var k=v` pairs -> dict (values stay strings; the persona's variable types coerce them)."""
    out: dict[str, str] = {}
    problems = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not _NAME.fullmatch(key.strip()):
            problems.append(Problem(f"expected NAME=VALUE, got {item!r}", field="--var"))
            continue
        if not is_text(value):
            problems.append(Problem(f"{key}: the value is not valid UTF-8 text", field="--var"))
            continue
        out[key.strip()] = value
    if problems:
        raise ConfigError(problems=problems)
    return out


def print_error(exc: RolekitError) -> None:
    """One clear message on stderr, never a traceback; control characters (from file names) shown escaped."""
    from rich.console import Console
    from rich.markup import escape

    text = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in str(exc))  # \r -> "\\r"
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(text)}")


@contextmanager
def user_errors() -> Iterator[None]:
    """A RolekitError inside a command becomes one message on stderr and its exit code (2)."""
    try:
        yield
    except RolekitError as exc:
        print_error(exc)
        raise typer.Exit(exc.exit_code) from None
