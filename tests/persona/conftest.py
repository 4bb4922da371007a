"""Persona test helpers: a SentencePiece model trained at test time, persona folders in tmp dirs."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from rolekit.assets.build_tiny_tokenizer import corpus_lines, train
from rolekit.text import Tokenizer


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A real SentencePiece model, trained here from the same corpus as the shipped tiny one."""
    path = tmp_path_factory.mktemp("spm") / "trained.model"
    path.write_bytes(train(corpus_lines()))
    return Tokenizer(path)


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    """An empty persona folder with a partials/ subfolder."""
    (tmp_path / "personas" / "partials").mkdir(parents=True)
    return tmp_path / "personas"


@pytest.fixture
def write(pdir: Path) -> Callable[..., Path]:
    """write("name", yaml_text) -> path; relative names may include folders (e.g. partials/x.j2)."""

    def _write(name: str, text: str) -> Path:
        path = pdir / (name if "." in Path(name).name else f"{name}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write
