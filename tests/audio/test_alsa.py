"""The real sounddevice/PortAudio/ALSA code path, against ALSA PCMs declared in a temporary ~/.asoundrc.

`rk_cap` reads a 440 Hz sine from a raw file (the "microphone"); `rk_play` writes what is played to
a raw file (the "speaker"). Both sit on ALSA's `null` PCM, which has no clock: callbacks run far
faster than real time, so these tests check the plumbing, not the timing. PortAudio ignores PCMs
literally named `null`/`file`, hence the `rk_` names. Each test runs in a subprocess with HOME set
to a temporary folder, so the user's own ~/.asoundrc is never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rolekit
from rolekit.record import SessionRecord

pytestmark = pytest.mark.audio

SINE_HZ, SINE_AMP = 440.0, 0.5


def _asoundrc(tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir()
    t = np.arange(24000 * 2) / 24000.0  # 2 s, a whole number of 440 Hz periods: it loops cleanly
    (np.round(SINE_AMP * np.sin(2 * np.pi * SINE_HZ * t) * 32767)).astype("<i2").tofile(tmp / "in.raw")
    (home / ".asoundrc").write_text(
        textwrap.dedent(
            f"""
            pcm.rk_cap_raw {{ type file slave.pcm "null" file "/dev/null" infile "{tmp}/in.raw" format "raw" }}
            pcm.rk_cap {{ type plug slave {{ pcm "rk_cap_raw" format S16_LE rate 24000 channels 1 }}
                         hint {{ show on description "rolekit test microphone" }} }}
            pcm.rk_play_raw {{ type file slave.pcm "null" file "{tmp}/out.raw" format "raw" }}
            pcm.rk_play {{ type plug slave {{ pcm "rk_play_raw" format S16_LE rate 24000 channels 1 }}
                          hint {{ show on description "rolekit test speaker" }} }}
            """
        )
    )
    root = str(Path(rolekit.__file__).resolve().parent.parent)  # the checkout, installed or not
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, HOME=str(home), PYTHONPATH=path)


def _run(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def alsa(tmp_path):
    return tmp_path, _asoundrc(tmp_path)


def test_rolekit_devices_lists_the_alsa_pcms(alsa):
    tmp, env = alsa
    p = subprocess.run(
        [sys.executable, "-m", "rolekit", "devices"],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    # piped: one tab-separated line per device, full names
    rows = [line.split("\t") for line in p.stdout.splitlines()]
    assert rows[0] == ["default", "#", "name", "host API", "in", "out", "rate"]
    by_name = {r[2]: r for r in rows[1:]}
    assert by_name["rk_cap"][3] == "ALSA" and int(by_name["rk_cap"][4]) >= 1
    assert by_name["rk_play"][3] == "ALSA" and int(by_name["rk_play"][5]) >= 1
    j = subprocess.run(
        [sys.executable, "-m", "rolekit", "devices", "--json"],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = {d["name"] for d in json.loads(j.stdout)}
    assert j.returncode == 0 and {"rk_cap", "rk_play"} <= names


def test_duplex_stream_captures_the_microphone_file_and_plays_into_the_speaker_file(alsa):
    tmp, env = alsa
    p = _run(
        """
        import json, time, numpy as np
        from rolekit.audio.stream import DuplexStream
        s = DuplexStream("rk_cap", "rk_play", prebuffer_frames=3)
        s.start()
        frames = []
        for k in range(10):
            frames.append(s.read())
            s.write(np.full(1920, (k + 1) / 20, dtype=np.float32))
        t0 = time.perf_counter()
        while s.stats.played < 10 and time.perf_counter() - t0 < 10:
            time.sleep(0.001)
        s.stop()
        np.save("frames.npy", np.stack(frames))
        json.dump({**s.stats.as_dict(), **s.describe()}, open("stats.json", "w"))
        """,
        env,
        tmp,
    )
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp / "stats.json").read_text())
    assert stats["device_rate"] == 24000 and not stats["resampled"]
    assert stats["input_device"] == "rk_cap" and stats["output_device"] == "rk_play"
    assert stats["played"] == 10 and stats["dropped_output"] == 0

    # microphone: every frame the engine got is a piece of the 440 Hz sine at its level
    frames = np.load(tmp / "frames.npy")  # [10, 1920]
    assert frames.shape == (10, 1920) and frames.dtype == np.float32
    for f in frames:
        assert abs(float(np.abs(f).max()) - SINE_AMP) < 0.01
        peak_hz = float(np.argmax(np.abs(np.fft.rfft(f)))) * 24000 / len(f)
        assert abs(peak_hz - SINE_HZ) <= 12.5

    # speaker: the file holds exactly the ten frames written, in order, each 1920 samples long
    out = np.fromfile(tmp / "out.raw", dtype="<i2").astype(np.float32) / 32767  # [M]
    nz = out[np.abs(out) > 1e-4]
    levels = np.round(nz * 20).astype(int)
    values, starts = np.unique(levels, return_index=True)
    order = values[np.argsort(starts)]
    assert list(order) == list(range(1, 11))
    assert all(np.sum(levels == v) == 1920 for v in range(1, 11))
    assert np.all(np.diff(levels) >= 0)  # never interleaved


def test_unknown_device_name_is_a_clear_error(alsa):
    tmp, env = alsa
    p = _run(
        """
        from rolekit.audio.stream import DuplexStream
        from rolekit.errors import DeviceError
        try:
            DuplexStream("no-such-mic", "rk_play")
        except DeviceError as e:
            print("DeviceError:", e)
        """,
        env,
        tmp,
    )
    assert p.returncode == 0, p.stderr
    assert "--input-device 'no-such-mic': no input device matches" in p.stdout


def test_rolekit_live_on_alsa_devices_with_the_tiny_model(alsa, model_cache):
    """The whole command on real PortAudio/ALSA: prefill, duplex stream, save; the mic reached the model."""
    tmp, env = alsa
    env = dict(env, ROLEKIT_CACHE=model_cache)
    argv = [
        "live",
        "refund-desk",
        "--model",
        "tiny",
        "--input-device",
        "rk_cap",
        "--output-device",
        "rk_play",
    ]
    p = subprocess.run(
        [sys.executable, "-m", "rolekit", *argv, "--seconds", "1", "--record", str(tmp / "run")],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    rec = SessionRecord.load(tmp / "run")
    assert rec.frames == 13 and rec.meta["stopped_by"] == "max_seconds"
    stream = rec.meta["stream"]
    assert stream["input_device"] == "rk_cap" and stream["output_device"] == "rk_play"
    assert stream["played"] >= rec.frames - 1 - stream["prebuffer_frames"]
    user = rec.user_pcm.reshape(13, 1920)
    assert np.all(user[0] == 0)  # the silent warm-up step before the stream opened
    assert np.all(np.abs(np.abs(user[1:]).max(axis=1) - SINE_AMP) < 0.01)  # then the microphone file
    assert (tmp / "out.raw").stat().st_size > 0


def test_duplex_stream_resamples_when_the_device_runs_at_48k(alsa):
    """A device rate other than 24 kHz: 3840-sample device blocks, 1920-sample frames for the engine."""
    tmp, env = alsa
    p = _run(
        """
        import json, numpy as np
        from rolekit.audio.stream import DuplexStream
        s = DuplexStream("rk_cap", "rk_play", device_rate=48000, max_input_frames=1000)
        s.start()
        frames = []
        for k in range(8):
            frames.append(s.read())
            s.write(np.zeros(1920, dtype=np.float32))
        s.stop()
        np.save("frames48.npy", np.stack(frames))
        json.dump(s.describe() | {"block": s.block}, open("stats48.json", "w"))
        """,
        env,
        tmp,
    )
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp / "stats48.json").read_text())
    assert stats["device_rate"] == 48000 and stats["resampled"] and stats["block"] == 3840
    frames = np.load(tmp / "frames48.npy")  # [8, 1920] at 24 kHz
    for f in frames[2:]:  # past the resampler's start-up
        assert abs(float(np.abs(f).max()) - SINE_AMP) < 0.02
        peak_hz = float(np.argmax(np.abs(np.fft.rfft(f)))) * 24000 / len(f)
        assert abs(peak_hz - SINE_HZ) <= 12.5
