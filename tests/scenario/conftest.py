"""Shared helpers for scenario tests: a scripted fake engine, silent TTS, scenario files."""

from __future__ import annotations

import numpy as np
import pytest

from rolekit.frames import FRAME_SAMPLES, PAD, SAMPLE_RATE, StepOutput


class ToneEngine:
    """A fake engine that 'speaks' a 300 Hz tone for `speak_frames` frames once the user has been
    silent for `reply_after` frames after speaking, and stops `yield_frames` frames after the user
    starts speaking over it. Text id 100 + row while speaking, PAD otherwise. Deterministic."""

    def __init__(
        self,
        batch: int = 1,
        speak_frames: int = 20,
        reply_after: int = 3,
        yield_frames: int = 2,
        greet_frames: int = 0,
    ) -> None:
        self.batch = batch
        self.speak_frames = speak_frames
        self.reply_after = reply_after
        self.yield_frames = yield_frames
        self.t = 0
        self.user_spoke = [False] * batch
        self.user_silent = [0] * batch
        self.user_run = [0] * batch
        self.left = [greet_frames] * batch
        self.steps_seen = 0

    def step(self, user_pcm: np.ndarray) -> StepOutput:
        assert user_pcm.shape == (self.batch, FRAME_SAMPLES) and user_pcm.dtype == np.float32
        pcm = np.zeros((self.batch, FRAME_SAMPLES), np.float32)
        text = np.full(self.batch, PAD)
        n = np.arange(FRAME_SAMPLES) + self.t * FRAME_SAMPLES
        for b in range(self.batch):
            voiced = float(np.sqrt(np.mean(user_pcm[b] ** 2))) > 0.01
            if voiced:
                self.user_spoke[b] = True
                self.user_silent[b] = 0
                self.user_run[b] += 1
                if self.left[b] > 0 and self.user_run[b] >= self.yield_frames:
                    self.left[b] = 0  # yield to the barge-in
            else:
                self.user_run[b] = 0
                self.user_silent[b] += 1
                if self.user_spoke[b] and self.user_silent[b] == self.reply_after:
                    self.left[b] = self.speak_frames
                    self.user_spoke[b] = False
            if self.left[b] > 0:
                pcm[b] = 0.3 * np.sin(2 * np.pi * 300 * n / SAMPLE_RATE)
                text[b] = 100 + b
                self.left[b] -= 1
        self.t += 1
        self.steps_seen += 1
        return StepOutput(pcm=pcm, text=text, audio=np.zeros((self.batch, 8), np.int64), ready=True)


def beep_tts(seconds_per_word: float = 0.25):
    """A TTS stand-in: a 200 Hz tone whose length follows the word count (no espeak needed)."""

    def synth(req):
        n = int(SAMPLE_RATE * seconds_per_word * len(req.text.split()))
        t = np.arange(n) / SAMPLE_RATE
        return (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)

    return synth


@pytest.fixture
def tone_engine():
    return ToneEngine


@pytest.fixture
def fake_tts():
    return beep_tts()


@pytest.fixture
def write_scenario(tmp_path):
    def write(text: str, name: str = "s.yaml"):
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


class FakeBackend:
    """A suite backend around ToneEngine: the real tiny tokenizer for persona plans, no model."""

    model_id = "fake-tone"
    is_random = True

    def __init__(self, fail_on: str | None = None, **engine_kwargs) -> None:
        from rolekit.text import TINY_TOKENIZER, Tokenizer

        self._tok = Tokenizer(TINY_TOKENIZER)
        self.engine_kwargs = engine_kwargs
        self.started: list[int] = []
        self.fail_on = fail_on

    @property
    def tokenizer(self):
        return self._tok

    def piece(self, text_id: int) -> str:
        return f" w{text_id}"

    def voice_frames(self, voice: str):
        return None

    def start(self, plans, seeds):
        self.started.append(len(plans))
        if self.fail_on and any(self.fail_on in p.rendered_text for p in plans):
            raise RuntimeError("engine exploded")
        return ToneEngine(batch=len(plans), **self.engine_kwargs), 2000


PERSONA = """name: shop
voice: NATF2
variables:
  company: {default: Northwind}
prompt: You work for {{ company }} and your name is Maya.
"""


@pytest.fixture
def fake_backend():
    return FakeBackend


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with personas/shop.yaml and an empty scenarios/; cwd is set there."""
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "shop.yaml").write_text(PERSONA)
    (tmp_path / "scenarios").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path
