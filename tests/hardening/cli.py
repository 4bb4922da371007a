"""Calling the rolekit CLI in-process with an argv, capturing exit code, output and escaped exceptions."""

from __future__ import annotations

import contextlib
import io
import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    crash: str | None  # the traceback of an exception that escaped main(), if any

    @property
    def text(self) -> str:
        return self.out + self.err


def invoke(argv: list[str], cwd: Path | None = None) -> CliResult:
    """`rolekit ARGV` in this process: exit code, stdout, stderr and any escaped exception."""
    from rolekit.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    code, crash = 0, None
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # what a user would see as a traceback
                crash = traceback.format_exc()
                code = 1
    finally:
        os.chdir(old)
    return CliResult(code, out.getvalue(), err.getvalue(), crash)


def assert_clean(result: CliResult, argv: list[str] | None = None) -> None:
    """The promise for bad input: exit 0, 1 or 2, no traceback, and an exit 2 names a file or an option."""
    assert result.crash is None, result.crash
    assert result.code in (0, 1, 2), (result.code, result.text)
    assert "Traceback (most recent call last)" not in result.text, result.text
    if result.code == 2:
        assert names_file_or_option(result.text, argv or []), result.text


def names_file_or_option(text: str, argv: list[str]) -> bool:
    """An --option, a click-quoted NAME, a file-like token (a path or a name with an extension), or
    one of the user's own arguments (a folder or name they typed)."""
    if re.search(
        r"(--[a-z][a-z0-9-]*|'[A-Z_]+'|\b(SRC|DST|NAME|PATHS|SCENARIO|RUN_DIR)\b|\S+\.(yaml|yml|j2|wav|json|jsonl|xml|safetensors|pt|txt)\b|/\S+)",
        text,
    ):
        return True
    if re.search(r"^error: [^\s:]+:", text, re.M):  # "error: FILE[:LINE]: ..." (rolekit's Problem form)
        return True
    for raw in argv:
        arg = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in raw)  # as printed
        arg = arg.rstrip("/") or arg  # paths are printed normalized ("0/" -> "0")
        if f"error: {arg}:" in text:  # rolekit's "FILE: message", even for a blank name
            return True
        if not arg.strip() or arg.startswith("-"):
            continue
        if re.search(rf"(?<![\w/.-]){re.escape(arg)}(?![\w/.-])", text):
            return True
    return False
