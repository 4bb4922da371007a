"""Energy VAD: speech segments of one channel, and interval arithmetic over segment lists.

Deliberately simple and deterministic (no model): frame RMS against an absolute dBFS threshold,
short bursts dropped, close segments merged. Thresholds come from evaluate.thresholds.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Span = tuple[float, float]  # (start s, end s)


def speech_segments(pcm: np.ndarray, sample_rate: int, th: dict[str, float]) -> list[Span]:
    """Speech segments of a mono channel, in seconds."""
    hop = max(1, int(round(th["vad_frame_s"] * sample_rate)))
    n = len(pcm) // hop
    if n == 0:
        return []
    frames = np.asarray(pcm[: n * hop], dtype=np.float64).reshape(n, hop)  # [F, hop]
    rms = np.sqrt((frames**2).mean(axis=1))  # [F]
    voiced = rms > 10 ** (th["vad_db"] / 20)  # [F] bool
    # run boundaries of the voiced mask
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    frame_s = hop / sample_rate
    spans = [(float(s * frame_s), float(e * frame_s)) for s, e in zip(starts, ends, strict=True)]
    spans = merge(spans, th["vad_merge_gap_s"])
    return [(s, e) for s, e in spans if e - s >= th["vad_min_speech_s"] - 1e-9]


def merge(spans: Iterable[Span], gap: float = 0.0) -> list[Span]:
    """Sorted union of spans, joining those separated by less than `gap` seconds."""
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if out and s - out[-1][1] < gap + 1e-9:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(a, b) for a, b in out]


def total(spans: Iterable[Span]) -> float:
    return float(sum(e - s for s, e in merge(spans)))


def intersect(a: Iterable[Span], b: Iterable[Span]) -> list[Span]:
    """Pairwise intersection of two span lists."""
    out = []
    bl = merge(b)
    for s, e in merge(a):
        for t, u in bl:
            lo, hi = max(s, t), min(e, u)
            if hi > lo:
                out.append((lo, hi))
    return out


def clip(spans: Iterable[Span], lo: float, hi: float) -> list[Span]:
    """Spans cut to the window [lo, hi)."""
    return [(max(s, lo), min(e, hi)) for s, e in spans if min(e, hi) > max(s, lo)]


def covering(spans: Iterable[Span], t: float) -> Span | None:
    """The span that contains time t, if any."""
    for s, e in spans:
        if s <= t < e:
            return (s, e)
    return None
