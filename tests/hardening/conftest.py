"""Hardening tests: the CLI called in-process (tests.hardening.cli)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.hardening.cli import CliResult, invoke


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    return invoke


def pytest_terminal_summary(terminalreporter) -> None:
    """How many fuzz examples ran, per category and exit code (when the fuzz module ran)."""
    import sys

    fuzz = sys.modules.get("tests.hardening.test_fuzz") or next(
        (m for name, m in sys.modules.items() if name.endswith("test_fuzz") and hasattr(m, "COUNTS")), None
    )
    if fuzz is None or not fuzz.COUNTS:
        return
    total = sum(fuzz.COUNTS.values())
    took = ""
    if fuzz.TIMES:
        took = f" in {fuzz.TIMES['wall']:.0f} s wall, {fuzz.TIMES['cpu']:.0f} s CPU"
    terminalreporter.write_line(f"rolekit fuzz ({fuzz.PROFILE}): {total} examples{took}: {dict(fuzz.COUNTS)}")
    per = {c: f"{fuzz.CPU[c] / n * 1000:.1f} ms" for c, n in fuzz.COUNTS.items()}
    terminalreporter.write_line(f"rolekit fuzz CLI CPU per example: {per}")
    codes = {f"{c}:{code}": n for (c, code), n in sorted(fuzz.CODES.items())}
    terminalreporter.write_line(f"rolekit fuzz exit codes: {codes}")
