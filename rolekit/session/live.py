"""The live rehearsal loop: microphone -> engine.step -> speaker, one 80 ms frame at a time.

All engine (MLX) work happens on the calling thread, which must be the thread that loaded the
model (MLX evaluated from another thread falls off its fast path and cannot keep up). The audio callback only moves
blocks through the stream's queues. The prefill runs before the stream opens, so the first frame
is never stalled, and the session ends (Ctrl-C, a device error, or `max_seconds`) with a complete
SessionRecord, saved exactly like a scripted run.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rolekit.errors import DeviceError, RolekitError
from rolekit.frames import (
    CONTEXT_FRAMES,
    FRAME_RATE,
    FRAME_SAMPLES,
    FRAME_SECONDS,
    N_CODEBOOKS,
    PAD,
    StepOutput,
    seconds_to_frames,
)
from rolekit.record import SessionRecord

FRAME_MS = FRAME_SECONDS * 1000.0
HEADPHONES_HINT = "Use headphones: there is no echo cancellation, so through speakers the model hears itself and answers its own voice."


class LiveEngine(Protocol):
    """What the loop needs from rolekit.engine.Engine (batch 1, already prefilled)."""

    def step(self, user_pcm: np.ndarray) -> StepOutput: ...  # [1, 1920] float32 -> StepOutput

    @property
    def frames_left(self) -> int: ...


class FrameStream(Protocol):
    """What the loop needs from rolekit.audio.stream.DuplexStream."""

    def start(self) -> None: ...

    def read(self) -> np.ndarray: ...  # [1920] float32 captured frame (DeviceError on failure)

    def write(self, frame: np.ndarray) -> None: ...  # [1920] float32 frame to play

    def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    @property
    def stats(self) -> Any: ...  # StreamStats


@dataclass
class LiveOptions:
    max_seconds: float | None = None  # stop after this much conversation (tests, demos)
    warmup_frames: int = 1  # silent frames stepped before the stream opens (first-step compile)
    context_warning_seconds: float = 30.0  # warn this long before the context is full
    status_every: int = 3  # frames between two status updates
    window: int = 25  # frames averaged for ms/step and real-time factor (2 s)


@dataclass
class LiveStatus:
    """One refresh of the live status line (plain data; the CLI renders it)."""

    frame: int
    seconds: float
    ms_per_step: float  # mean engine.step wall time over the last `window` frames
    rtf: float  # real-time factor: compute time / audio time (< 1 holds real time)
    late_frames: int  # steps slower than one frame (80 ms)
    underruns: int
    overruns: int
    dropped_input: int
    frames_left: int  # context remaining (0 past the 3000-frame context: oldest is forgotten)
    text: str = ""  # the tail of the model's text stream


@dataclass
class LiveResult:
    record: SessionRecord
    stopped_by: str  # "interrupt" | "device_error" | "error" | "max_seconds"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    failure: RolekitError | None = None  # the error that ended the session, re-raised by the CLI


class _Take:
    """Per-frame buffers of the conversation, appended together so a Ctrl-C never splits a frame."""

    def __init__(self) -> None:
        self.user: list[np.ndarray] = []  # [1920] float32 each
        self.agent: list[np.ndarray] = []  # [1920] float32 each
        self.text: list[int] = []
        self.codes: list[np.ndarray] = []  # [8] int each
        self.step_ms: list[float] = []

    def add(self, user: np.ndarray, out: StepOutput, ms: float) -> None:
        agent = np.asarray(out.pcm, dtype=np.float32).reshape(-1)[:FRAME_SAMPLES]
        codes = np.asarray(out.audio).reshape(-1)[:N_CODEBOOKS].astype(np.int64)
        text = int(np.asarray(out.text).reshape(-1)[0]) if out.ready else PAD
        if not out.ready:  # priming steps: no frame out yet (as the scripted driver records them)
            agent = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self.user.append(user)
        self.agent.append(agent)
        self.text.append(text)
        self.codes.append(codes)
        self.step_ms.append(ms)

    def frames(self) -> int:
        return min(len(self.user), len(self.agent), len(self.text), len(self.codes), len(self.step_ms))


def run_live(
    engine: LiveEngine,
    stream: FrameStream,
    *,
    piece: Callable[[int], str],
    meta: dict[str, Any] | None = None,
    options: LiveOptions | None = None,
    prepare: Callable[[], None] | None = None,
    on_status: Callable[[LiveStatus], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> LiveResult:
    """Run a live session until Ctrl-C, a device error or `options.max_seconds`.

    `prepare` (the prefill or its restore from the persona cache) runs before the stream opens.
    `piece(id)` turns a text id into its piece ("PAD"/"EPAD" for specials). KeyboardInterrupt and
    DeviceError end the session; the record of every completed frame is returned either way.
    """
    opts = options or LiveOptions()
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning:
            on_warning(message)

    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    take = _Take()
    stopped_by, error = "max_seconds", None
    failure: RolekitError | None = None
    max_frames = None if opts.max_seconds is None else max(1, seconds_to_frames(opts.max_seconds))
    warn_at = int(opts.context_warning_seconds * FRAME_RATE)
    warned_soon = warned_full = False
    silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
    recent: deque[float] = deque(maxlen=max(1, opts.window))
    late = 0
    t_start = time.perf_counter()
    try:
        if prepare is not None:
            prepare()
        for _ in range(max(0, opts.warmup_frames)):
            t0 = time.perf_counter()
            out = engine.step(silence[None, :])
            take.add(silence, out, (time.perf_counter() - t0) * 1000.0)
        stream.start()
        t_start = time.perf_counter()
        while max_frames is None or take.frames() < max_frames:
            user = np.asarray(stream.read(), dtype=np.float32).reshape(-1)  # [1920]
            t0 = time.perf_counter()
            out = engine.step(user[None, :])  # [1, 1920]
            ms = (time.perf_counter() - t0) * 1000.0
            stream.write(np.asarray(out.pcm, dtype=np.float32).reshape(-1)[:FRAME_SAMPLES])
            take.add(user, out, ms)
            recent.append(ms)
            late += ms > FRAME_MS
            left = int(engine.frames_left)
            if not warned_soon and 0 < left <= warn_at:
                warned_soon = True
                warn(
                    f"context: {left / FRAME_RATE:.0f} s left of the {CONTEXT_FRAMES / FRAME_RATE:.0f} s window; "
                    "after that the model forgets the oldest audio, including the persona prompt"
                )
            if not warned_full and left <= 0:
                warned_full = True
                warn(
                    "context full: the session goes on, but the persona prompt is leaving the model's window"
                )
            n = take.frames()
            if on_status and n % max(1, opts.status_every) == 0:
                on_status(_status(n, recent, late, stream, left, take.text, piece))
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    except DeviceError as exc:
        stopped_by, error, failure = "device_error", str(exc), exc
    except RolekitError as exc:  # e.g. the engine refused an input: keep what was recorded
        stopped_by, error, failure = "error", str(exc), exc
    finally:
        stream.stop()
    wall = time.perf_counter() - t_start
    record = _record(
        take, piece, meta or {}, stream, opts, late, started_at, stopped_by, error, wall, warnings
    )
    return LiveResult(record=record, stopped_by=stopped_by, error=error, warnings=warnings, failure=failure)


def _status(
    n: int,
    recent: deque[float],
    late: int,
    stream: FrameStream,
    left: int,
    text_ids: list[int],
    piece: Callable[[int], str],
) -> LiveStatus:
    ms = float(np.mean(recent)) if recent else 0.0
    st = stream.stats
    tail = "".join(p for p in (piece(t) for t in text_ids[-40:]) if p not in ("PAD", "EPAD", "BOS", "EOS"))
    return LiveStatus(
        frame=n,
        seconds=n * FRAME_SECONDS,
        ms_per_step=ms,
        rtf=ms / FRAME_MS,
        late_frames=late,
        underruns=int(st.underruns),
        overruns=int(st.overruns),
        dropped_input=int(st.dropped_input),
        frames_left=max(0, left),
        text=" ".join(tail.split())[-60:],
    )


def _record(
    take: _Take,
    piece: Callable[[int], str],
    base: dict[str, Any],
    stream: FrameStream,
    opts: LiveOptions,
    late: int,
    started_at: str,
    stopped_by: str,
    error: str | None,
    wall: float,
    warnings: list[str],
) -> SessionRecord:
    n = take.frames()
    user = np.concatenate(take.user[:n]) if n else np.zeros(0, np.float32)  # [n * 1920]
    agent = np.concatenate(take.agent[:n]) if n else np.zeros(0, np.float32)  # [n * 1920]
    codes = np.stack(take.codes[:n]) if n else np.zeros((0, N_CODEBOOKS), np.int64)  # [n, 8]
    step_ms = [float(x) for x in take.step_ms[:n]]
    live_ms = step_ms[opts.warmup_frames :] or [0.0]
    try:
        device = stream.describe()
    except Exception:  # a half-opened device must not cost the recording
        device = {}
    meta = dict(base)
    meta.setdefault("scenario", "live")
    meta.update(
        {
            "mode": "live",
            "started_at": started_at,
            "ended_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "frames": n,
            "late_frames": int(late),
            "warmup_frames": min(n, opts.warmup_frames),
            "stopped_by": stopped_by,
            "error": error,
            "ms_per_step_mean": round(float(np.mean(live_ms)), 3),
            "ms_per_step_p95": round(float(np.percentile(live_ms, 95)), 3),
            "rtf": round(float(np.mean(live_ms)) / FRAME_MS, 4),
            "wall_seconds": round(wall, 3),
            "stream": {**device, **dict(stream.stats.as_dict())},
            "warnings": list(warnings),
        }
    )
    return SessionRecord(
        user_pcm=user,
        agent_pcm=agent,
        text_ids=list(take.text[:n]),
        text_pieces=[piece(t) for t in take.text[:n]],
        agent_codes=codes,
        step_ms=step_ms,
        events=[],
        meta=meta,
    )


def save_live(
    result: LiveResult, folder: Path, *, transcribe: bool = False, whisper: str | None = None
) -> Path:
    """Save the record like a scripted run; with `transcribe`, add Whisper transcripts of both channels.

    A Ctrl-C while the files are written is held back until they are complete.
    """
    with _interrupt_held():
        path = result.record.save(Path(folder))
    if transcribe and result.record.frames > 0:
        from rolekit.transcribe.transcript import write_transcript
        from rolekit.transcribe.whisper import transcribe_record

        transcript = transcribe_record(result.record, whisper)
        with _interrupt_held():
            write_transcript(path, transcript, title=f"Live session: {path.name}")
    return path


@contextmanager
def _interrupt_held() -> Iterator[None]:
    """Defer SIGINT (a second Ctrl-C) until the block is done; no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
