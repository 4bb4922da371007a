"""Fakes for the live tests: a sounddevice module whose Stream drives the callback from a thread,
and an engine whose step is a fixed function of its input (optionally slow, or interrupting)."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from rolekit.frames import FRAME_SAMPLES, PAD, StepOutput


class FakeStream:
    """sounddevice.Stream look-alike: a thread calls `callback` every `period` s (absolute schedule).

    indata block k is filled with the value k+1 (so tests can tell which captured blocks the engine
    got); every outdata block is kept in `played`. After `fail_after` callbacks the "device" dies:
    the thread stops and calls `finished_callback`, as PortAudio does when a device disappears.
    """

    def __init__(
        self,
        sd: FakeSD,
        *,
        device,
        samplerate,
        blocksize,
        channels,
        dtype,
        callback,
        finished_callback=None,
        **kw,
    ) -> None:
        if sd.refuse_open or (sd.stereo_only and channels == 1):
            raise ValueError("Invalid number of channels" if sd.stereo_only else "Device unavailable")
        self.sd = sd
        self.out_channels = channels[1] if isinstance(channels, tuple) else channels
        self.device, self.samplerate, self.blocksize = device, samplerate, blocksize
        self.callback, self.finished_callback = callback, finished_callback
        self.latency = (0.01, 0.02)
        self.played: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        sd.streams.append(self)

    def start(self) -> None:
        self.sd.started_at.append(time.perf_counter())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k, t0 = 0, time.perf_counter()
        while not self._stop.is_set():
            if self.sd.fail_after is not None and k >= self.sd.fail_after:
                break
            indata = np.full((self.blocksize, 1), (k + 1) / 1000.0, dtype=np.float32)
            outdata = np.empty((self.blocksize, self.out_channels), dtype=np.float32)
            self.callback(indata, outdata, self.blocksize, None, None)
            self.played.append(outdata[:, 0].copy() if self.out_channels == 1 else outdata.copy())
            k += 1
            delay = t0 + k * self.sd.period - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
        if self.finished_callback:
            self.finished_callback()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop()


class FakeSD:
    """The parts of the sounddevice module that rolekit.audio uses."""

    def __init__(self, devices=None, default=(0, 0), period: float = 0.01, refuse_24k: bool = False) -> None:
        self.devices = (
            devices
            if devices is not None
            else [
                {
                    "name": "Fake Mic",
                    "hostapi": 0,
                    "max_input_channels": 1,
                    "max_output_channels": 0,
                    "default_samplerate": 48000.0,
                },
                {
                    "name": "Fake Speaker",
                    "hostapi": 0,
                    "max_input_channels": 0,
                    "max_output_channels": 2,
                    "default_samplerate": 48000.0,
                },
            ]
        )
        self.default = SimpleNamespace(device=list(default))
        self.period = period
        self.refuse_24k = refuse_24k
        self.fail_after: int | None = None
        self.stereo_only = False  # the speaker refuses mono
        self.refuse_open = False  # every stream fails to open
        self.streams: list[FakeStream] = []
        self.started_at: list[float] = []

    def query_devices(self):
        return [dict(d, index=i) for i, d in enumerate(self.devices)]

    def query_hostapis(self):
        return [{"name": "FakeAPI"}]

    def _check(self, samplerate: float) -> None:
        if self.refuse_24k and int(samplerate) == 24000:
            raise ValueError("Invalid sample rate")

    def check_input_settings(self, device=None, samplerate=None, channels=None, dtype=None) -> None:
        self._check(samplerate)

    def check_output_settings(self, device=None, samplerate=None, channels=None, dtype=None) -> None:
        self._check(samplerate)

    def Stream(self, **kw) -> FakeStream:  # noqa: N802 (sounddevice's name)
        return FakeStream(self, **kw)


class FakeEngine:
    """Echoes the user frame back at half level; text id = frame index + 10; optional slow steps.

    `interrupt_at`: raise KeyboardInterrupt inside that step (as Ctrl-C does in the middle of MLX).
    """

    def __init__(self, step_s: float = 0.0, interrupt_at: int | None = None, frames_left: int = 3000) -> None:
        self.step_s = step_s
        self.interrupt_at = interrupt_at
        self.steps = 0
        self.left = frames_left
        self.prefilled_at: float | None = None
        self.heard: list[np.ndarray] = []

    def prefill(self) -> None:
        self.prefilled_at = time.perf_counter()

    @property
    def frames_left(self) -> int:
        return self.left

    def step(self, user_pcm: np.ndarray) -> StepOutput:
        assert user_pcm.shape == (1, FRAME_SAMPLES) and user_pcm.dtype == np.float32
        if self.interrupt_at is not None and self.steps == self.interrupt_at:
            raise KeyboardInterrupt
        if self.step_s:
            time.sleep(self.step_s)
        self.heard.append(user_pcm[0].copy())
        text = np.array([self.steps + 10 if self.steps % 2 else PAD])
        audio = np.full((1, 8), self.steps, dtype=np.int64)
        self.steps += 1
        self.left -= 1
        return StepOutput(pcm=0.5 * user_pcm, text=text, audio=audio)


def piece(i: int) -> str:
    return "PAD" if i == PAD else f" w{i}"


@pytest.fixture
def fake_sd() -> FakeSD:
    return FakeSD()


@pytest.fixture
def fake_engine_cls():
    return FakeEngine


@pytest.fixture
def fake_sd_cls():
    return FakeSD


@pytest.fixture
def piece_fn():
    return piece


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> str:
    """Where the tiny model is built once for these tests (the user's ROLEKIT_CACHE when set)."""
    return os.environ.get("ROLEKIT_CACHE") or str(tmp_path_factory.mktemp("rolekit-cache"))
