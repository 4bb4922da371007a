"""Metrics of a synthetic two-channel record against hand-computed values (see conftest spans)."""

from __future__ import annotations

import pytest

from rolekit.evaluate.metrics import compute_metrics, load_metrics, turn_window, write_metrics
from rolekit.evaluate.thresholds import THRESHOLDS, THRESHOLDS_VERSION, thresholds
from rolekit.evaluate.vad import merge, speech_segments
from rolekit.transcribe.transcript import Segment, Transcript, Word


def test_vad_finds_the_placed_tones_exactly(synth):
    pcm = synth.place(synth.USER_SPANS, 300.0)
    assert _flat(speech_segments(pcm, 24000, THRESHOLDS)) == pytest.approx(_flat(synth.USER_SPANS))


def test_vad_merges_short_gaps_and_drops_clicks(synth):
    # 0.2 s gap (< 0.4 merge gap) is joined; a 40 ms click (< 0.1 s) is dropped; quiet noise is silence
    pcm = synth.place([(1.0, 2.0), (2.2, 3.0), (5.0, 5.04)], 300.0)
    pcm[int(6 * 24000) : int(7 * 24000)] += 0.001  # -60 dBFS
    assert _flat(speech_segments(pcm, 24000, THRESHOLDS)) == pytest.approx([1.0, 3.0])
    assert merge([(0, 1), (1.5, 2)], 0.4) == [(0, 1), (1.5, 2)]
    assert merge([(0, 1), (1.3, 2)], 0.4) == [(0, 2)]


def test_turn_taking_metrics_match_hand_computed_values(synth_record):
    m = compute_metrics(synth_record)
    s = m["summary"]
    assert m["thresholds_version"] == THRESHOLDS_VERSION and m["thresholds"] == THRESHOLDS
    assert m["segments"]["agent"] == [[3.5, 6.0], [7.0, 8.2], [9.5, 12.0]]
    # response latency: turn 0 -> 3.5 - 3.0; interrupt turn 1 -> 7.0 - 6.5; turn 3 -> 9.5 - 10.0 (early)
    assert [(t["turn"], t["response_latency_s"]) for t in m["turns"]] == [(0, 0.5), (1, 0.5), (3, -0.5)]
    assert s["response_latency_mean"] == pytest.approx(0.167, abs=1e-3)
    assert s["response_latency_p50"] == 0.5 and s["response_latency_max"] == 0.5
    assert s["user_turns"] == 3 and s["responses"] == 3 and s["response_rate"] == 1.0
    # barge-in at 5.0 while the agent speaks (3.5-6.0): yields after 1.0 s; agent speech during 5.0-6.5 = 1.0 s
    (x,) = m["interruptions"]
    assert x == {
        "turn": 1,
        "at": 5.0,
        "agent_speaking": True,
        "time_to_yield_s": 1.0,
        "yielded": True,
        "talk_over_s": 1.0,
    }
    assert s["yield_rate"] == 1.0 and s["time_to_yield_mean"] == 1.0
    # the agent starts at 9.5 while the user speaks 8.5-10.0
    assert s["agent_interruptions"] == 1 and s["agent_interruption_rate"] == pytest.approx(0.333, abs=1e-3)
    # pause 6.5-8.5: agent segment 7.0-8.2 (1.2 s >= 1 s) takes the floor
    assert m["pauses"][0]["took_floor"] is True and s["pause_take_floor_rate"] == 1.0
    # overlap 5.0-6.0 and 9.5-10.0
    assert s["overlap_s"] == 1.5 and s["overlap_count"] == 2
    # speech union [1,3] [3.5,6.5] [7,8.2] [8.5,12]: gaps 0.5 + 0.5 + 0.3 over a 11 s span
    assert s["dead_air_s"] == 1.3 and s["dead_air_ratio"] == pytest.approx(0.118, abs=1e-3)
    assert s["dead_air_max_gap_s"] == 0.5 and s["dead_air_long_gaps"] == 0
    assert s["user_speech_s"] == 5.0 and s["agent_speech_s"] == 6.2
    assert s["talk_ratio"] == pytest.approx(6.2 / 11.2, abs=1e-3)
    assert s["agent_first_speech_s"] == 3.5
    # timings: 165 steps of 40 ms and 10 of 120 ms
    assert s["step_ms_mean"] == pytest.approx((165 * 40 + 10 * 120) / 175, abs=0.01)
    assert s["realtime_factor"] == pytest.approx(s["step_ms_mean"] / 80, abs=1e-3)
    # no transcript: text metrics are None, the monologue still counts
    assert s["speaking_rate_wpm"] is None and s["monologue_overlap"] is None and s["monologue_words"] == 7


def test_yield_failure_and_silent_agent(synth, synth_record):
    # the agent keeps talking 3.0 s after the interrupt -> not yielded within 2.0 s
    synth_record.agent_pcm = synth.place([(3.5, 8.0)], 500.0)
    m = compute_metrics(synth_record)
    (x,) = m["interruptions"]
    assert x["time_to_yield_s"] == 3.0 and x["yielded"] is False and x["talk_over_s"] == 1.5
    assert m["summary"]["yield_rate"] == 0.0
    # the agent is silent at the interrupt: not applicable, no yield rate; no responses
    synth_record.agent_pcm = synth.place([], 500.0)
    m = compute_metrics(synth_record)
    assert m["interruptions"][0]["agent_speaking"] is False and m["summary"]["yield_rate"] is None
    assert m["summary"]["responses"] == 0 and m["summary"]["response_latency_mean"] is None
    assert m["summary"]["talk_ratio"] == 0.0


def test_thresholds_are_applied_and_validated(synth_record):
    m = compute_metrics(synth_record, overrides={"yield_window_s": 0.5})
    assert m["interruptions"][0]["yielded"] is False and m["thresholds"]["yield_window_s"] == 0.5
    with pytest.raises(KeyError, match="unknown threshold"):
        thresholds({"nope": 1})


def _transcript(agent_words, user_text="hi I would like a refund sorry can I get store credit thanks"):
    segs = [
        Segment(
            "user",
            1.0,
            10.0,
            user_text,
            [Word(w, 1.0 + i * 0.3, 1.2 + i * 0.3) for i, w in enumerate(user_text.split())],
        )
    ]
    if agent_words:
        segs.append(
            Segment(
                "agent",
                agent_words[0][1],
                agent_words[-1][2],
                " ".join(w for w, _, _ in agent_words),
                [Word(f" {w}", s, e) for w, s, e in agent_words],
            )
        )
    return Transcript("test", segs)


def test_text_metrics_with_transcript(synth_record):
    words = [
        ("Sure,", 3.6, 3.9),
        ("I", 3.9, 4.1),
        ("can", 4.1, 4.4),
        ("help.", 4.4, 4.8),
        ("Store", 7.1, 7.4),
        ("credit", 7.4, 7.8),
        ("goodbye", 9.6, 10.0),
    ]
    s = compute_metrics(synth_record, _transcript(words))["summary"]
    # 7 words over 6.2 s of agent speech
    assert s["agent_words"] == 7 and s["speaking_rate_wpm"] == pytest.approx(7 / (6.2 / 60), abs=0.1)
    # monologue "Sure I can help store credit bye" vs whisper: 6 of 7 distinct words shared; 1 substitution
    assert s["monologue_overlap"] == pytest.approx(6 / 7, abs=1e-3) and s["monologue_agrees"] is True
    assert s["monologue_wer"] == pytest.approx(1 / 7, abs=1e-3)
    assert s["user_wer"] == 0.0


def test_pause_take_floor_counts_voice_activity_then_the_fdb_rule_on_words(synth_record, synth):
    # pause 6.5-8.5: the agent's voice is active 7.0-8.2 s; Whisper heard nothing: it took the floor
    m = compute_metrics(synth_record, _transcript([]))
    assert m["pauses"][0] == {
        "turn": 2,
        "start": 6.5,
        "end": 8.5,
        "agent_speech_s": 1.2,
        "agent_words": 0,
        "took_floor": True,
    }
    assert m["summary"]["pause_take_floor_rate"] == 1.0
    # speech begun before the pause and carried through all of it counts too (no transcript)
    agent = synth_record.agent_pcm
    synth_record.agent_pcm = synth.place([(3.5, 8.5), (9.5, 12.0)], 500.0)
    m = compute_metrics(synth_record)
    assert m["pauses"][0]["agent_speech_s"] == 2.0 and m["pauses"][0]["took_floor"] is True
    synth_record.agent_pcm = agent
    # only 0.5 s of voice in the pause (7.0-7.5): two words within 0.5 s -> a backchannel
    synth_record.agent_pcm[int(7.5 * 24000) : int(8.2 * 24000)] = 0.0
    m = compute_metrics(synth_record, _transcript([("mm", 7.0, 7.2), ("hm", 7.3, 7.5)]))
    assert m["pauses"][0]["agent_speech_s"] == 0.5 and m["pauses"][0]["took_floor"] is False
    # four words -> took the floor (> 3 words)
    m = compute_metrics(
        synth_record, _transcript([("a", 7.0, 7.1), ("b", 7.1, 7.2), ("c", 7.2, 7.3), ("d", 7.3, 7.4)])
    )
    assert m["pauses"][0]["took_floor"] is True
    # two words spanning >= 1 s -> took the floor
    m = compute_metrics(synth_record, _transcript([("well", 7.0, 7.3), ("okay", 7.9, 8.1)]))
    assert m["pauses"][0]["took_floor"] is True


def test_turn_window_and_metrics_file_roundtrip(synth_record, tmp_path):
    assert turn_window(synth_record.events, 0, 14.0) == (1.0, 5.0)
    assert turn_window(synth_record.events, 1, 14.0) == (5.0, 8.5)  # the pause belongs to turn 1
    assert turn_window(synth_record.events, 2, 14.0) == (6.5, 8.5)
    assert turn_window(synth_record.events, 3, 14.0) == (8.5, 14.0)
    assert turn_window(synth_record.events, 9, 14.0) is None
    m = compute_metrics(synth_record)
    write_metrics(tmp_path, m)
    assert load_metrics(tmp_path) == m


def _flat(spans):
    """[(start, end), ...] -> [start, end, ...] (pytest.approx compares flat sequences only)."""
    return [t for span in spans for t in span]


def test_every_summary_metric_is_documented(synth_record):
    from rolekit.evaluate.metric_docs import METRICS, checked_metrics

    keys = set(compute_metrics(synth_record)["summary"]) | set(
        compute_metrics(synth_record, _transcript([("a", 3.6, 3.9)]))["summary"]
    )
    assert keys == set(METRICS), keys ^ set(METRICS)
    assert all(d.better in ("lower", "higher", "") and d.unit and d.text for d in METRICS.values())
    used = checked_metrics(
        [{"metric": {"name": "dead_air_ratio", "max": 0.5}}, {"must_yield": True}, {"bogus": 1}]
    )
    assert used == {"dead_air_ratio", "yield_rate", "time_to_yield_max"}
