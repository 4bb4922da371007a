"""Word normalisation and word error rate: compare Whisper output with a script or the text stream.

Normalisation is deliberately simple and documented: lower case, apostrophes kept inside words,
other punctuation dropped, digits 0-20 and tens spelled out (Whisper writes "10", espeak-ng reads
"ten"), so a WER bound measures recognition, not formatting.
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
_TENS = {30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty", 90: "ninety"}
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _number_words(n: int) -> list[str]:
    if n <= 20:
        return [_ONES[n]]
    if n < 100:
        tens, ones = divmod(n, 10)
        word = "twenty" if tens == 2 else _TENS[tens * 10]
        return [word] + ([_ONES[ones]] if ones else [])
    return [str(n)]


def normalize_words(text: str) -> list[str]:
    """Lower-case word list without punctuation; small numbers spelled out."""
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower().replace("’", "'")):
        out.extend(_number_words(int(tok)) if tok.isdigit() else [tok])
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER = edits / reference words (0.0 when both are empty, 1.0 for speech heard from nothing)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def word_overlap(a: str, b: str) -> float:
    """Share of distinct words of `a` that also occur in `b` (0..1; 1.0 when `a` has none)."""
    wa, wb = set(normalize_words(a)), set(normalize_words(b))
    if not wa:
        return 1.0
    return len(wa & wb) / len(wa)
