"""The SentencePiece wrapper and the shipped tiny tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolekit.assets.build_tiny_tokenizer import corpus_lines, train
from rolekit.errors import ModelError
from rolekit.frames import BOS, EOS, PAD
from rolekit.text import TINY_TOKENIZER, TOKENIZER_FILE, Tokenizer, tokenizer_path


def test_shipped_tiny_tokenizer_is_what_the_build_script_makes(tokenizer: Tokenizer) -> None:
    # The build is deterministic: training again gives the shipped bytes.
    assert tokenizer.path.read_bytes() == TINY_TOKENIZER.read_bytes()
    assert train(corpus_lines()) == TINY_TOKENIZER.read_bytes()


def test_special_ids_match_personaplex(tokenizer: Tokenizer) -> None:
    assert tokenizer.vocab_size == 1000
    assert [tokenizer.piece(i) for i in (0, BOS, EOS, PAD)] == ["<unk>", "<s>", "</s>", "<pad>"]
    # Ordinary text never produces the special ids.
    ids = tokenizer.encode("<system> Hello, thank you for calling. How can I help? <system>")
    assert not {0, BOS, EOS, PAD} & set(ids)


@pytest.mark.parametrize(
    "text",
    [
        "Hello, thank you for calling. How can I help you today?",
        "<system> You work for Contoso which is a bank and your name is Priya. <system>",
        "Zürich costs 5€ — déjà vu? ~{}[]",  # characters outside the corpus use byte fallback
    ],
)
def test_round_trip(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < tokenizer.vocab_size for i in ids)


def test_pieces_show_spaces(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("Please hold while I transfer you.")
    pieces = [tokenizer.piece(i) for i in ids]
    assert "".join(pieces).strip() == "Please hold while I transfer you."
    assert pieces[0].startswith(" ")
    assert "\u2581" not in "".join(pieces)
    with pytest.raises(ValueError):
        tokenizer.piece(tokenizer.vocab_size)


def test_identity_follows_file_content(tokenizer: Tokenizer, tmp_path: Path) -> None:
    copy = tmp_path / "copy.model"
    copy.write_bytes(tokenizer.path.read_bytes())
    assert Tokenizer(copy).identity == tokenizer.identity
    other = tmp_path / "other.model"
    other.write_bytes(train(corpus_lines()[:150], vocab_size=500))
    assert Tokenizer(other).identity != tokenizer.identity


def test_bad_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        Tokenizer(tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a SentencePiece model"):
        Tokenizer(junk)


def test_tokenizer_path(tmp_path: Path) -> None:
    assert tokenizer_path("tiny") == TINY_TOKENIZER
    with pytest.raises(ModelError, match=TOKENIZER_FILE):
        tokenizer_path(str(tmp_path))
    (tmp_path / TOKENIZER_FILE).write_bytes(TINY_TOKENIZER.read_bytes())
    assert tokenizer_path(str(tmp_path)) == tmp_path / TOKENIZER_FILE


def test_tokenizer_path_from_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        tokenizer_path("acme/voice-7b")
    repo = tmp_path / "models--acme--voice-7b"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    (snap / TOKENIZER_FILE).write_bytes(TINY_TOKENIZER.read_bytes())
    found = tokenizer_path("acme/voice-7b")
    assert found.read_bytes() == TINY_TOKENIZER.read_bytes()
