"""The callback side of the duplex stream, driven by hand: pre-buffer, drops, underruns, overruns."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from rolekit.audio.devices import AudioDevice, choose_rate, list_devices, load_sounddevice, resolve_device
from rolekit.audio.stream import DuplexBuffers, DuplexStream
from rolekit.errors import DeviceError

B = 8  # a small block keeps the arithmetic readable


def tick(buf: DuplexBuffers, value: float, status=None) -> np.ndarray:
    """One PortAudio callback: capture a block of `value`, return what was played."""
    indata = np.full((B, 1), value, dtype=np.float32)
    outdata = np.full((B, 1), np.nan, dtype=np.float32)
    buf.callback(indata, outdata, B, None, status)
    return outdata[:, 0]


def block(v: float) -> np.ndarray:
    return np.full(B, v, dtype=np.float32)


def test_prebuffer_holds_playback_until_enough_frames_are_queued():
    buf = DuplexBuffers(B, prebuffer=3, max_input=10)
    buf.put(block(0.1))
    buf.put(block(0.2))
    assert np.all(tick(buf, 1) == 0) and not buf.playing
    assert buf.stats.underruns == 0  # silence before the start is not an underrun
    buf.put(block(0.3))
    assert np.allclose(tick(buf, 2), 0.1) and buf.playing
    assert np.allclose(tick(buf, 3), 0.2)
    assert np.allclose(tick(buf, 4), 0.3)
    assert np.all(tick(buf, 5) == 0)  # nothing queued: silence, counted
    assert buf.stats.underruns == 1 and buf.stats.played == 3
    buf.put(block(0.4))  # no re-buffering after an underrun: the next frame plays at once
    assert np.allclose(tick(buf, 6), 0.4)


def test_stale_input_is_dropped_oldest_first_and_counted():
    buf = DuplexBuffers(B, prebuffer=0, max_input=2)
    for v in (1, 2, 3, 4, 5):
        tick(buf, v)
    assert buf.stats.dropped_input == 3 and buf.input_backlog == 2
    assert buf.get(0)[0] == 4 and buf.get(0)[0] == 5  # the newest audio survives
    assert buf.get(0.01) is None
    assert buf.stats.captured == 5 and buf.stats.callbacks == 5


def test_output_queue_is_capped_and_overrun_flags_are_counted():
    buf = DuplexBuffers(B, prebuffer=1, max_input=1, max_output=3)
    for v in range(5):
        buf.put(block(v))
    assert buf.output_queued == 3 and buf.stats.dropped_output == 2
    assert np.allclose(tick(buf, 1, SimpleNamespace(input_overflow=True, output_underflow=False)), 2)
    tick(buf, 1, SimpleNamespace(input_overflow=False, output_underflow=True))
    tick(buf, 1, SimpleNamespace(input_overflow=False, output_underflow=False))
    assert buf.stats.overruns == 2


def test_stereo_output_device_gets_the_frame_on_every_channel():
    buf = DuplexBuffers(B, prebuffer=0)
    buf.put(block(0.25))
    out = np.zeros((B, 2), dtype=np.float32)
    buf.callback(np.zeros((B, 1), np.float32), out, B, None, None)
    assert np.all(out == 0.25)


def test_device_listing_selection_and_rate(fake_sd_cls):
    sd = fake_sd_cls(default=(0, 1))
    devices = list_devices(sd)
    assert [d.name for d in devices] == ["Fake Mic", "Fake Speaker"]
    assert devices[0].default_input and devices[1].default_output and devices[0].hostapi == "FakeAPI"
    assert resolve_device(None, "input", devices).name == "Fake Mic"
    assert resolve_device("speak", "output", devices).index == 1
    assert resolve_device("1", "output", devices).index == 1
    with pytest.raises(DeviceError, match="no input channels"):
        resolve_device(1, "input", devices)
    with pytest.raises(DeviceError, match="no output device matches"):
        resolve_device("usb", "output", devices)
    with pytest.raises(DeviceError, match="no device with that index"):
        resolve_device(7, "input", devices)
    assert choose_rate(sd, devices[0], devices[1]) == 24000
    assert choose_rate(fake_sd_cls(refuse_24k=True), devices[0], devices[1]) == 48000


def test_no_devices_and_no_default_are_clear_errors(fake_sd_cls):
    with pytest.raises(DeviceError, match="no audio devices found"):
        resolve_device(None, "input", list_devices(fake_sd_cls(devices=[], default=(-1, -1))))
    two = [
        {
            "name": f"Mic {i}",
            "hostapi": 0,
            "max_input_channels": 1,
            "max_output_channels": 1,
            "default_samplerate": 24000.0,
        }
        for i in range(2)
    ]
    devices = list_devices(fake_sd_cls(devices=two, default=(-1, -1)))
    with pytest.raises(DeviceError, match="no default input device; choose one with --input-device"):
        resolve_device(None, "input", devices)
    with pytest.raises(DeviceError, match="ambiguous"):
        resolve_device("mic", "input", devices)
    assert isinstance(devices[0], AudioDevice)


def test_missing_portaudio_is_a_device_error_with_install_hint(monkeypatch):
    import importlib

    def no_portaudio(name):
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(importlib, "import_module", no_portaudio)
    with pytest.raises(DeviceError, match="libportaudio2"):
        load_sounddevice()


def test_missing_sounddevice_package_is_a_device_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(DeviceError, match="pip install sounddevice"):
        load_sounddevice()


def test_resampling_path_when_the_device_refuses_24k(fake_sd_cls):
    """At 48 kHz the device blocks are 3840 samples; frames come back at 24 kHz, 1920 samples."""
    sd = fake_sd_cls(refuse_24k=True, period=0.002)
    stream = DuplexStream(sd=sd, prebuffer_frames=0, max_input_frames=1000)
    assert stream.rate == 48000 and stream.block == 3840
    stream.start()
    try:
        frames = [stream.read() for _ in range(6)]
        for _ in range(6):
            stream.write(np.full(1920, 0.5, dtype=np.float32))
        while stream.stats.played < 4:
            time.sleep(0.005)
    finally:
        stream.stop()
    assert all(f.shape == (1920,) and f.dtype == np.float32 for f in frames)
    # captured levels are (k + 1) / 1000 per device block: resampling keeps them in that range
    assert 0.0 < float(np.median(frames[-1])) < 0.1
    played = np.concatenate(sd.streams[0].played)  # [M] at 48 kHz
    assert np.sum(np.abs(played - 0.5) < 0.01) > 2 * 3840  # the 24 kHz frames came out at 48 kHz
    assert stream.buffers.stats.dropped_output == 0 and stream.describe()["resampled"] is True


def test_stereo_only_speaker_and_a_refusing_device(fake_sd_cls):
    sd = fake_sd_cls(period=0.002)
    sd.stereo_only = True
    stream = DuplexStream(sd=sd, prebuffer_frames=0, max_input_frames=1000)
    stream.start()
    try:
        stream.read()
        stream.write(np.full(1920, 0.25, dtype=np.float32))
        while stream.stats.played < 1:
            time.sleep(0.002)
    finally:
        stream.stop()
    played = [b for b in sd.streams[0].played if np.any(b)]
    assert sd.streams[0].out_channels == 2 and np.all(played[0] == 0.25)  # both channels

    sd = fake_sd_cls()
    sd.refuse_open = True
    with pytest.raises(DeviceError, match="cannot open the audio stream .* Device unavailable"):
        DuplexStream(sd=sd).start()
