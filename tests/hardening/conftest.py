"""Hardening tests: the CLI called in-process (tests.hardening.cli)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.hardening.cli import CliResult, invoke


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    return invoke
