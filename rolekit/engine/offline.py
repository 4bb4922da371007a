"""Offline run of scripted user audio (NVIDIA offline.py semantics): one agent frame per user frame.

After the prompt phases every call produces a frame, so input frame i gives output frame i. The
`tail` frames feed silence on the user stream so that a reply in progress is not cut off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rolekit.engine.engine import Engine
from rolekit.frames import FRAME_SAMPLES, N_CODEBOOKS


@dataclass
class OfflineResult:
    pcm: np.ndarray  # [B, F * 1920] float32 agent audio
    text: np.ndarray  # [B, F] int text ids of each output frame
    audio: np.ndarray  # [B, F, 8] int agent codes of each output frame
    step_ms: list[float] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.text.shape[1]


def frame_user_audio(pcm: np.ndarray, tail_frames: int = 0) -> np.ndarray:
    """[B, N] or [N] samples -> [B, F, 1920]: zero-padded to whole frames, plus silent tail frames."""
    pcm = np.atleast_2d(np.asarray(pcm, np.float32))
    frames = -(-pcm.shape[1] // FRAME_SAMPLES) + tail_frames
    out = np.zeros((pcm.shape[0], frames * FRAME_SAMPLES), np.float32)
    out[:, : pcm.shape[1]] = pcm
    return out.reshape(pcm.shape[0], frames, FRAME_SAMPLES)


def run_offline(
    engine: Engine,
    user_frames: np.ndarray,
    on_step: Callable[[int, float], None] | None = None,
) -> OfflineResult:
    """Step `engine` (already prefilled) over user_frames [B, F, 1920]; collect every ready frame."""
    b, f, _ = user_frames.shape
    pcm = np.zeros((b, f, FRAME_SAMPLES), np.float32)
    text = np.zeros((b, f), np.int64)
    audio = np.zeros((b, f, N_CODEBOOKS), np.int64)
    step_ms: list[float] = []
    out_i = 0
    for i in range(f):
        t0 = time.perf_counter()
        out = engine.step(user_frames[:, i])
        step_ms.append((time.perf_counter() - t0) * 1000.0)
        if out.ready:
            pcm[:, out_i], text[:, out_i], audio[:, out_i] = out.pcm, out.text, out.audio
            out_i += 1
        if on_step is not None:
            on_step(i, step_ms[-1])
    return OfflineResult(
        pcm=pcm[:, :out_i].reshape(b, -1), text=text[:, :out_i], audio=audio[:, :out_i], step_ms=step_ms
    )
