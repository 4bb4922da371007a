"""The scripted session driver: plays user timelines into an engine frame by frame, builds SessionRecords.

Written against a small protocol (`step(pcm [B, 1920]) -> StepOutput`) so that it runs with the real
engine and with scripted fakes in tests. B independent conversations run in lockstep in one engine;
a conversation whose script has ended is fed silence and its later frames are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rolekit.frames import FRAME_SAMPLES, PAD, TEXT_SPECIAL_NAMES, StepOutput
from rolekit.record import SessionRecord
from rolekit.scenario.player import TimelinePlayer
from rolekit.scenario.timeline import Timeline


class StepEngine(Protocol):
    def step(self, user_pcm: np.ndarray) -> StepOutput:  # [B, 1920] float32
        ...


PieceFn = Callable[[int], str]


def frame_db(pcm: np.ndarray) -> float:
    """RMS level of one frame in dBFS (-120 for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if pcm.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-6))


def is_voiced(pcm: np.ndarray, threshold_db: float = -40.0) -> bool:
    """Frame-energy VAD: the frame's RMS is above `threshold_db` dBFS."""
    return frame_db(pcm) > threshold_db


def piece_of(text_id: int, piece: PieceFn | None) -> str:
    """Printable piece of a text id: specials by name ("PAD", "EPAD", ...), else the tokenizer's piece."""
    if text_id in TEXT_SPECIAL_NAMES:
        return TEXT_SPECIAL_NAMES[text_id]
    return piece(text_id) if piece is not None else f"<{text_id}>"


@dataclass
class _Lane:
    """One conversation of the batch while it runs."""

    player: TimelinePlayer
    meta: dict
    user: list[np.ndarray] = field(default_factory=list)
    agent: list[np.ndarray] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    codes: list[np.ndarray] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    priming: int = 0
    finished: bool = False


def run_scripted(
    engine: StepEngine,
    timelines: list[Timeline],
    metas: list[dict] | None = None,
    *,
    piece: PieceFn | None = None,
    vad_threshold_db: float | list[float] = -40.0,
    max_frames: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> list[SessionRecord]:
    """Run B scripted conversations in one engine (batch B = len(timelines)); one record each.

    `max_frames` caps the run (context limit); a capped conversation is marked `truncated` in meta.
    `on_step(frame, total_bound)` is called after every step (progress bars).
    """
    metas = metas or [{} for _ in timelines]
    thresholds = (
        vad_threshold_db if isinstance(vad_threshold_db, list) else [vad_threshold_db] * len(timelines)
    )
    lanes = [_Lane(TimelinePlayer(t), dict(m)) for t, m in zip(timelines, metas, strict=True)]
    bound = max(t.max_frames() for t in timelines)
    cap = bound if max_frames is None else min(bound, max_frames)
    frame = 0
    while frame < cap and not all(lane.finished for lane in lanes):
        user = np.zeros((len(lanes), FRAME_SAMPLES), dtype=np.float32)  # [B, 1920]
        for b, lane in enumerate(lanes):
            if not lane.finished:
                user[b] = lane.player.next_frame()
        t0 = time.perf_counter()
        out = engine.step(user)
        ms = (time.perf_counter() - t0) * 1000.0
        agent = np.asarray(out.pcm, dtype=np.float32).reshape(len(lanes), FRAME_SAMPLES)  # [B, 1920]
        text = np.asarray(out.text).reshape(len(lanes))  # [B]
        codes = np.asarray(out.audio).reshape(len(lanes), -1)  # [B, 8]
        for b, lane in enumerate(lanes):
            if lane.finished:
                continue
            tid = int(text[b]) if out.ready else PAD
            lane.user.append(user[b])
            lane.agent.append(agent[b] if out.ready else np.zeros(FRAME_SAMPLES, np.float32))
            lane.ids.append(tid)
            lane.pieces.append(piece_of(tid, piece))
            lane.codes.append(codes[b])
            lane.step_ms.append(ms)
            lane.priming += 0 if out.ready else 1
            lane.player.observe_agent(bool(out.ready) and is_voiced(lane.agent[-1], thresholds[b]))
            lane.finished = lane.player.done
        frame += 1
        if on_step is not None:
            on_step(frame, cap)
    return [_record(lane, thresholds[b], truncated=not lane.finished) for b, lane in enumerate(lanes)]


def _record(lane: _Lane, threshold_db: float, *, truncated: bool) -> SessionRecord:
    meta = dict(lane.meta)
    meta.update(
        frames=len(lane.ids),
        priming_frames=lane.priming,
        truncated=truncated,
        agent_vad_threshold_db=threshold_db,
        batch_step_ms_mean=round(float(np.mean(lane.step_ms)), 3) if lane.step_ms else None,
    )
    codes = np.stack(lane.codes).astype(np.int32) if lane.codes else None  # [T, 8]
    empty = np.zeros(0, np.float32)
    return SessionRecord(
        user_pcm=np.concatenate(lane.user) if lane.user else empty,  # [T*1920]
        agent_pcm=np.concatenate(lane.agent) if lane.agent else empty,  # [T*1920]
        text_ids=lane.ids,
        text_pieces=lane.pieces,
        agent_codes=codes,
        step_ms=lane.step_ms,
        events=lane.player.events,
        meta=meta,
    )
