"""`rolekit live` and `rolekit devices` end to end: real tiny model, fake sound device, exit codes."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from rolekit.cli.app import main
from rolekit.models import TINY_VERSION
from rolekit.record import SessionRecord, is_complete


@pytest.fixture
def use_sd(monkeypatch):
    """Make every sounddevice import of rolekit.audio return the given fake module."""

    def install(sd):
        import rolekit.audio.devices as devices
        import rolekit.audio.stream as stream

        monkeypatch.setattr(devices, "load_sounddevice", lambda: sd)
        monkeypatch.setattr(stream, "load_sounddevice", lambda: sd)
        return sd

    return install


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_devices_lists_with_default_markers(use_sd, fake_sd_cls, capsys):
    use_sd(fake_sd_cls(default=(0, 1)))
    code, out, err = run_cli(["devices"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert any(">" in ln and "Fake Mic" in ln for ln in lines)
    assert any("<" in ln and "Fake Speaker" in ln for ln in lines)
    assert "default input" in err  # the legend goes to stderr: stdout stays one row per device


def test_devices_without_any_device_is_a_clear_error(use_sd, fake_sd_cls, capsys):
    use_sd(fake_sd_cls(devices=[], default=(-1, -1)))
    code, out, err = run_cli(["devices"], capsys)
    assert code == 2 and "no audio devices found" in err and "Traceback" not in err


def test_devices_without_portaudio_gives_an_install_hint(monkeypatch, capsys):
    def no_portaudio(name):
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(importlib, "import_module", no_portaudio)
    code, out, err = run_cli(["devices"], capsys)
    assert code == 2 and "libportaudio2" in err and "Traceback" not in err


def test_live_bad_var_and_unknown_persona_exit_2(use_sd, fake_sd, capsys):
    use_sd(fake_sd)
    code, _, err = run_cli(["live", "refund-desk", "--var", "oops"], capsys)
    assert code == 2 and "expected NAME=VALUE" in err
    code, _, err = run_cli(["live", "no-such-persona", "--model", "tiny"], capsys)
    assert code == 2 and "no-such-persona" in err and "Traceback" not in err


def test_live_session_with_the_tiny_model_saves_a_run_folder(
    tmp_path, monkeypatch, model_cache, use_sd, fake_sd_cls, capsys
):
    monkeypatch.setenv("ROLEKIT_CACHE", model_cache)
    sd = use_sd(fake_sd_cls(period=0.01))
    run = tmp_path / "run"
    code, out, err = run_cli(
        ["live", "refund-desk", "--model", "tiny", "--seconds", "1", "--record", str(run), "--seed", "7"],
        capsys,
    )
    assert code in (0, None), err
    assert "headphones" in err.lower() and f"saved {run}" in err
    assert is_complete(run)
    rec = SessionRecord.load(run)
    assert rec.frames == 13 and len(rec.user_pcm) == 13 * 1920
    assert rec.meta["persona"] == "refund-desk" and rec.meta["model_id"] == TINY_VERSION
    assert rec.meta["is_random_model"] is True and rec.meta["seed"] == 7 and rec.meta["mode"] == "live"
    assert rec.meta["run_id"] == "run" and isinstance(rec.meta["prefill_cached"], bool)
    assert rec.meta["stream"]["input_device"] == "Fake Mic"
    assert len(rec.text_pieces) == 13 and rec.agent_codes.shape == (13, 8)
    # the fake microphone's blocks reached the model: block k holds (k + 1) / 1000
    heard = rec.user_pcm.reshape(13, 1920)[1:, 0]
    assert np.all(np.diff(heard) > 0) and np.isclose(heard[0], 0.001, atol=1e-4)
    assert sd.started_at  # the stream was opened (after the prefill: see test_live_loop)

    # a second session of the same persona restores the prefill from the persona cache
    code, _, err = run_cli(
        ["live", "refund-desk", "-m", "tiny", "--seconds", "0.4", "--record", str(tmp_path / "again")], capsys
    )
    assert code in (0, None), err
    assert SessionRecord.load(tmp_path / "again").meta["prefill_cached"] is True

    # and `rolekit report` works on a live run folder like on a scripted one
    code, out, err = run_cli(["report", str(run)], capsys)
    assert code in (0, None), err
    assert (run / "report.html").is_file() and (run / "metrics.json").is_file()


def test_live_device_failure_saves_then_exits_2(
    tmp_path, monkeypatch, model_cache, use_sd, fake_sd_cls, capsys
):
    monkeypatch.setenv("ROLEKIT_CACHE", model_cache)
    sd = use_sd(fake_sd_cls(period=0.005))
    sd.fail_after = 4
    run = tmp_path / "run"
    code, _, err = run_cli(["live", "refund-desk", "--model", "tiny", "--record", str(run)], capsys)
    assert code == 2 and "audio stream stopped" in err and "session so far is saved" in err
    rec = SessionRecord.load(run)
    stream = rec.meta["stream"]
    assert stream["captured"] == 4 and rec.meta["stopped_by"] == "device_error"
    assert rec.frames == 1 + 4 - stream["dropped_input"]  # warm-up + every block kept, then the end


def test_ctrl_c_in_a_live_session_saves_the_run(
    tmp_path, monkeypatch, model_cache, use_sd, fake_sd_cls, capsys
):
    from rolekit.engine.engine import Engine
    from rolekit.engine.warmup import WARMUP_STEPS

    monkeypatch.setenv("ROLEKIT_CACHE", model_cache)
    use_sd(fake_sd_cls(period=0.005))
    real_step, calls = Engine.step, []

    def step(self, pcm):
        calls.append(1)
        if len(calls) == WARMUP_STEPS + 6:  # the warm-up's silent steps run before the stream opens
            raise KeyboardInterrupt  # Ctrl-C lands in the middle of MLX work
        return real_step(self, pcm)

    monkeypatch.setattr(Engine, "step", step)
    run = tmp_path / "run"
    code, _, err = run_cli(["live", "refund-desk", "-m", "tiny", "--record", str(run)], capsys)
    assert code in (0, None), err
    rec = SessionRecord.load(run)
    assert rec.meta["stopped_by"] == "interrupt" and rec.frames == 5
    assert len(rec.user_pcm) == len(rec.agent_pcm) == 5 * 1920 and len(rec.step_ms) == 5


def test_live_takes_random_7b_and_says_it_is_random(
    tmp_path, monkeypatch, random_7b_cache, use_sd, fake_sd_cls, capsys
):
    """`live -m random-7b` (random-7b's layout at tiny sizes: the `random_7b_cache` fixture)."""
    monkeypatch.setenv("ROLEKIT_CACHE", str(random_7b_cache))
    use_sd(fake_sd_cls(period=0.01))
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["live", "refund-desk", "-m", "random-7b", "--seconds", "0.4", "--record", str(run)], capsys
    )
    assert code in (0, None), err
    rec = SessionRecord.load(run)
    assert rec.meta["is_random_model"] is True and rec.meta["model"]["random_weights"] is True
    assert "random test model: expect noise, not speech" in err
