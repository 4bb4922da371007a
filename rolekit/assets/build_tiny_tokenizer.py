"""Build `tiny.model`, the small real SentencePiece model used by the tiny random LM and by tests.

Run from the repo root: `python rolekit/assets/build_tiny_tokenizer.py` (deterministic: the same
corpus always gives the same bytes). Special ids match PersonaPlex: unk 0, bos 1, eos 2, pad 3.
"""

from __future__ import annotations

import io
import itertools
import sys
from pathlib import Path

import sentencepiece as spm

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "tiny_corpus.txt"
OUTPUT = HERE / "tiny.model"
VOCAB_SIZE = 1000

_COMPANIES = (
    "Northwind Outfitters",
    "Contoso Bank",
    "Bright Smile Dental",
    "Riverside Clinic",
    "Acme Travel",
)
_KINDS = ("an online clothing shop", "a bank", "a dental clinic", "a family clinic", "a travel agency")
_NAMES = ("Maya", "Sam", "Lucia", "Alex", "Priya", "Jordan")
_FACTS = (
    "refunds are accepted within {n} days of delivery",
    "the office is open {n} hours a day",
    "appointments can be moved up to {n} hours before",
    "orders over {n} dollars ship for free",
)
_NUMBERS = (2, 7, 14, 30, 48, 60, 90)


def corpus_lines() -> list[str]:
    """The training text: the hand-written corpus plus templated customer-service prompts."""
    lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    for (company, kind), name, fact, n in itertools.product(
        zip(_COMPANIES, _KINDS, strict=True), _NAMES[:3], _FACTS, _NUMBERS[:1]
    ):
        lines.append(
            f"<system> You work for {company} which is {kind} and your name is {name}. "
            f"Information: {fact.format(n=n)}. <system>"
        )
    return lines


def train(lines: list[str], vocab_size: int = VOCAB_SIZE) -> bytes:
    """Train a unigram SentencePiece model on `lines`; returns the serialized model."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    return out.getvalue()


def main(argv: list[str]) -> None:
    target = Path(argv[1]) if len(argv) > 1 else OUTPUT
    target.write_bytes(train(corpus_lines()))
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv)
