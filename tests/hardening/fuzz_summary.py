"""The fuzz suite's summary: how many examples ran, per category and exit code. The root conftest
prints it at the end of a session, relayed from the xdist worker that ran tests/hardening/test_fuzz.py
(the main process of an xdist run loads no conftest below tests/)."""

from __future__ import annotations

import sys


def summary_lines() -> list[str]:
    """How many fuzz examples this process ran, per category and exit code (none: [])."""
    fuzz = sys.modules.get("tests.hardening.test_fuzz") or next(
        (m for name, m in sys.modules.items() if name.endswith("test_fuzz") and hasattr(m, "COUNTS")), None
    )
    if fuzz is None or not fuzz.COUNTS:
        return []
    total = sum(fuzz.COUNTS.values())
    took = ""
    if fuzz.TIMES:
        took = f" in {fuzz.TIMES['wall']:.0f} s wall, {fuzz.TIMES['cpu']:.0f} s CPU"
    per = {c: f"{fuzz.CPU[c] / n * 1000:.1f} ms" for c, n in fuzz.COUNTS.items()}
    codes = {f"{c}:{code}": n for (c, code), n in sorted(fuzz.CODES.items())}
    return [
        f"rolekit fuzz ({fuzz.PROFILE}): {total} examples{took}: {dict(fuzz.COUNTS)}",
        f"rolekit fuzz CLI CPU per example: {per}",
        f"rolekit fuzz exit codes: {codes}",
    ]
