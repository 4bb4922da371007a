"""Slow paths are named once per process, with their fix (rolekit.notices)."""

from __future__ import annotations

import pytest

from rolekit import notices
from rolekit.codec import blas


@pytest.fixture
def said():
    out: list[str] = []
    notices.reset()
    notices.set_sink(out.append)
    yield out
    notices.set_sink(None)
    notices.reset()


def test_a_notice_is_said_once_per_key(said):
    assert notices.notice("k", "first") and not notices.notice("k", "again")
    assert notices.notice("other", "x")
    assert said == ["first", "x"] and notices.said() == {"k", "other"}


def test_mlx_on_the_reference_blas_is_named_once_with_the_fix(said, monkeypatch):
    monkeypatch.setattr(blas.sys, "platform", "linux")
    monkeypatch.delenv("ROLEKIT_NO_OPENBLAS", raising=False)
    monkeypatch.setattr(blas, "openblas_loaded", lambda: True)
    blas.note_reference_blas()
    assert said == []  # OpenBLAS bound: nothing to say
    monkeypatch.setattr(blas, "openblas_loaded", lambda: False)
    blas.note_reference_blas()
    blas.note_reference_blas()
    assert len(said) == 1 and "apt-get install libopenblas0-pthread" in said[0]


def test_the_default_sink_is_stderr(capsys):
    notices.reset()
    try:
        notices.notice("stderr-test", "whisper is slow here; fix: x")
    finally:
        notices.reset()
    assert capsys.readouterr().err == "note: whisper is slow here; fix: x\n"
