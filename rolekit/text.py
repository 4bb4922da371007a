"""SentencePiece text tokenizer: the real PersonaPlex model, or the tiny one shipped for the tiny LM.

No mlx here. The `<system>` wrapping of persona prompts lives in `rolekit.persona.compile`.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

from rolekit.atomic import write_bytes
from rolekit.errors import ModelError
from rolekit.hub import download_file, rolekit_cache

TOKENIZER_FILE = "tokenizer_spm_32k_3.model"  # name in NVIDIA's and the MLX model folders
TINY_TOKENIZER = Path(__file__).resolve().parent / "assets" / "tiny.model"
REAL_VOCAB = 32000  # PersonaPlex's text vocabulary (tokenizer_spm_32k_3.model)
RANDOM_7B = "random-7b"  # the full-size random model (rolekit.randmodel); its tokenizer needs no mlx
WORD_BOUNDARY = "\u2581"  # "▁", SentencePiece's marker for a preceding space


class Tokenizer:
    """A SentencePiece model: `encode` text to ids, `piece` an id back to readable text."""

    def __init__(self, path: Path | str) -> None:
        import sentencepiece as spm

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: tokenizer model not found")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as exc:
            raise ModelError(f"{self.path}: not a SentencePiece model ({exc})") from exc

    @property
    def vocab_size(self) -> int:
        return int(self._sp.vocab_size())

    @cached_property
    def identity(self) -> str:
        """sha256 of the model file: two tokenizers with the same identity encode identically."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._sp.encode(text)]

    def decode(self, ids: list[int]) -> str:
        return str(self._sp.decode([int(i) for i in ids]))

    def piece(self, token_id: int) -> str:
        """The piece of `token_id` with "▁" shown as a space (so pieces concatenate to text)."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} outside the vocabulary (0..{self.vocab_size - 1})")
        return str(self._sp.id_to_piece(int(token_id))).replace(WORD_BOUNDARY, " ")


def tokenizer_path(model_spec: str) -> Path:
    """`tiny` -> TINY_TOKENIZER; a folder -> its tokenizer_spm_32k_3.model; a hub id -> that one file."""
    if model_spec == "tiny":
        return TINY_TOKENIZER
    if model_spec == RANDOM_7B:
        return padded_tokenizer(rolekit_cache() / "tokenizers" / f"tiny-padded-{REAL_VOCAB}.model")
    folder = Path(model_spec).expanduser()
    if folder.is_dir():
        if not (folder / TOKENIZER_FILE).is_file():
            raise ModelError(f"{model_spec}: no {TOKENIZER_FILE} in this model folder")
        return folder / TOKENIZER_FILE
    return download_file(model_spec, TOKENIZER_FILE)


def padded_tokenizer(path: Path, vocab: int = REAL_VOCAB) -> Path:
    """The tiny SentencePiece model grown to `vocab` pieces (PersonaPlex's vocabulary size), written
    to `path` once (atomically). Its first 1000 ids encode as the tiny model does; the added pieces
    (`▁rkpad00001`...) score far below every real piece, so text never segments into them."""
    if path.is_file():
        return path
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.ParseFromString(TINY_TOKENIZER.read_bytes())
    for i in range(len(model.pieces), vocab):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = f"{WORD_BOUNDARY}rkpad{i:05d}", -1000.0 - i * 1e-3, 1
    return write_bytes(path, model.SerializeToString())
