"""Hardening tests: the CLI called in-process (tests.hardening.cli)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from tests.hardening.cli import CliResult, invoke

_KEY = "rolekit_fuzz_summary"


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    return invoke


def _summary() -> list[str]:
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


class _WorkerRelay:
    """Under pytest-xdist the fuzz module runs in a worker: its summary comes back to the main process."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        lines = getattr(node, "workeroutput", {}).get(_KEY)
        if lines:
            node.config.stash.setdefault(_RELAYED, []).extend(lines)


_RELAYED = pytest.StashKey[list]()


def pytest_configure(config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_WorkerRelay(), "rolekit-fuzz-relay")


def pytest_sessionfinish(session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput[_KEY] = _summary()


def pytest_terminal_summary(terminalreporter) -> None:
    """The fuzz summary, from this process or relayed from the worker that ran the module."""
    lines = _summary() or terminalreporter.config.stash.get(_RELAYED, [])
    for line in lines:
        terminalreporter.write_line(line)
