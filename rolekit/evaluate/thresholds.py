"""Versioned thresholds of every metric: VAD, windows and bounds change the numbers, so results
store the version and the values they were computed with (tau-voice / EVA precedent).

Bump THRESHOLDS_VERSION whenever a value or a metric definition changes.
"""

from __future__ import annotations

from typing import Any

THRESHOLDS_VERSION = "2"  # 2: pauses judged by VAD; word confidence bars

THRESHOLDS: dict[str, float] = {
    # energy VAD, per channel
    "vad_frame_s": 0.02,  # analysis frame
    "vad_db": -40.0,  # a frame whose RMS is above this dBFS is speech
    "vad_min_speech_s": 0.1,  # shorter bursts are dropped (clicks)
    "vad_merge_gap_s": 0.4,  # closer segments are joined (within-utterance pauses; FDB uses 0.5-0.6)
    # turn taking
    "yield_window_s": 2.0,  # the agent yields if its speech ends within this after an interrupt (tau-voice)
    "dead_air_gap_s": 3.0,  # silences longer than this are counted as dead-air gaps (tau-voice)
    "take_floor_min_span_s": 1.0,  # agent speech (VAD) inside a scripted pause that takes the floor
    "take_floor_max_words": 3,  # FDB take-turn rule on words: > 3 words (or a >= 1 s span) also takes it
    # text stream vs Whisper
    "monologue_min_overlap": 0.2,  # Personaplex-bench "no divergence" bar (share of words in common)
    # Whisper word confidence (probability): words below it are marked and warned about
    "low_confidence": 0.5,
    "low_confidence_run_share": 0.5,  # a run whose agent words are this share low-confidence says so
}
LOW_CONFIDENCE = THRESHOLDS["low_confidence"]


def thresholds(overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """The current thresholds with `overrides` applied (unknown names raise KeyError)."""
    out = dict(THRESHOLDS)
    for k, v in (overrides or {}).items():
        if k not in out:
            raise KeyError(f"unknown threshold {k!r}; known: {', '.join(sorted(out))}")
        out[k] = float(v)
    return out
