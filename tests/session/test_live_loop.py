"""The live loop against a fake sounddevice stream (callbacks from a thread) and a fake engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rolekit.audio.stream import DuplexStream
from rolekit.frames import FRAME_SAMPLES
from rolekit.record import SessionRecord, is_complete
from rolekit.session.live import LiveOptions, LiveStatus, run_live, save_live


def make_stream(sd, **kw) -> DuplexStream:
    return DuplexStream(sd=sd, **kw)


def test_session_records_what_the_model_heard_and_said(tmp_path, fake_sd_cls, fake_engine_cls, piece_fn):
    sd = fake_sd_cls(period=0.005)
    engine = fake_engine_cls()
    statuses: list[LiveStatus] = []
    result = run_live(
        engine,
        make_stream(sd, max_input_frames=1000),
        piece=piece_fn,
        meta={"persona": "tester", "model_id": "fake"},
        options=LiveOptions(max_seconds=1.0, status_every=4),
        prepare=engine.prefill,
        on_status=statuses.append,
    )
    rec = result.record
    assert result.stopped_by == "max_seconds" and result.error is None
    assert rec.frames == 13 and len(rec.user_pcm) == len(rec.agent_pcm) == 13 * FRAME_SAMPLES
    # the prefill ran before the stream opened
    assert engine.prefilled_at is not None and engine.prefilled_at < sd.started_at[0]
    # frame 0 is the silent warm-up step; then captured block k holds (k + 1) / 1000, none lost
    frames = rec.user_pcm.reshape(13, FRAME_SAMPLES)
    assert np.all(frames[0] == 0)
    assert np.allclose(frames[1:, 0], (np.arange(12) + 1) / 1000.0)
    assert np.allclose(rec.agent_pcm, 0.5 * rec.user_pcm)
    assert rec.text_pieces[:4] == ["PAD", " w11", "PAD", " w13"]
    assert rec.agent_codes.shape == (13, 8) and rec.agent_codes[5, 0] == 5
    assert rec.meta["frames"] == 13 and rec.meta["stopped_by"] == "max_seconds"
    assert rec.meta["stream"]["dropped_input"] == 0 and rec.meta["stream"]["input_device"] == "Fake Mic"
    assert rec.meta["persona"] == "tester" and rec.meta["mode"] == "live"
    assert [s.frame for s in statuses] == [4, 8, 12]
    assert statuses[-1].frames_left == 3000 - 12 and "w11" in statuses[-1].text
    # what the speaker played: the model's frames, in order, after the 3-frame pre-buffer
    played = np.concatenate(sd.streams[0].played)
    first = np.flatnonzero(played)[0]
    assert first >= 3 * FRAME_SAMPLES
    np.testing.assert_allclose(
        played[first : first + FRAME_SAMPLES], rec.agent_pcm[FRAME_SAMPLES : 2 * FRAME_SAMPLES]
    )

    folder = save_live(result, tmp_path / "run")
    assert is_complete(folder)
    back = SessionRecord.load(folder)
    assert back.frames == 13 and back.meta["late_frames"] == 0
    assert json.loads((folder / "channels.json").read_text())["channels"] == {"0": "user", "1": "agent"}


def test_slow_engine_drops_stale_input_underruns_and_counts_late_frames(
    fake_sd_cls, fake_engine_cls, piece_fn
):
    """An engine slower than real time must not build up latency: old input goes, silence plays."""
    sd = fake_sd_cls(period=0.02)
    engine = fake_engine_cls(step_s=0.09)  # > 80 ms per step, 4.5 device blocks per step
    result = run_live(
        engine,
        make_stream(sd, max_input_frames=2, prebuffer_frames=1),
        piece=piece_fn,
        options=LiveOptions(max_seconds=0.8, warmup_frames=0),
    )
    meta = result.record.meta
    assert result.record.frames == 10
    assert meta["late_frames"] == 10 and meta["ms_per_step_mean"] >= 80 and meta["rtf"] >= 1.0
    assert meta["stream"]["dropped_input"] > 0 and meta["stream"]["underruns"] > 0
    # what the engine heard skipped ahead: never more than max_input (2) blocks behind the device
    heard = [int(round(h[0] * 1000)) for h in engine.heard]
    assert all(b > a for a, b in zip(heard, heard[1:], strict=False))
    assert heard[-1] - heard[0] > 10


def test_ctrl_c_mid_step_stops_cleanly_and_saves_a_complete_record(
    tmp_path, fake_sd_cls, fake_engine_cls, piece_fn
):
    sd = fake_sd_cls(period=0.005)
    engine = fake_engine_cls(interrupt_at=6)
    result = run_live(engine, make_stream(sd), piece=piece_fn, options=LiveOptions())
    assert result.stopped_by == "interrupt"
    rec = result.record
    assert rec.frames == 6 and len(rec.user_pcm) == 6 * FRAME_SAMPLES == len(rec.agent_pcm)
    assert len(rec.step_ms) == 6 and rec.agent_codes.shape == (6, 8)
    assert not sd.streams[0]._thread.is_alive()  # the device stream was stopped
    folder = save_live(result, tmp_path / "live-run")
    assert is_complete(folder) and not (tmp_path / "live-run.partial").exists()
    assert SessionRecord.load(folder).meta["stopped_by"] == "interrupt"


def test_device_failure_ends_the_session_with_the_frames_so_far(fake_sd_cls, fake_engine_cls, piece_fn):
    sd = fake_sd_cls(period=0.005)
    sd.fail_after = 5
    engine = fake_engine_cls()
    result = run_live(engine, make_stream(sd, max_input_frames=100), piece=piece_fn, options=LiveOptions())
    assert result.stopped_by == "device_error" and "stream stopped" in result.error
    assert result.record.frames == 1 + 5  # warm-up + every block the device delivered
    assert result.record.meta["error"] == result.error


def test_silent_input_device_is_reported_as_a_stall(fake_sd_cls, fake_engine_cls, piece_fn):
    sd = fake_sd_cls(period=0.005)
    sd.fail_after = 0
    stream = make_stream(sd, stall_seconds=0.2)
    stream.stats.callbacks = 1  # past the longer wait for a first block
    stream._on_finished = lambda: None  # the device neither delivers nor reports an end
    stream.buffers.wake = lambda: None
    result = run_live(fake_engine_cls(), stream, piece=piece_fn, options=LiveOptions())
    assert result.stopped_by == "device_error" and "no audio from" in result.error


def test_context_warnings_and_the_session_goes_on_past_the_context(fake_sd_cls, fake_engine_cls, piece_fn):
    sd = fake_sd_cls(period=0.002)
    engine = fake_engine_cls(frames_left=6)
    warnings: list[str] = []
    result = run_live(
        engine,
        make_stream(sd, max_input_frames=1000),
        piece=piece_fn,
        options=LiveOptions(max_seconds=1.0, context_warning_seconds=0.4),
        on_warning=warnings.append,
    )
    assert result.record.frames == 13  # went on after the context was full
    assert len(warnings) == 2 and "s left" in warnings[0] and "context full" in warnings[1]
    assert result.record.meta["warnings"] == warnings


def test_transcribe_option_writes_transcripts_next_to_the_record(
    tmp_path, monkeypatch, fake_sd_cls, fake_engine_cls, piece_fn
):
    from rolekit.transcribe import whisper
    from rolekit.transcribe.transcript import Segment, Transcript, load_transcript

    seen = {}

    def fake_transcribe(record, model=None, options=None):
        seen["frames"] = record.frames
        return Transcript(model="fake", segments=[Segment("agent", 0.0, 0.5, "hello", [], 0.0)], options={})

    monkeypatch.setattr(whisper, "transcribe_record", fake_transcribe)
    sd = fake_sd_cls(period=0.002)
    result = run_live(
        fake_engine_cls(), make_stream(sd), piece=piece_fn, options=LiveOptions(max_seconds=0.4)
    )
    folder = save_live(result, tmp_path / "t", transcribe=True)
    assert seen["frames"] == 5
    assert load_transcript(folder).text("agent") == "hello" and (folder / "transcript.md").is_file()


@pytest.mark.parametrize("prebuffer", [0, 3])
def test_prebuffer_sets_the_playback_delay(fake_sd_cls, fake_engine_cls, piece_fn, prebuffer):
    sd = fake_sd_cls(period=0.005)
    run_live(
        fake_engine_cls(),
        make_stream(sd, max_input_frames=1000, prebuffer_frames=prebuffer),
        piece=piece_fn,
        options=LiveOptions(max_seconds=0.8, warmup_frames=0),
    )
    played = sd.streams[0].played
    first = next(i for i, b in enumerate(played) if np.any(b))
    assert first >= prebuffer  # silent until `prebuffer` frames were queued
    assert np.isclose(played[first][0], 0.5 / 1000.0)  # then the answer to the first captured block


def test_an_engine_error_ends_the_session_but_keeps_the_record(fake_sd_cls, fake_engine_cls, piece_fn):
    from rolekit.errors import ConfigError

    engine = fake_engine_cls()
    real_step = engine.step

    def step(pcm):
        if engine.steps == 4:
            raise ConfigError("step needs user audio [1, 1920]")
        return real_step(pcm)

    engine.step = step
    result = run_live(engine, make_stream(fake_sd_cls(period=0.005)), piece=piece_fn)
    assert result.stopped_by == "error" and isinstance(result.failure, ConfigError)
    assert result.record.frames == 4 and result.record.meta["error"] == "step needs user audio [1, 1920]"


def test_a_second_ctrl_c_while_saving_waits_until_the_files_are_complete(
    tmp_path, monkeypatch, fake_sd_cls, fake_engine_cls, piece_fn
):
    import os
    import signal

    result = run_live(
        fake_engine_cls(),
        make_stream(fake_sd_cls(period=0.002)),
        piece=piece_fn,
        options=LiveOptions(max_seconds=0.4),
    )
    real_save = SessionRecord.save

    def save_interrupted(self, folder):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives in the middle of writing
        return real_save(self, folder)

    monkeypatch.setattr(SessionRecord, "save", save_interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_live(result, tmp_path / "run")
    assert is_complete(tmp_path / "run") and not (tmp_path / "run.partial").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
