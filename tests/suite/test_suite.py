"""Suite runner with a fake backend: run folders, results.jsonl, exit codes, resume, batching, bad input."""

import json

import pytest

from rolekit.errors import DocumentError
from rolekit.record import SessionRecord, is_complete
from rolekit.suite.execute import SuiteOptions, run_suite
from rolekit.suite.plan import plan_suite
from rolekit.suite.results import summarize

# The tone engine writes text id 100 + batch row while it speaks: the monologue says "w100 w100 ...".
PASSING = """name: {name}
persona: shop
lead_in: 0.5
tail: 2.5
{extra}
user:
  - say: "hello there"
  - after: agent_done
    silence: 0.4
    say: "thanks"
expect:
  - agent_says: {{contains: w10, source: monologue}}
  - max_response_latency: 1.0
"""


def _scenario(project, name, extra="", expect_extra=""):
    text = PASSING.format(name=name, extra=extra) + expect_extra
    (project / "scenarios" / f"{name}.yaml").write_text(text)


def _run(project, fake_tts, backend, pattern=None, **opts):
    runs = plan_suite([project / "scenarios"], pattern)
    options = SuiteOptions(out=project / "transcripts", transcribe=False, **opts)
    return runs, run_suite(runs, backend, options, synth=fake_tts)


def test_suite_writes_run_folders_and_results(project, fake_tts, fake_backend):
    _scenario(project, "greet", extra="repeats: 2\nmatrix: {company: [Contoso, Fabrikam]}")
    backend = fake_backend(speak_frames=10, reply_after=3)
    runs, outcome = _run(project, fake_tts, backend)
    assert [r.run_id for r in runs] == [
        "company-Contoso-r0",
        "company-Contoso-r1",
        "company-Fabrikam-r0",
        "company-Fabrikam-r1",
    ]
    assert [r.seed for r in runs] == [0, 1, 0, 1]
    assert all(row["status"] == "pass" for row in outcome.rows), outcome.rows
    assert summarize(outcome.rows)["exit_code"] == 0
    folder = project / "transcripts" / "greet" / "company-Fabrikam-r1"
    assert (
        is_complete(folder) and (folder / "metrics.json").is_file() and (folder / "assertions.json").is_file()
    )
    rec = SessionRecord.load(folder)
    assert rec.meta["vars"] == {"company": "Fabrikam"} and rec.meta["seed"] == 1
    assert rec.meta["model_id"] == "fake-tone" and rec.meta["persona_hash"]
    assert [e["kind"] for e in rec.events] == ["say", "say"]
    lines = (project / "transcripts" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["run_id"] for x in lines] == [r.run_id for r in runs]
    assert backend.started == [1, 1, 1, 1]


def test_failures_give_exit_1_with_messages(project, fake_tts, fake_backend):
    _scenario(project, "strict", expect_extra="  - agent_says: {contains: refund, source: monologue}\n")
    _, outcome = _run(project, fake_tts, fake_backend())
    (row,) = outcome.rows
    assert row["status"] == "fail" and any("refund" in f for f in row["failures"])
    assert summarize(outcome.rows)["exit_code"] == 1


def test_engine_crash_is_an_error_row_and_suite_goes_on(project, fake_tts, fake_backend):
    _scenario(project, "a", extra="vars: {company: Boom}")
    _scenario(project, "b")
    _, outcome = _run(project, fake_tts, fake_backend(fail_on="Boom"))
    by = {r["scenario"]: r for r in outcome.rows}
    assert by["a"]["status"] == "error" and "engine exploded" in by["a"]["error"]
    assert by["b"]["status"] == "pass"
    assert not (project / "transcripts" / "a").exists()


def test_batching_runs_conversations_together(project, fake_tts, fake_backend):
    _scenario(project, "greet", extra="repeats: 3")
    backend = fake_backend()
    _, outcome = _run(project, fake_tts, backend, batch=2)
    assert backend.started == [2, 1]
    assert [r["status"] for r in outcome.rows] == ["pass"] * 3


def test_resume_skips_finished_runs(project, fake_tts, fake_backend):
    _scenario(project, "greet", extra="repeats: 3")
    _run(project, fake_tts, fake_backend())
    out = project / "transcripts" / "greet"
    # simulate a crash: run r2 never finished (only its temporary folder), its result line is missing
    (out / "r2").rename(out / ".r2.partial-crashed")
    path = project / "transcripts" / "results.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]) + '{"torn line')
    backend = fake_backend()
    _, outcome = _run(project, fake_tts, backend, resume=True)
    assert backend.started == [1] and outcome.skipped == 2
    assert is_complete(out / "r2") and not (out / ".r2.partial-crashed").exists()
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.startswith('{"') and x.endswith("}")]
    assert sorted(r["run_id"] for r in rows) == ["r0", "r1", "r2"]
    assert [r["status"] for r in outcome.rows] == ["pass"] * 3


def test_filter_selects_runs(project, fake_tts, fake_backend):
    _scenario(project, "one")
    _scenario(project, "two", extra="repeats: 2")
    assert [r.key for r in plan_suite([project / "scenarios"], "two/*1")] == ["two/r1"]
    assert [r.key for r in plan_suite([project / "scenarios"], "one")] == ["one/r0"]


def test_tags_select_scenarios_and_reach_the_results(project, fake_tts, fake_backend):
    _scenario(project, "tagged", extra="tags: [smoke, refunds]")
    _scenario(project, "plain")
    assert [r.key for r in plan_suite([project / "scenarios"], tags=["smoke"])] == ["tagged/r0"]
    assert [r.key for r in plan_suite([project / "scenarios"], tags=["nope", "refunds"])] == ["tagged/r0"]
    _, outcome = _run(project, fake_tts, fake_backend(), pattern="tagged")
    assert outcome.rows[0]["tags"] == ["smoke", "refunds"] and outcome.rows[0]["wall_s"] > 0


def test_unknown_persona_fails_before_anything_is_written(project, fake_tts, fake_backend):
    _scenario(project, "good")
    (project / "scenarios" / "bad.yaml").write_text("persona: nobody\nuser:\n  - say: hi\n")
    (project / "transcripts").mkdir()
    (project / "transcripts" / "results.jsonl").write_text('{"keep": 1}\n')
    backend = fake_backend()
    with pytest.raises(DocumentError) as err:
        _run(project, fake_tts, backend)
    assert "bad.yaml:1: persona:" in str(err.value) and "nobody" in str(err.value)
    assert backend.started == []
    assert (project / "transcripts" / "results.jsonl").read_text() == '{"keep": 1}\n'


def test_scenario_longer_than_context_is_rejected(project, fake_tts, fake_backend):
    (project / "scenarios" / "long.yaml").write_text(
        "persona: shop\nlead_in: 30\ntail: 230\nuser:\n  - say: hi\n"
    )
    with pytest.raises(DocumentError, match=r"long.yaml:4: user: scenario longer than the model's context"):
        _run(project, fake_tts, fake_backend())


def test_ctrl_c_mid_suite_then_resume(project, fake_tts, fake_backend):
    _scenario(project, "greet", extra="repeats: 3")

    class Interrupting(fake_backend):
        def start(self, plans, seeds, frames=None):
            if len(self.started) == 1:
                self.started.append(-1)
                raise KeyboardInterrupt
            return super().start(plans, seeds)

    with pytest.raises(KeyboardInterrupt):
        _run(project, fake_tts, Interrupting())
    out = project / "transcripts" / "greet"
    assert is_complete(out / "r0") and not (out / "r1").exists() and not (out / "r1.partial").exists()
    assert len((project / "transcripts" / "results.jsonl").read_text().splitlines()) == 1
    backend = fake_backend()
    _, outcome = _run(project, fake_tts, backend, resume=True)
    assert backend.started == [1, 1] and outcome.skipped == 1
    assert [r["run_id"] for r in outcome.rows] == ["r0", "r1", "r2"]
    assert len((project / "transcripts" / "results.jsonl").read_text().splitlines()) == 3
