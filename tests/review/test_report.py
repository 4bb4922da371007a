"""results.jsonl, JUnit XML, Markdown, and the HTML reports rendered in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from rolekit.evaluate.review import review_run
from rolekit.report.html import write_run_report, write_suite_report
from rolekit.report.junit import junit_xml, write_junit
from rolekit.report.markdown import summary_markdown
from rolekit.report.results import append_result, error_result, read_results, run_result
from rolekit.transcribe.transcript import Segment, Transcript, Word, write_transcript

EXPECT = [
    {"agent_says": {"any_of": ["refund"]}},
    {"max_response_latency": 0.4},
    {"must_yield": {"within": 1.5}},
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    raise AssertionError("headless Chromium is needed for the report tests (apt-get install chromium)")


def _dom(page) -> str:
    out = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _render_summary(dom: str) -> dict:
    m = re.search(r'data-render="([^"]*)"', dom)
    assert m, "the report's load script did not run"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture
def suite(synth_record, synth, tmp_path):
    """A suite folder: one failing run with a transcript, one passing run, one crashed run."""
    root = tmp_path / "suite"
    synth_record.meta.update(expect=EXPECT, scenario="refund", wall_s=3.5)
    r1 = synth_record.save(root / "refund" / "r0001")
    write_transcript(
        r1,
        Transcript(
            "tiny.en",
            [
                Segment("user", 1.0, 3.0, "Hi, I'd like a refund.", [Word(" Hi,", 1.0, 1.3)]),
                Segment(
                    "agent",
                    3.6,
                    5.4,
                    "Sure, a <refund> & more.",
                    [Word(" Sure,", 3.6, 3.9), Word(" refund", 4.0, 4.5)],
                ),
            ],
        ),
    )
    review_run(r1)
    synth_record.meta.update(run_id="r0002", expect=[{"must_yield": {"within": 1.5}}])
    r2 = synth_record.save(root / "refund" / "r0002")
    review_run(r2)
    for folder in (r1, r2):
        append_result(root / "results.jsonl", run_result(folder, base=root))
    append_result(root / "results.jsonl", error_result("greeting", "r0001", "persona 'nope' not found"))
    return root


def test_results_jsonl_lines(suite):
    rows = read_results(suite / "results.jsonl")
    assert [(r["scenario"], r["run_id"], r["status"]) for r in rows] == [
        ("refund", "r0001", "fail"),
        ("refund", "r0002", "pass"),
        ("greeting", "r0001", "error"),
    ]
    r1 = rows[0]
    assert r1["assertions"] == {"pass": 2, "fail": 1, "error": 0} and r1["run_dir"] == "refund/r0001"
    assert r1["failures"] == [
        "max_response_latency max=0.4: response latency 0.50 s at turn 0 > 0.40 s (2 slow)"
    ]
    assert (
        r1["thresholds_version"] == "2"
        and r1["metrics"]["yield_rate"] == 1.0
        and r1["vars"] == {"company": "Contoso"}
    )
    # a resumed suite appends a newer line for the same run; a crash can leave a torn last line
    append_result(suite / "results.jsonl", dict(rows[2], status="pass", error=None))
    with open(suite / "results.jsonl", "a") as f:
        f.write('{"run_id": "r9", "scen')
    rows = read_results(suite / "results.jsonl")
    assert len(rows) == 3 and rows[-1]["run_id"] == "r0001" and rows[-1]["status"] == "pass"


def test_junit_xml_is_valid_and_carries_messages(suite, tmp_path):
    rows = read_results(suite / "results.jsonl")
    root = ET.fromstring(junit_xml(rows, "nightly").split("\n", 1)[1])
    assert root.tag == "testsuites" and root.get("name") == "nightly"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert suites["refund"].get("tests") == "2" and float(suites["refund"].get("time")) == 7.0  # wall time
    cases = suites["refund"].findall("testcase")
    assert [c.get("name") for c in cases] == ["r0001 company=Contoso", "r0002 company=Contoso"]
    fail = cases[0].find("failure")
    assert fail is not None and "response latency 0.50 s at turn 0 > 0.40 s" in fail.get("message")
    assert cases[1].find("failure") is None and cases[1].find("error") is None
    err = suites["greeting"].find("testcase/error")
    assert err.get("message") == "persona 'nope' not found"
    path = write_junit(tmp_path / "out" / "junit.xml", rows)
    assert ET.parse(path).getroot().get("tests") == "3"


def test_markdown_summary(suite):
    md = summary_markdown(read_results(suite / "results.jsonl"), "nightly")
    # pause floor 1: the agent's voice fills 1.2 s of the pause though Whisper heard no words in it
    assert md.startswith("# nightly\n\n**1/3 passed** · 1 failed · 1 errors")
    assert "| refund | r0001 | ❌ fail | 2/3 | 0.17 s | 1.00 | 1.00 | 0.55 |" in md
    assert "  - run error: persona 'nope' not found" in md


def test_run_report_renders_in_chromium(suite, tmp_path):
    folder = suite / "refund" / "r0001"
    page = write_run_report(folder)
    text = page.read_text()
    assert 'src="data:audio/wav;base64,' in text  # self-contained
    assert "Sure, a &lt;refund&gt; &amp; more." in text and "<refund>" not in text  # escaped
    dom = _dom(page)
    # 4 scripted events + 3 user + 3 agent speech segments + 2 Whisper segments, all laid out
    assert _render_summary(dom) == {"timelines": 1, "shapes": 12, "players": 1}
    assert len(re.findall(r'<tr class="(pass|fail|error)">', dom)) == 3
    assert '<tr class="fail"><td class="status">fail</td><td>max_response_latency max=0.4</td>' in dom
    assert dom.count('class="playhead"') == 1 and "agent:</b> Sure, a &lt;refund&gt; &amp; more." in dom
    shot = tmp_path / "run.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1200, 900)
    assert len(png) > 30_000  # a drawn page, not a blank one (a blank page is ~5 KB)


def test_suite_report_renders_in_chromium(suite):
    for name in ("r0001", "r0002"):
        write_run_report(suite / "refund" / name, embed_audio=False)
    page = write_suite_report(suite)
    text = page.read_text()
    assert 'src="refund/r0001/conversation.wav"' in text and 'href="refund/r0002/report.html"' in text
    dom = _dom(page)
    assert _render_summary(dom) == {"timelines": 2, "shapes": 12 + 10, "players": 2}
    assert '<tr class="error"><td>greeting</td><td>r0001</td>' in dom and "persona 'nope' not found" in dom


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "rolekit", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_report_run_suite_and_bad_path(suite, tmp_path):
    run = suite / "refund" / "r0002"
    (run / "metrics.json").unlink()
    out = _cli("report", run, "--link-audio")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"PASS  {run}  (1 pass, 0 fail, 0 error)")
    assert (run / "metrics.json").is_file() and 'src="conversation.wav"' in (run / "report.html").read_text()
    out = _cli("report", suite)
    assert out.returncode == 0, out.stderr
    assert "**1/3 passed**" in out.stdout
    assert ET.parse(suite / "junit.xml").getroot().get("failures") == "1"
    assert (suite / "summary.md").is_file() and (suite / "report.html").is_file()
    # a folder of run folders without results.jsonl is evaluated run by run
    (suite / "results.jsonl").unlink()
    out = _cli("report", suite / "refund")
    assert out.returncode == 0 and "**1/2 passed**" in out.stdout, out.stderr
    out = _cli("report", tmp_path / "nothing-here")
    assert out.returncode == 2 and "no such folder" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "empty").mkdir()
    out = _cli("report", tmp_path / "empty")
    assert out.returncode == 2 and "neither a run folder nor a suite folder" in out.stderr
    out = _cli("transcribe", tmp_path / "empty")
    assert out.returncode == 2 and "not a complete run folder" in out.stderr and "Traceback" not in out.stderr
