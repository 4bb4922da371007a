"""`expect: - python: file.py:function`: what the function sees, verdicts, and failures that never crash."""

from __future__ import annotations

import os
import sys

import pytest

from rolekit.errors import DocumentError
from rolekit.evaluate.review import review_run
from rolekit.scenario.schema import load_scenario
from rolekit.transcribe.transcript import Segment, Transcript, Word, write_transcript

CHECKS = """
import sys

def sees_everything(run):
    agent = run.words["agent"]
    assert run.transcribed and run.text["agent"] == "Sure, refund."
    assert agent[1] == {"word": "refund.", "start": 4.0, "end": 4.5, "probability": 0.3}
    assert run.metrics["yield_rate"] == 1.0 and run.details["thresholds"]["low_confidence"] == 0.5
    assert [e["kind"] for e in run.events] == ["say", "interrupt", "pause", "say"]
    assert run.meta["scenario"] == "synthetic" and run.monologue[0] == {"time": 3.6, "word": "Sure"}
    assert run.duration == 14.0 and run.folder.name == "run"
    run.metrics.clear()  # a check cannot change what the next check sees
    return True

def said_refund(run):
    sure = [w for w in run.words["agent"] if w["probability"] >= 0.5]
    return "refund" in " ".join(w["word"] for w in sure), f"confident words: {sure}"

def as_dict(run):
    return {"passed": run.metrics["talk_ratio"] > 0.5, "message": f"talk ratio {run.metrics['talk_ratio']}"}

def boom(run):
    return run.words["nobody"]

def exits(run):
    sys.exit(3)

def maybe(run):
    return "yes"

def hangs(run):
    import time
    time.sleep(5)
    return True
"""


@pytest.fixture
def run_folder(synth_record, tmp_path):
    (tmp_path / "scen" / "checks").mkdir(parents=True)
    (tmp_path / "scen" / "checks" / "mine.py").write_text(CHECKS)
    synth_record.meta["scenario_file"] = str(tmp_path / "scen" / "s.yaml")
    folder = synth_record.save(tmp_path / "run")
    write_transcript(
        folder,
        Transcript(
            "t",
            [
                Segment(
                    "agent",
                    3.6,
                    4.5,
                    "Sure, refund.",
                    [Word(" Sure,", 3.6, 3.9, 0.9), Word(" refund.", 4.0, 4.5, 0.3)],
                )
            ],
        ),
    )
    return folder


def test_custom_checks_verdicts_and_exceptions_become_failures(run_folder):
    expect = [
        {"python": "checks/mine.py:sees_everything"},
        {"python": "checks/mine.py:said_refund"},
        {"python": "checks/mine.py:as_dict"},
        {"python": "checks/mine.py:boom"},
        {"python": "checks/mine.py:exits"},
        {"python": "checks/mine.py:maybe"},
        {"python": "checks/mine.py:missing"},
        {"python": "checks/gone.py:f"},
        {"python": "rolekit_check_helper:ok"},
        {"python": "checks/mine.py:sees_everything", "description": "again, unchanged"},
    ]
    rev = review_run(run_folder, expect=expect)
    status = [r.status for r in rev.results]
    assert status == ["pass", "fail", "pass", "fail", "fail", "fail", "fail", "fail", "pass", "pass"], [
        r.message for r in rev.results
    ]
    msgs = [r.message for r in rev.results]
    assert msgs[0] == "checks/mine.py:sees_everything passed"
    assert msgs[1].startswith("confident words: [{'word': 'Sure,'")
    assert msgs[2] == "talk ratio 0.554"
    assert msgs[3] == "checks/mine.py:boom raised KeyError: 'nobody' at mine.py:23"
    assert msgs[4] == "checks/mine.py:exits raised SystemExit: 3 at mine.py:26"
    assert msgs[5].startswith("checks/mine.py:maybe returned 'yes': return a bool")
    assert "has no function 'missing'" in msgs[6] and "no such check file" in msgs[7]
    assert rev.results[0].kind == "python" and rev.results[0].label == "python checks/mine.py:sees_everything"


def test_a_check_that_hangs_fails_and_the_suite_goes_on(run_folder, monkeypatch):
    import time

    monkeypatch.setattr("rolekit.evaluate.custom.CHECK_TIMEOUT_S", 0.3)
    t0 = time.monotonic()
    rev = review_run(
        run_folder, expect=[{"python": "checks/mine.py:hangs"}, {"python": "checks/mine.py:as_dict"}]
    )
    assert time.monotonic() - t0 < 4
    assert [r.status for r in rev.results] == ["fail", "pass"]
    assert rev.results[0].message == "checks/mine.py:hangs did not finish within 0.3 s"


@pytest.fixture(autouse=True)
def helper_module(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "rolekit_check_helper.py").write_text(
        "def ok(run):\n    return True, 'from a module'\n"
    )
    sys.path.insert(0, str(tmp_path / "mods"))
    yield
    sys.path.remove(str(tmp_path / "mods"))
    sys.modules.pop("rolekit_check_helper", None)


SCENARIO = "persona: shop\nuser:\n  - say: hi\nexpect:\n  - max_response_latency: 1.0\n  - python: {}\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("../outside/out.py:f", "outside the scenario's folder"),
        ("/etc/passwd.py:f", "outside the scenario's folder"),
        ("checks/none.py:f", "no such check file"),
        ("link/out.py:f", "outside the scenario's folder"),
        ("checks/c.py:1bad", "write `path/to/file.py:function`"),
        ("not a target", "write `path/to/file.py:function`"),
    ],
)
def test_check_paths_stay_inside_the_scenario_folder(tmp_path, target, message):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "out.py").write_text("def f(run):\n    return True\n")
    (tmp_path / "scen" / "checks").mkdir(parents=True)
    (tmp_path / "scen" / "checks" / "c.py").write_text("def f(run):\n    return True\n")
    os.symlink(tmp_path / "outside", tmp_path / "scen" / "link")
    path = tmp_path / "scen" / "s.yaml"
    path.write_text(SCENARIO.format(target))
    with pytest.raises(DocumentError) as err:
        load_scenario(path)
    (problem,) = err.value.problems
    assert message in problem.message and problem.line == 6, problem
    path.write_text(SCENARIO.format("checks/c.py:f"))
    assert load_scenario(path).scenario.expect[1].python == "checks/c.py:f"
