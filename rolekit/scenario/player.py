"""Frame-by-frame playback of a user timeline, reacting to whether the agent is speaking.

The driver calls `next_frame()` for the user audio of step t, runs the engine, then tells the player
whether the agent's output frame t was speech (`observe_agent`). Reactive turns start on a frame
boundary once their condition holds; sequential and `at:` turns start sample-exactly.
Every played turn becomes a ground-truth event label: {"kind", "turn", "start", "end", "text", ...}.
"""

from __future__ import annotations

import numpy as np

from rolekit.frames import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from rolekit.scenario.timeline import Clip, Timeline


class TimelinePlayer:
    """Explicit state: frame index, clip index, position in the clip, and the agent-speech history."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.frame = 0  # index of the next frame to produce
        self.events: list[dict] = []
        self._clip = 0  # index of the clip playing or waiting
        self._pos = -1  # samples of the current clip played; -1 = waiting for its trigger
        self._ready_at = int(round(timeline.lead_in * SAMPLE_RATE))  # earliest start sample of the next clip
        self._wait_frame = 0  # frame at which the wait for the current clip began
        self._last_end = 0  # sample at which the last clip ended
        # agent VAD history
        self._voiced_run_start: int | None = None  # first frame of the current agent speech run
        self._agent_start_since_wait: int | None = None  # first agent speech frame since the wait began
        self._spoke_since_prev: bool = False  # agent spoke since the previous clip started
        self._silent_since_wait = 0  # trailing silent agent frames, counted from the wait start
        self._agent_frames_seen = 0
        self._timed_out = False  # the clip about to start gave up waiting for the agent

    @property
    def done(self) -> bool:
        """All turns played and the tail has passed."""
        if self._clip < len(self.timeline.clips):
            return False
        return self.frame * FRAME_SAMPLES >= self._last_end + int(round(self.timeline.tail * SAMPLE_RATE))

    @property
    def waiting_for_agent(self) -> bool:
        return (
            self._clip < len(self.timeline.clips)
            and self._pos < 0
            and self._current.trigger
            in (
                "agent_done",
                "interrupt",
            )
        )

    @property
    def _current(self) -> Clip:
        return self.timeline.clips[self._clip]

    def observe_agent(self, voiced: bool) -> None:
        """Record whether the agent's output frame `frame - 1` was speech."""
        f = self._agent_frames_seen
        self._agent_frames_seen += 1
        if voiced:
            if self._voiced_run_start is None:
                self._voiced_run_start = f
            self._spoke_since_prev = True
            self._silent_since_wait = 0
            if self._pos < 0 and self._agent_start_since_wait is None:
                self._agent_start_since_wait = f
        else:
            self._voiced_run_start = None
            self._silent_since_wait += 1

    def next_frame(self) -> np.ndarray:
        """User audio for the next step: [1920] float32."""
        out = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        start = self.frame * FRAME_SAMPLES
        end = start + FRAME_SAMPLES
        cursor = start
        while cursor < end and self._clip < len(self.timeline.clips):
            clip = self._current
            if self._pos < 0:
                begin = self._start_sample(clip, cursor, start)
                if begin is None or begin >= end:
                    break
                cursor = begin
                self._begin(clip, cursor)
            n = min(len(clip.pcm) - self._pos, end - cursor)
            out[cursor - start : cursor - start + n] = clip.pcm[self._pos : self._pos + n]
            self._pos += n
            cursor += n
            if self._pos >= len(clip.pcm):
                self._finish(clip, cursor)
        self.frame += 1
        return out

    # -- turn rules ---------------------------------------------------------------------------------

    def _start_sample(self, clip: Clip, cursor: int, frame_start: int) -> int | None:
        """Sample at which `clip` starts, or None when it still waits for the agent."""
        if clip.trigger == "sequential":
            return max(cursor, self._ready_at)
        if clip.trigger == "at":
            return max(cursor, self._ready_at, int(round((clip.at or 0.0) * SAMPLE_RATE)))
        if cursor != frame_start or cursor < self._ready_at:
            return None  # reactive turns start on a frame boundary, after the previous turn
        waited = (self.frame - self._wait_frame) * FRAME_SECONDS
        if clip.trigger == "agent_done":
            silent = self._silent_since_wait * FRAME_SECONDS
            if self._spoke_since_prev and silent >= clip.silence - 1e-9:
                return cursor
        else:  # interrupt
            onset = self._interrupt_onset()
            if onset is not None and (self.frame - onset) * FRAME_SECONDS >= clip.after_agent_starts - 1e-9:
                return cursor
        if waited >= clip.timeout - 1e-9 + (clip.after_agent_starts if clip.trigger == "interrupt" else 0.0):
            self._timed_out = True
            return cursor
        return None

    def _interrupt_onset(self) -> int | None:
        """Frame from which `after_agent_starts` counts: the agent's speech onset, but never before
        the wait began (the end of the previous turn), so speech carried over from before that turn
        ended does not fire the interrupt early."""
        onset = self._agent_start_since_wait
        return None if onset is None else max(onset, self._wait_frame)

    def _begin(self, clip: Clip, sample: int) -> None:
        self._pos = 0
        timed_out = self._timed_out
        self._timed_out = False
        event = {
            "kind": clip.kind,
            "turn": clip.turn,
            "start": round(sample / SAMPLE_RATE, 4),
            "end": None,
            "text": clip.text,
            "trigger": clip.trigger,
            "source": clip.source,
            "start_frame": self.frame,
        }
        if clip.trigger == "at":
            event["scheduled"] = clip.at
        if clip.trigger in ("agent_done", "interrupt"):
            event["timed_out"] = timed_out
            event["waited"] = round((self.frame - self._wait_frame) * FRAME_SECONDS, 4)
        if clip.trigger == "agent_done":
            event["silence"] = clip.silence
        if clip.trigger == "interrupt":
            onset = self._interrupt_onset()
            event["agent_started"] = None if onset is None else round(onset * FRAME_SECONDS, 4)
            event["after_agent_starts"] = clip.after_agent_starts
            event["agent_speaking"] = self._voiced_run_start is not None
        self.events.append(event)
        self._spoke_since_prev = self._voiced_run_start is not None

    def _finish(self, clip: Clip, sample: int) -> None:
        self.events[-1]["end"] = round(sample / SAMPLE_RATE, 4)
        self._last_end = sample
        self._ready_at = sample
        self._clip += 1
        self._pos = -1
        # the next wait starts at the frame after the one where this clip ended
        self._wait_frame = (sample + FRAME_SAMPLES - 1) // FRAME_SAMPLES
        self._silent_since_wait = 0
        self._agent_start_since_wait = self._voiced_run_start
