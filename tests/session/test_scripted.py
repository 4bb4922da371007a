"""The scripted driver with a deterministic fake engine: reactive turns, barge-in, batching, lead-in/tail."""

import numpy as np

from rolekit.frames import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from rolekit.scenario.schema import load_scenario
from rolekit.scenario.timeline import build_timeline, render_static
from rolekit.session.scripted import is_voiced, run_scripted


def _timeline(write_scenario, fake_tts, user_yaml, lead_in=1.0, tail=2.0):
    p = write_scenario(f"persona: p\nlead_in: {lead_in}\ntail: {tail}\nuser:\n{user_yaml}")
    return build_timeline(load_scenario(p), synth=fake_tts)


def _speech_frames(pcm):
    frames = pcm[: len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    return np.array([is_voiced(f) for f in frames])


def test_static_timeline_places_turns(write_scenario, fake_tts):
    tl = _timeline(
        write_scenario,
        fake_tts,
        '  - say: "one two"\n  - pause: 0.5\n  - say: "three"\n  - at: 5.0\n    say: "four"\n',
    )
    assert tl.is_static
    pcm, events = render_static(tl)
    assert [e["kind"] for e in events] == ["say", "pause", "say", "say"]
    assert events[0]["start"] == 1.0 and events[0]["end"] == 1.5  # 2 words x 0.25 s after the lead-in
    assert events[1]["start"] == 1.5 and events[1]["end"] == 2.0
    assert events[2]["start"] == 2.0 and events[2]["end"] == 2.25
    assert events[3]["start"] == 5.0 and events[3]["scheduled"] == 5.0
    # sample-exact placement: audio starts exactly at the lead-in sample, silence before
    s = int(1.0 * SAMPLE_RATE)
    assert np.all(pcm[:s] == 0) and pcm[s + 100] != 0
    assert np.all(pcm[int(1.5 * SAMPLE_RATE) : int(2.0 * SAMPLE_RATE)] == 0)
    assert len(pcm) == int(round((5.25 + 2.0) / FRAME_SECONDS)) * FRAME_SAMPLES  # last end + tail


def test_reactive_turn_waits_for_agent_silence(write_scenario, fake_tts, tone_engine):
    tl = _timeline(
        write_scenario,
        fake_tts,
        '  - say: "hello there"\n  - after: agent_done\n    silence: 0.8\n    say: "thanks"\n',
    )
    assert not tl.is_static
    engine = tone_engine(speak_frames=20, reply_after=3)
    (rec,) = run_scripted(engine, [tl], [{"scenario": "x"}])
    first, second = rec.events
    assert second["trigger"] == "agent_done" and not second["timed_out"]
    agent = _speech_frames(rec.agent_pcm)
    spoken = np.flatnonzero(agent)
    agent_end = (spoken[spoken < second["start_frame"]].max() + 1) * FRAME_SECONDS
    # the user waited until the agent had been silent for 0.8 s, and not longer than one frame more
    assert 0.8 - 1e-6 <= second["start"] - agent_end <= 0.8 + FRAME_SECONDS + 1e-6
    assert spoken.min() * FRAME_SECONDS > first["end"]  # the agent replied after the first turn
    assert len(rec.user_pcm) == len(rec.agent_pcm) == len(rec.text_ids) * FRAME_SAMPLES
    assert rec.text_pieces[spoken[0]] == "<100>" and rec.text_pieces[0] == "PAD"


def test_reactive_turn_times_out_when_agent_never_speaks(write_scenario, fake_tts, tone_engine):
    tl = _timeline(
        write_scenario,
        fake_tts,
        '  - say: "hello"\n  - after: agent_done\n    timeout: 1.6\n    say: "anyone"\n',
    )
    engine = tone_engine(speak_frames=0)
    (rec,) = run_scripted(engine, [tl])
    ev = rec.events[1]
    assert ev["timed_out"] is True
    assert abs(ev["start"] - (rec.events[0]["end"] + 1.6)) <= FRAME_SECONDS + 1e-6


def test_barge_in_lands_after_agent_starts(write_scenario, fake_tts, tone_engine):
    tl = _timeline(
        write_scenario,
        fake_tts,
        '  - say: "tell me about refunds"\n  - interrupt: {after_agent_starts: 0.8}\n    say: "wait stop"\n',
    )
    engine = tone_engine(speak_frames=60, reply_after=2, yield_frames=2)
    (rec,) = run_scripted(engine, [tl])
    ev = rec.events[1]
    assert ev["kind"] == "interrupt" and not ev["timed_out"] and ev["agent_speaking"]
    agent = _speech_frames(rec.agent_pcm)
    onset = int(np.flatnonzero(agent)[0])
    assert ev["agent_started"] == round(onset * FRAME_SECONDS, 4)
    assert abs(ev["start"] - (onset * FRAME_SECONDS + 0.8)) < 1e-6
    # the fake agent stops on the second frame of the barge-in: one frame of talk-over, then silence
    f = ev["start_frame"]
    assert agent[f - 1] and agent[f] and not agent[f + 1 : f + 6].any()


def test_batch_runs_independent_scripts_in_lockstep(write_scenario, fake_tts, tone_engine):
    a = _timeline(write_scenario, fake_tts, '  - say: "one"\n', lead_in=0.5, tail=1.0)
    b = _timeline(
        write_scenario,
        fake_tts,
        '  - say: "one two three four"\n  - after: agent_done\n    say: "ok"\n',
        lead_in=0.5,
        tail=1.0,
    )
    engine = tone_engine(batch=2, speak_frames=10)
    ra, rb = run_scripted(engine, [a, b], [{"run_id": "a"}, {"run_id": "b"}])
    assert ra.meta["run_id"] == "a" and rb.meta["run_id"] == "b"
    assert (
        len(ra.text_ids) < len(rb.text_ids) == engine.steps_seen
    )  # a stopped recording when its script ended
    assert ra.meta["frames"] == len(ra.text_ids) and not ra.meta["truncated"]
    # lane b's reply came from row 1 of the batch
    assert "<101>" in rb.text_pieces and "<100>" not in rb.text_pieces


def test_max_frames_truncates(write_scenario, fake_tts, tone_engine):
    tl = _timeline(write_scenario, fake_tts, '  - say: "one two"\n', lead_in=1.0, tail=5.0)
    (rec,) = run_scripted(tone_engine(), [tl], max_frames=10)
    assert rec.meta["truncated"] and len(rec.text_ids) == 10


def test_at_waits_for_the_previous_turn_and_interrupt_times_out(write_scenario, fake_tts, tone_engine):
    tl = _timeline(
        write_scenario,
        fake_tts,
        '  - say: "one two three four"\n  - at: 1.5\n    say: "five"\n'
        "  - interrupt: {after_agent_starts: 0.5}\n    timeout: 1.0\n    say: six\n",
        lead_in=1.0,
        tail=0.5,
    )
    (rec,) = run_scripted(tone_engine(speak_frames=0), [tl])
    first, second, third = rec.events
    assert first["end"] == 2.0 and second["start"] == 2.0 and second["scheduled"] == 1.5
    assert third["timed_out"] and third["agent_started"] is None and not third["agent_speaking"]
    # waited timeout + after_agent_starts, counted in whole frames from the frame after the turn ended
    assert 0 <= third["start"] - (second["end"] + 1.5) <= 2 * FRAME_SECONDS
    assert rec.meta["frames"] * FRAME_SECONDS >= third["end"] + 0.5


def test_frame_energy_vad():
    t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
    assert is_voiced((0.05 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    assert not is_voiced(np.full(FRAME_SAMPLES, 0.001, np.float32))
    assert not is_voiced(np.zeros(FRAME_SAMPLES, np.float32))


class _ChattyEngine:
    """Speaks (a tone) on every frame from t=0, whatever the user does."""

    def step(self, user_pcm):
        from rolekit.frames import StepOutput

        n = np.arange(FRAME_SAMPLES)
        pcm = (0.3 * np.sin(2 * np.pi * 300 * n / SAMPLE_RATE)).astype(np.float32)[None]
        return StepOutput(pcm=pcm, text=np.full(1, 3), audio=np.zeros((1, 8), np.int64), ready=True)


def test_interrupt_counts_from_the_previous_turn_end_when_the_agent_was_already_speaking(
    write_scenario, fake_tts
):
    # the agent has been "speaking" since t=0: the barge-in still waits 1.0 s after the user's line
    tl = _timeline(
        write_scenario,
        fake_tts,
        '  - say: "hello there"\n  - interrupt: {after_agent_starts: 1.0}\n    say: "wait"\n',
    )
    (rec,) = run_scripted(_ChattyEngine(), [tl])
    first, barge = rec.events
    assert barge["kind"] == "interrupt" and not barge["timed_out"]
    assert barge["start"] - first["end"] >= 1.0 - 1e-6
    assert barge["start"] - first["end"] < 1.0 + FRAME_SECONDS  # on the next frame boundary
    # counted from the first frame after the line ended, not from t=0
    assert first["end"] - 1e-6 <= barge["agent_started"] < first["end"] + FRAME_SECONDS
