"""Progress that tells the truth: each run's stages in order with ETAs from what the suite measured,
plain one-line events off a terminal."""

from __future__ import annotations

import io
from pathlib import Path

from rolekit.cli.progress import PlainProgress, suite_progress
from rolekit.suite import stages
from rolekit.suite.execute import SuiteListener, SuiteOptions, run_suite
from rolekit.suite.plan import plan_suite
from rolekit.suite.stages import StageClock, StageEvent, format_eta

SCENARIO = """name: greet
persona: shop
lead_in: 0.5
tail: 2.5
repeats: 3
user:
  - say: "hello there"
expect:
  - agent_says: {contains: w10, source: monologue}
"""


def test_stage_clock_estimates_from_what_it_measured(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(stages.time, "perf_counter", lambda: now[0])
    clock = StageClock()
    assert clock.start("conversation", 50) is None  # nothing measured yet: unknown, not guessed
    now[0] += 5.0
    assert clock.stop("conversation") == 5.0
    assert clock.start("conversation", 100) == 10.0  # 0.1 s per unit, measured
    assert clock.suite_eta(3) is None
    clock.finished_run(20.0)
    clock.finished_run(40.0)
    assert clock.suite_eta(3) == 90.0
    assert format_eta(None) == "eta ?" and format_eta(12.4) == "eta 12s" and format_eta(65) == "eta 1m05s"


def test_a_suite_reports_every_stage_of_every_run_in_order(project, fake_tts, fake_backend, monkeypatch):
    from rolekit.transcribe import whisper
    from rolekit.transcribe.transcript import Transcript

    monkeypatch.setattr(
        whisper, "resolve_asr", lambda spec, asr=None: whisper.AsrModel("ct2", Path("/x"), "fake")
    )
    monkeypatch.setattr(
        whisper, "transcribe_record", lambda record, model=None, **k: Transcript(model="fake")
    )
    (project / "scenarios" / "greet.yaml").write_text(SCENARIO)
    events: list[StageEvent] = []
    runs = plan_suite([project / "scenarios"], None)
    options = SuiteOptions(out=project / "transcripts", transcribe=True)
    listener = SuiteListener(on_stage=events.append)
    outcome = run_suite(runs, fake_backend(speak_frames=10, reply_after=3), options, listener, synth=fake_tts)
    assert len(outcome.rows) == 3
    order = ["prefill", "conversation", "transcribing", "evaluating", "report"]
    assert [e.stage for e in events] == order * 3
    assert [e.runs for e in events[::5]] == [(r.key,) for r in runs]
    first, second = events[:5], events[5:10]
    assert first[2].eta_s is not None  # transcribing starts from the backend's expected speed
    assert first[0].eta_s is None and first[1].eta_s is None and first[0].suite_eta_s is None
    assert all(e.eta_s is not None for e in second)  # measured during the first run
    assert second[0].suite_eta_s is not None and events[10].suite_eta_s is not None


def test_off_a_terminal_progress_is_plain_lines():
    out = io.StringIO()
    progress = suite_progress(2, stream=out)
    assert isinstance(progress, PlainProgress)
    with progress:
        ls = progress.listener()
        ls.on_plan(2, 0)
        ls.on_stage(StageEvent("prefill", ("greet/r0",), None, None))
        ls.on_stage(StageEvent("conversation", ("greet/r0",), 4.0, 30.0))
        progress.last_step -= 60  # as if the last frame report was a minute ago
        progress.frames_t0 -= 10
        ls.on_step(125, 250)
        ls.on_stage(StageEvent("transcribing", ("greet/r0",), 3.0, 25.0))
        ls.on_run_end({"status": "pass", "scenario": "greet", "run_id": "r0", "run_dir": "greet/r0"})
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()  # no terminal control codes
    tails = [line.split("] ", 1)[1] for line in lines]
    assert tails[0] == "plan: 2 runs to do"
    assert tails[1] == "greet/r0: prefill (eta ?)"
    assert tails[2] == "greet/r0: conversation (eta 4s, suite eta 30s)"
    assert tails[3].startswith("greet/r0: conversation frame 125/250 (") and "eta 10s at most" in tails[3]
    assert tails[4] == "greet/r0: transcribing (eta 3s, suite eta 25s)"
    assert tails[5] == "pass greet/r0 [1/2]  greet/r0"
