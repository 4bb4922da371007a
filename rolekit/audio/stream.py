"""Full-duplex microphone + speaker stream in 80 ms frames (sounddevice, numpy only, never mlx).

The PortAudio callback runs on PortAudio's thread and ONLY moves blocks through two bounded deques
(`DuplexBuffers`); everything else (resampling, the engine) runs on the caller's thread. Latency is
kept bounded on purpose: when the consumer falls behind, the oldest captured blocks are dropped
(counted), and playback waits for a small pre-buffer before it starts, then plays silence on
underrun (counted) instead of stretching the delay.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np

from rolekit.audio.devices import AudioDevice, choose_rate, list_devices, load_sounddevice, resolve_device
from rolekit.errors import DeviceError
from rolekit.frames import FRAME_SAMPLES, SAMPLE_RATE

DEFAULT_PREBUFFER_FRAMES = 3  # 240 ms of playback cushion, like the Swift port's full-duplex mode
DEFAULT_MAX_INPUT_FRAMES = 3  # captured frames kept waiting for the engine before the oldest is dropped
STALL_SECONDS = 2.0  # no captured audio for this long means the input device has failed
FIRST_BLOCK_SECONDS = 5.0  # some servers (PulseAudio) deliver the first block 1-2 s after start


@dataclass
class StreamStats:
    """Counters of the stream; written by the callback thread, read by the status line."""

    callbacks: int = 0
    underruns: int = 0  # playback had no frame ready after it started: a block of silence was played
    overruns: int = 0  # PortAudio reported lost audio (input overflow / output underflow flags)
    dropped_input: int = 0  # stale captured blocks dropped because the engine fell behind
    dropped_output: int = 0  # queued playback blocks dropped to keep the speaker delay bounded
    played: int = 0  # blocks of model audio played
    captured: int = 0  # blocks captured

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class DuplexBuffers:
    """The callback side of the stream: bounded queues, playback pre-buffer and counters.

    `callback` has sounddevice's Stream callback signature; it never blocks and allocates only the
    copy of the captured block. Reads and writes happen on the consumer thread.
    """

    def __init__(
        self,
        block: int,
        prebuffer: int = DEFAULT_PREBUFFER_FRAMES,
        max_input: int = DEFAULT_MAX_INPUT_FRAMES,
        max_output: int | None = None,
    ) -> None:
        if block <= 0 or prebuffer < 0 or max_input < 1:
            raise ValueError("block > 0, prebuffer >= 0 and max_input >= 1 are required")
        self.block = block
        self.prebuffer = prebuffer
        self.max_input = max_input
        self.max_output = max_output if max_output is not None else prebuffer + max_input + 1
        self.stats = StreamStats()
        self.playing = prebuffer == 0
        self._input: deque[np.ndarray] = deque()  # [block] float32 captured blocks, oldest first
        self._output: deque[np.ndarray] = deque()  # [block] float32 blocks to play, oldest first
        self._arrived = threading.Event()
        self._woken = False  # set once the stream has ended: `get` stops waiting

    # -- PortAudio thread ------------------------------------------------------------------------
    def callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """Capture one block, play one block. indata/outdata: [frames, channels] float32."""
        st = self.stats
        st.callbacks += 1
        if status and (
            getattr(status, "input_overflow", False) or getattr(status, "output_underflow", False)
        ):
            st.overruns += 1
        if len(self._input) >= self.max_input:
            try:
                self._input.popleft()  # stale: the engine is behind, keep the newest audio
                st.dropped_input += 1
            except IndexError:  # the consumer took it meanwhile
                pass
        self._input.append(indata[:, 0].copy())
        st.captured += 1
        self._arrived.set()
        if not self.playing and len(self._output) >= self.prebuffer:
            self.playing = True
        block = None
        if self.playing:
            try:
                block = self._output.popleft()
            except IndexError:
                st.underruns += 1
        if block is None or len(block) != frames:
            outdata.fill(0.0)
        else:
            outdata[:, 0] = block
            if outdata.shape[1] > 1:
                outdata[:, 1:] = block[:, None]
            st.played += 1

    # -- consumer thread -------------------------------------------------------------------------
    def get(self, timeout: float | None) -> np.ndarray | None:
        """The oldest captured block still kept, waiting up to `timeout` s (None when none came)."""
        while True:
            try:
                return self._input.popleft()
            except IndexError:
                pass
            self._arrived.clear()
            if self._input:
                continue
            if self._woken:
                return None
            if not self._arrived.wait(timeout):
                return None

    def put(self, block: np.ndarray) -> None:
        """Queue one block [block] float32 for playback (the oldest is dropped past `max_output`)."""
        while len(self._output) >= self.max_output:
            try:
                self._output.popleft()
                self.stats.dropped_output += 1
            except IndexError:
                break
        self._output.append(np.ascontiguousarray(block, dtype=np.float32))

    @property
    def input_backlog(self) -> int:
        return len(self._input)

    @property
    def output_queued(self) -> int:
        return len(self._output)

    def wake(self) -> None:
        """Release a consumer waiting in `get`, now and from now on (used when the stream ends)."""
        self._woken = True
        self._arrived.set()


class _Resampler:
    """Stateful mono resampler + FIFO on the consumer thread (soxr), identity at equal rates."""

    def __init__(self, src: int, dst: int) -> None:
        self.src, self.dst = src, dst
        self._fifo = np.zeros(0, dtype=np.float32)
        self._rs = None
        if src != dst:
            import soxr

            self._rs = soxr.ResampleStream(src, dst, 1, dtype="float32", quality="HQ")

    def push(self, pcm: np.ndarray) -> None:
        out = pcm if self._rs is None else self._rs.resample_chunk(pcm.astype(np.float32), last=False)
        self._fifo = np.concatenate([self._fifo, np.asarray(out, dtype=np.float32).reshape(-1)])

    def pop(self, n: int) -> np.ndarray | None:
        if len(self._fifo) < n:
            return None
        out, self._fifo = self._fifo[:n], self._fifo[n:]
        return out


class DuplexStream:
    """A sounddevice duplex stream read and written in 80 ms frames of 24 kHz mono float32.

    Open it with `start()` only when the engine is ready (after the prefill), then alternate
    `read()` (a [1920] captured frame) and `write()` (a [1920] frame to play). When a device refuses
    24 kHz, the stream runs at the device's rate and resamples here, on the caller's thread.
    """

    def __init__(
        self,
        input_device: str | int | None = None,
        output_device: str | int | None = None,
        *,
        prebuffer_frames: int = DEFAULT_PREBUFFER_FRAMES,
        max_input_frames: int = DEFAULT_MAX_INPUT_FRAMES,
        device_rate: int | None = None,
        stall_seconds: float = STALL_SECONDS,
        sd: ModuleType | None = None,
    ) -> None:
        self._sd = sd or load_sounddevice()
        devices = list_devices(self._sd)
        self.input_device: AudioDevice = resolve_device(input_device, "input", devices)
        self.output_device: AudioDevice = resolve_device(output_device, "output", devices)
        self.rate = device_rate or choose_rate(self._sd, self.input_device, self.output_device)
        block = FRAME_SAMPLES * self.rate / SAMPLE_RATE
        if block != int(block):
            raise DeviceError(f"device rate {self.rate} Hz does not divide into 80 ms blocks")
        self.block = int(block)
        self.buffers = DuplexBuffers(self.block, prebuffer_frames, max_input_frames)
        self.stall_seconds = stall_seconds
        self._in = _Resampler(self.rate, SAMPLE_RATE)
        self._out = _Resampler(SAMPLE_RATE, self.rate)
        self._stream: Any = None
        self._closing = False
        self._finished = threading.Event()
        self.latency: tuple[float, float] | None = None

    @property
    def stats(self) -> StreamStats:
        return self.buffers.stats

    def describe(self) -> dict[str, Any]:
        """Device names, rates and buffer sizes, for the record's meta."""
        return {
            "input_device": self.input_device.name,
            "output_device": self.output_device.name,
            "device_rate": self.rate,
            "resampled": self.rate != SAMPLE_RATE,
            "prebuffer_frames": self.buffers.prebuffer,
            "max_input_frames": self.buffers.max_input,
            "latency_s": list(self.latency) if self.latency else None,
        }

    def start(self) -> None:
        """Open and start the PortAudio stream (DeviceError when the device refuses).

        Mono both ways; a speaker that takes only stereo gets the frame on both channels.
        """
        layouts: list[Any] = [1] + ([(1, 2)] if self.output_device.max_output_channels >= 2 else [])
        error: Exception | None = None
        for channels in layouts:
            try:
                self._stream = self._sd.Stream(
                    device=(self.input_device.index, self.output_device.index),
                    samplerate=self.rate,
                    blocksize=self.block,
                    channels=channels,
                    dtype="float32",
                    latency="low",
                    callback=self.buffers.callback,
                    finished_callback=self._on_finished,
                )
                self._stream.start()
                break
            except Exception as exc:  # PortAudioError, ValueError from sounddevice
                self._stream, error = None, exc
        if self._stream is None:
            raise DeviceError(
                f"cannot open the audio stream on {self.input_device.label} -> {self.output_device.label} "
                f"at {self.rate} Hz: {error}"
            )
        lat = getattr(self._stream, "latency", None)
        if isinstance(lat, (tuple, list)) and len(lat) == 2:
            self.latency = (float(lat[0]), float(lat[1]))

    def _on_finished(self) -> None:
        self._finished.set()
        self.buffers.wake()

    def read(self) -> np.ndarray:
        """The next captured frame [1920] float32 at 24 kHz (DeviceError if the device stopped).

        Blocks already captured are delivered even after the device has stopped.
        """
        while True:
            frame = self._in.pop(FRAME_SAMPLES)
            if frame is not None:
                return frame
            block = self.buffers.get(0)
            if block is None:
                if self._finished.is_set() and not self._closing:
                    raise DeviceError(f"the audio stream stopped ({self.input_device.label})")
                wait = (
                    self.stall_seconds
                    if self.stats.callbacks
                    else max(self.stall_seconds, FIRST_BLOCK_SECONDS)
                )
                block = self.buffers.get(wait)
            if block is None:
                if self._finished.is_set() and not self._closing:
                    raise DeviceError(f"the audio stream stopped ({self.input_device.label})")
                raise DeviceError(
                    f"no audio from {self.input_device.label} for {wait:g} s; is the microphone connected?"
                )
            self._in.push(block)

    def write(self, frame: np.ndarray) -> None:
        """Queue one frame [1920] float32 at 24 kHz for playback."""
        self._out.push(np.asarray(frame, dtype=np.float32).reshape(-1))
        while (block := self._out.pop(self.block)) is not None:
            self.buffers.put(block)

    def stop(self) -> None:
        """Stop and close the stream (safe to call twice, never raises a PortAudio error)."""
        self._closing = True
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.stop()
        except Exception:  # the device may already be gone
            pass
        try:
            stream.close()
        except Exception:
            pass

    def __enter__(self) -> DuplexStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
