"""expect: assertions evaluated on the synthetic record (hand-known timings and words)."""

from __future__ import annotations

import json

from rolekit.evaluate.assertions import evaluate_expectations, load_assertions, write_assertions
from rolekit.evaluate.metrics import compute_metrics
from rolekit.evaluate.review import review_run
from rolekit.scenario.expect import Expectation
from rolekit.transcribe.transcript import Segment, Transcript, Word, write_transcript


def _transcript():
    agent = [
        ("Sure,", 3.6, 3.9),
        ("I", 3.9, 4.1),
        ("can", 4.1, 4.4),
        ("help", 4.4, 4.6),
        ("with", 4.6, 4.8),
        ("a", 4.8, 4.9),
        ("refund.", 4.9, 5.4),
        ("Store", 7.1, 7.4),
        ("credit", 7.4, 7.8),
        ("works,", 7.8, 8.1),
        ("have", 9.6, 9.8),
        ("a", 9.8, 9.9),
        ("great", 9.9, 10.2),
        ("day", 10.2, 10.5),
    ]
    return Transcript(
        "test",
        [
            Segment("user", 1.0, 3.0, "Hi, I would like a refund.", [Word(" Hi,", 1.0, 1.3)]),
            Segment(
                "agent",
                3.6,
                10.5,
                " ".join(w for w, _, _ in agent),
                [Word(f" {w}", s, e) for w, s, e in agent],
            ),
        ],
    )


def _run(record, expect, transcript=None):
    metrics = compute_metrics(record, transcript)
    return evaluate_expectations(expect, record, metrics, transcript)


def test_text_checks_pass_and_fail_with_messages(synth_record):
    tr = _transcript()
    res = _run(
        synth_record,
        [
            {"agent_says": {"any_of": ["refund", "voucher"]}},
            {"agent_says": {"contains": ["store credit", "help"]}},
            {
                "agent_says": {"contains": "store credit", "turn": 0}
            },  # said after turn 1 started, not in turn 0
            {"agent_says": {"contains": "store credit", "turn": 1}},
            {"not_says": {"regex": "have a (great|nice) day"}},
            {"not_contains": "voucher"},
            {"agent_says": {"contains": "Refund", "case_sensitive": True}},
        ],
        tr,
    )
    assert [r.status for r in res] == ["pass", "pass", "fail", "pass", "fail", "pass", "fail"]
    assert res[0].message == "agent said ['refund'] in the run (whisper)"
    assert "expected 'store credit' in turn 0 (whisper)" in res[2].message and "refund" in res[2].message
    assert res[2].turn == 0
    assert res[4].message.startswith("agent said ['have a great day'] in the run")


def test_monologue_source_and_missing_transcript(synth_record):
    res = _run(
        synth_record,
        [
            {"agent_says": {"contains": "help", "source": "monologue", "turn": 0}},
            {"agent_says": {"contains": "help", "source": "monologue", "turn": 3}},
            {"agent_says": {"contains": "help"}},  # whisper, but no transcript (--no-transcribe)
            {"not_says": {"contains": "store credit"}},  # whisper too: an error, never a silent pass
            {"agent_says": {"contains": "help", "turn": 7, "source": "monologue"}},
            {"not_says": {"contains": "store credit", "source": "monologue"}},
        ],
    )
    assert [r.status for r in res] == ["pass", "fail", "error", "error", "error", "fail"]
    assert res[2].message.startswith("no Whisper transcript (run not transcribed: --no-transcribe")
    assert "source: monologue" in res[3].message
    assert res[4].message == "turn 7 was never played"
    assert res[5].message.startswith("agent said ['store credit'] in the run (monologue): ")


def _confidences(probs):
    words = [(" I'm", 3.6), (" going", 3.9), (" to", 4.1), (" refund", 4.4), (" you", 4.6)]
    seg_words = [Word(w, t, t + 0.2, p) for (w, t), p in zip(words, probs, strict=True)]
    return Transcript("test", [Segment("agent", 3.6, 4.8, "".join(w for w, _ in words), seg_words)])


def test_min_confidence_and_low_confidence_warnings(synth_record, tmp_path):
    tr = _confidences([0.11, 0.2, 0.3, 0.9, 0.95])
    res = _run(
        synth_record,
        [
            {"agent_says": {"contains": "going"}},  # judged, with a warning naming the weakest word
            {"agent_says": {"contains": "going", "min_confidence": 0.5}},  # the invented words are ignored
            {"agent_says": {"contains": "refund", "min_confidence": 0.5}},
        ],
        tr,
    )
    assert [r.status for r in res] == ["pass", "fail", "pass"]
    assert 'warning: 3 of 5 judged words below confidence 0.5, e.g. "I\'m" 0.11' in res[0].message
    assert "3 word(s) below confidence 0.5 ignored" in res[1].message and "warning" not in res[2].message
    assert res[1].details["dropped_below_min_confidence"][0] == ["I'm", 0.11]
    metrics = compute_metrics(synth_record, tr)
    assert metrics["summary"]["agent_low_confidence_share"] == 0.6
    assert metrics["summary"]["agent_mean_confidence"] == 0.492
    # the run as a whole says its agent text is mostly low-confidence
    folder = synth_record.save(tmp_path / "run")
    write_transcript(folder, tr)
    rev = review_run(folder, expect=[])
    assert len(rev.warnings) == 1 and rev.warnings[0].startswith("agent text is mostly low-confidence: 60%")
    assert load_assertions(folder)["warnings"] == rev.warnings
    write_transcript(folder, _confidences([0.9, 0.2, 0.9, 0.9, 0.95]))
    assert review_run(folder, expect=[]).warnings == []


def test_min_confidence_needs_whisper():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="min_confidence applies to source: whisper"):
        Expectation.model_validate(
            {"agent_says": {"contains": "x", "source": "monologue", "min_confidence": 0.5}}
        )


def test_monologue_byte_pieces_are_decoded(synth_record):
    from rolekit.record import decode_pieces, monologue_words

    pieces = ["PAD", " Caf", "<0xC3>", "<0xA9>", "EPAD", " ok", "<0xE1>", "<0x84>"]
    assert decode_pieces(pieces) == ["", " Caf", "é", "", "", " ok", "\ufffd", ""]
    assert monologue_words(pieces) == [(0.08, "Café"), (0.4, "ok\ufffd")]
    synth_record.text_pieces[50:53] = [" caf", "<0xC3>", "<0xA9>"]
    res = _run(synth_record, [{"agent_says": {"contains": "café", "source": "monologue"}}])
    assert res[0].status == "pass" and "<0x" not in synth_record.monologue_text()


def test_latency_yield_interrupt_and_metric_checks(synth_record):
    res = _run(
        synth_record,
        [
            {"max_response_latency": 0.6},  # 0.5, 0.5, -0.5
            {"max_response_latency": 0.4},
            {"max_response_latency": {"max": 0.2, "stat": "mean"}},  # mean 0.167
            {"max_response_latency": {"max": 1.0, "turn": 2}},  # turn 2 is a pause
            {"must_yield": {"within": 1.5}},  # yields after 1.0 s
            {"yields_on_interrupt": {"within": 0.5}},
            {"must_not_interrupt": True},  # agent starts at 9.5 over the user (0.5 s)
            {"must_not_interrupt": {"max_overlap": 0.6}},
            {"must_not_interrupt": {"turn": 0}},
            {"metric": {"name": "dead_air_ratio", "max": 0.2}},
            {"metric": {"name": "talk_ratio", "min": 0.6}},
            {"metric": {"name": "speaking_rate_wpm", "max": 200}},  # needs a transcript
            {"metric": {"name": "no_such_metric", "max": 1}},
        ],
    )
    assert [r.status for r in res] == [
        "pass",
        "fail",
        "pass",
        "error",
        "pass",
        "fail",
        "fail",
        "pass",
        "pass",
        "pass",
        "fail",
        "error",
        "error",
    ]
    assert res[1].message == "response latency 0.50 s at turn 0 > 0.40 s (2 slow)"
    assert res[2].message == "mean response latency 0.17 s <= 0.20 s"
    assert res[5].message.startswith("agent kept talking 1.00 s after the interrupt at 5.00 s (turn 1)")
    assert res[6].message == "agent started talking over the user 1 time(s), first at 9.50 s (0.50 s overlap)"
    assert res[10].message == "talk_ratio = 0.554, expected >= 0.6"


def test_yield_and_latency_edge_cases(synth, synth_record):
    synth_record.agent_pcm = synth.place([], 500.0)
    res = _run(synth_record, [{"must_yield": {}}, {"max_response_latency": 2.0}])
    assert res[0].status == "error" and "not speaking at interrupt turn(s) [1]" in res[0].message
    assert (
        res[1].status == "fail" and res[1].message == "no agent response to turn(s) [0, 1, 3] (bound 2.00 s)"
    )
    synth_record.events = [e for e in synth_record.events if e["kind"] != "interrupt"]
    assert _run(synth_record, [{"must_yield": {}}])[0].message == "no scripted interrupt"


def test_review_run_writes_files_from_meta_expect(synth_record, tmp_path):
    synth_record.meta["expect"] = [{"agent_says": {"any_of": ["refund"]}}, {"max_response_latency": 0.4}]
    folder = synth_record.save(tmp_path / "run")
    write_transcript(folder, _transcript())
    rev = review_run(folder)
    assert [r.status for r in rev.results] == ["pass", "fail"] and not rev.passed
    data = load_assertions(folder)
    assert data["passed"] is False and data["counts"] == {"pass": 1, "fail": 1, "error": 0}
    assert json.loads((folder / "metrics.json").read_text())["summary"]["agent_words"] == 14
    # Expectation models work as well as dicts
    write_assertions(folder, _run(synth_record, [Expectation.model_validate({"must_yield": True})]))
    assert load_assertions(folder)["results"][0]["kind"] == "must_yield"
