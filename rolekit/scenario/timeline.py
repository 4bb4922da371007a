"""A scenario's user timeline: the audio of every turn (TTS, files, pauses) and when each may start.

Static parts (audio, sequential and `at:` times) are fixed here; reactive parts (`after: agent_done`,
`interrupt:`) are resolved frame by frame by `scenario.player.TimelinePlayer` while the engine runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rolekit.audio.tts import TtsError, TtsRequest, synthesize
from rolekit.audio.wav import read_audio
from rolekit.errors import AudioInputError, DocumentError
from rolekit.frames import FRAME_SECONDS, SAMPLE_RATE
from rolekit.scenario.schema import LoadedScenario, Scenario

Synthesizer = Callable[[TtsRequest], np.ndarray]


@dataclass(frozen=True)
class Clip:
    """One user turn, rendered: its audio and its start rule."""

    turn: int
    kind: str  # say | audio | pause | interrupt
    pcm: np.ndarray  # [N] float32, 24 kHz (zeros for a pause)
    text: str | None  # the spoken text (say / interrupt with say), None otherwise
    trigger: str  # sequential | at | agent_done | interrupt
    at: float | None = None
    silence: float = 0.8
    timeout: float = 10.0
    after_agent_starts: float = 0.0
    source: str | None = None  # audio file, or "tts:<backend>:<voice>:<rate>"

    @property
    def duration(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


@dataclass(frozen=True)
class Timeline:
    clips: tuple[Clip, ...]
    lead_in: float
    tail: float

    @property
    def is_static(self) -> bool:
        """True when no turn waits for the agent (the user PCM is known before the run)."""
        return all(c.trigger in ("sequential", "at") for c in self.clips)

    def max_seconds(self) -> float:
        """Upper bound of the conversation length (every reactive wait hitting its timeout)."""
        t = self.lead_in
        for c in self.clips:
            if c.trigger == "at":
                t = max(t, c.at or 0.0)
            elif c.trigger == "agent_done":
                t += c.timeout
            elif c.trigger == "interrupt":
                t += c.timeout + c.after_agent_starts
            t += c.duration
        return t + self.tail

    def max_frames(self) -> int:
        return int(np.ceil(round(self.max_seconds() / FRAME_SECONDS, 6))) + 1


def build_timeline(loaded: LoadedScenario, synth: Synthesizer = synthesize) -> Timeline:
    """Render every turn's audio (TTS is cached). Unreadable audio files raise DocumentError naming the turn."""
    sc: Scenario = loaded.scenario
    clips = []
    for i, turn in enumerate(sc.user):
        source = None
        text = None
        if turn.say is not None:
            req = TtsRequest(turn.say, sc.tts.backend, turn.voice or sc.tts.voice, turn.rate or sc.tts.rate)
            try:
                pcm = synth(req)
            except TtsError as exc:
                raise DocumentError(problems=[loaded.problem(str(exc), ("user", i, "say"))]) from None
            text = turn.say
            try:
                req = req.resolved()  # name the backend and voice actually used
            except TtsError:
                pass  # a stand-in synthesizer was used
            source = f"tts:{req.backend}:{req.voice or 'default'}:{req.rate}"
        elif turn.audio is not None:
            path = loaded.audio_path(i)
            try:
                pcm = read_audio(path)
            except AudioInputError as exc:
                raise DocumentError(problems=[loaded.problem(str(exc), ("user", i, "audio"))]) from None
            source = str(path)
        else:
            pcm = np.zeros(int(round((turn.pause or 0.0) * SAMPLE_RATE)), dtype=np.float32)
        if turn.gain_db:
            pcm = pcm * np.float32(10 ** (turn.gain_db / 20))
        clips.append(
            Clip(
                turn=i,
                kind=turn.kind,
                pcm=np.clip(pcm, -1.0, 1.0).astype(np.float32),
                text=text,
                trigger=turn.trigger,
                at=turn.at,
                silence=turn.silence,
                timeout=turn.timeout,
                after_agent_starts=turn.interrupt.after_agent_starts if turn.interrupt else 0.0,
                source=source,
            )
        )
    return Timeline(tuple(clips), sc.lead_in, sc.tail)


def render_static(timeline: Timeline) -> tuple[np.ndarray, list[dict]]:
    """User PCM [N] and event labels of a timeline without reactive turns (agent assumed silent)."""
    from rolekit.scenario.player import TimelinePlayer

    player = TimelinePlayer(timeline)
    frames = []
    while not player.done:
        frames.append(player.next_frame())
        player.observe_agent(False)
    pcm = np.concatenate(frames) if frames else np.zeros(0, np.float32)  # [T*1920]
    return pcm, player.events
