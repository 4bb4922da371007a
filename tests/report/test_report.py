"""results.jsonl, JUnit XML, Markdown, and the HTML reports rendered in headless Chromium."""

from __future__ import annotations

import base64
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

from .chromium import Browser

EXPECT = [
    {"agent_says": {"any_of": ["refund"]}},
    {"max_response_latency": 0.4},
    {"must_yield": {"within": 1.5}},
]


@pytest.fixture
def suite(synth_record, synth, tmp_path):
    """A suite folder: one failing run with a transcript, one passing run, one crashed run."""
    root = tmp_path / "suite"
    synth_record.meta.update(
        expect=EXPECT, scenario="refund", wall_s=3.5, matrix={"company": "Contoso"}, tags=["smoke"]
    )
    synth_record.text_pieces[60:63] = [" caf", "<0xC3>", "<0xA9>"]  # byte-fallback pieces of "café"
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
                    [
                        Word(" Sure,", 3.6, 3.9, 0.9),
                        Word(" a", 3.9, 4.0, 0.8),
                        Word(" <refund>", 4.0, 4.5, 0.2),  # low confidence
                        Word(" &", 4.5, 4.7, 0.9),
                        Word(" more.", 4.7, 5.4, 0.95),
                    ],
                ),
            ],
        ),
    )
    review_run(r1)
    synth_record.meta.update(
        run_id="r0002", expect=[{"must_yield": {"within": 1.5}}], matrix={"company": "Fabrikam"}
    )
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


def test_run_report_in_chromium(suite, tmp_path):
    folder = suite / "refund" / "r0001"
    page = write_run_report(folder)
    text = page.read_text()
    assert 'src="data:audio/wav;base64,' in text  # self-contained
    assert "&lt;refund&gt;" in text and "<refund>" not in text  # escaped
    assert "<0x" not in text and "café" in text  # the inner monologue is decoded
    with Browser(1200, 900) as b:
        b.open(page)
        render = b.wait("document.body.dataset.render && JSON.parse(document.body.dataset.render)")
        # 4 scripted events + 3 user + 3 agent speech + 1 user word + 5 agent words + monologue words
        mono = b.js("document.querySelectorAll('svg.timeline g.mono-word').length")
        assert mono == 8 and render == {
            "timelines": 1,
            "shapes": 16 + mono,
            "players": 1,
            "errors": [],
            "overflow": False,
        }
        assert b.js("document.querySelectorAll('table.assertions tr.fail').length") == 1
        # low-confidence words are marked in the dialogue and on the timeline
        assert b.js(
            "[...document.querySelectorAll('.dialogue .w.lowconf')].map(e => e.textContent + ' ' + e.title)"
        ) == ["<refund> confidence 0.20"]
        assert b.js("document.querySelectorAll('svg.timeline g.word.lowconf').length") == 1
        assert b.js(
            "[...document.querySelectorAll('svg.timeline g.mono-word title')].some(t => t.textContent.endsWith('café'))"
        )
        # metric definitions with units; the metrics the checks use come first, highlighted
        checked = b.js(
            "[...document.querySelectorAll('table.metrics tr.checked')].map(r => r.dataset.metric)"
        )
        assert set(checked) == {
            "response_latency_mean",
            "response_latency_p90",
            "response_latency_max",
            "yield_rate",
            "time_to_yield_max",
            "agent_low_confidence_share",
        }
        assert b.js("document.querySelector('table.metrics tr:nth-child(2)').classList.contains('checked')")
        assert b.js("document.querySelector('tr[data-metric=dead_air_ratio] td.def').textContent").startswith(
            "dead air / span from first to last speech"
        )
        # solo / mute per channel
        mixer = "document.querySelector('.mixer').dataset"
        assert b.js(f"{mixer}.gains") == "1,0,0,1"
        b.js("document.querySelector('.mixer [data-channel=agent][data-action=solo]').click()")
        assert b.js(f"[{mixer}.user, {mixer}.agent, {mixer}.gains]") == ["off", "on", "0,0,1,1"]
        b.js("document.querySelector('.mixer [data-channel=user][data-action=solo]').click()")
        assert b.js(f"[{mixer}.user, {mixer}.agent, {mixer}.gains]") == ["on", "off", "1,1,0,0"]
        b.js("document.querySelector('.mixer [data-channel=user][data-action=solo]').click()")
        b.js("document.querySelector('.mixer [data-channel=user][data-action=mute]').click()")
        assert b.js(f"[{mixer}.user, {mixer}.agent, {mixer}.gains]") == ["off", "on", "0,0,1,1"]
        assert (
            b.js(
                "document.querySelector('.mixer [data-channel=user][data-action=mute]').getAttribute('aria-pressed')"
            )
            == "true"
        )
        assert b.errors == []
    # the switches route the real samples (a normal browser: no file-access flag): at 1.5 s only the
    # user speaks (left), at 4.5 s only the agent (right); a soloed channel plays in both ears
    level = """(async t => { const g = document.querySelector('.mixer').rolekitGraph;
      if (!g.an) { const sp = g.ctx.createChannelSplitter(2); g.out.connect(sp);
        g.an = [0, 1].map(i => { const an = g.ctx.createAnalyser(); sp.connect(an, i); return an; }); }
      const a = document.querySelector('audio'); a.currentTime = t; await a.play(); await g.ctx.resume();
      await new Promise(r => setTimeout(r, 400));
      const out = g.an.map(an => { const b = new Float32Array(an.fftSize); an.getFloatTimeDomainData(b);
        return Math.max(...b.map(Math.abs)) > 0.05; }); a.pause(); return out; })"""
    click = "document.querySelector('.mixer [data-channel=%s][data-action=%s]').click()"
    with Browser(1200, 900, file_access=False) as b:
        b.open(page)
        b.js(click % ("user", "mute"))
        b.js(click % ("user", "mute"))  # both on again: the stereo recording
        assert b.js(f"({level})(1.5)") == [True, False] and b.js(f"({level})(4.5)") == [False, True]
        b.js(click % ("agent", "solo"))
        assert b.js(f"({level})(1.5)") == [False, False] and b.js(f"({level})(4.5)") == [True, True]
        b.js(click % ("user", "solo"))
        assert b.js(f"({level})(1.5)") == [True, True] and b.js(f"({level})(4.5)") == [False, False]
        assert b.errors == []
    # a linked recording on a file:// page would read as silence: the switches are off and say why
    linked = write_run_report(folder, embed_audio=False)
    with Browser(1200, 900, file_access=False) as b:
        b.open(linked)
        assert b.js("[...document.querySelectorAll('.mixer button')].every(x => x.disabled)")
        assert b.js("!document.querySelector('.mixnote').hidden") and b.errors == []
    write_run_report(folder)
    # below 1000 px: nothing wider than the window, the timeline scrolls and its lane labels stay in view
    with Browser(900, 1200) as b:
        b.open(page)
        render = b.wait("document.body.dataset.render && JSON.parse(document.body.dataset.render)")
        assert render["overflow"] is False and render["errors"] == []
        assert b.js("(w => w.scrollWidth > w.clientWidth)(document.querySelector('.tlwrap'))")
        b.js("document.querySelector('.tlwrap').scrollLeft = 400")
        left = b.js("document.querySelector('.lane-agent_text').getBoundingClientRect().left")
        wrap = b.js("document.querySelector('.tlwrap').getBoundingClientRect().left")
        assert (
            abs(left - wrap) <= 2
            and b.js("document.querySelector('.lane-agent_text').textContent") == "agent words"
        )
        shot = b.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        png = base64.b64decode(shot)
        (tmp_path / "run-900.png").write_bytes(png)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (900, 1200)
        assert len(png) > 30_000  # a drawn page, not a blank one
        assert b.errors == []


def test_suite_report_grid_in_chromium(suite):
    page = write_suite_report(suite)
    assert (suite / "refund" / "r0002" / "report.html").is_file()  # the grid's chips open these
    with Browser(1200, 900) as b:
        b.open(page)
        render = b.wait("document.body.dataset.render && JSON.parse(document.body.dataset.render)")
        assert render == {"timelines": 0, "shapes": 0, "players": 0, "errors": [], "overflow": False}
        cols = b.js("[...document.querySelectorAll('#grid th.col')].map(t => t.textContent)")
        assert cols == ["refund-desk · company=Contoso", "refund-desk · company=Fabrikam", "?"]
        rows = b.js("[...document.querySelectorAll('#grid tr.srow')].map(r => r.dataset.scenario)")
        assert rows == ["refund", "greeting"]
        chips = b.js(
            "[...document.querySelectorAll('#grid .chip')].map(c => [c.textContent, c.dataset.status, c.getAttribute('href')])"
        )
        assert chips == [
            ["r0001", "fail", "refund/r0001/report.html"],
            ["r0002", "pass", "refund/r0002/report.html"],
            ["r0001", "error", None],
        ]
        assert "latency 0.17 s" in b.js("document.querySelector('#grid td.cell').textContent")
        assert b.js("document.querySelector('#grid tr.srow .tag').textContent") == "smoke"
        # filters: status, text, column
        b.js(
            "(s => { s.value = 'fail'; s.dispatchEvent(new Event('change')); })(document.getElementById('f-status'))"
        )
        assert b.js("document.body.dataset.visibleRows") == "1"
        assert b.js("document.querySelector('#grid a.chip[data-status=pass]').classList.contains('hidden')")
        b.js(
            "(s => { s.value = ''; s.dispatchEvent(new Event('change')); })(document.getElementById('f-status'))"
        )
        b.js(
            "(s => { s.value = 'greet'; s.dispatchEvent(new Event('input')); })(document.getElementById('f-text'))"
        )
        assert b.js("document.body.dataset.visibleRows") == "1"
        b.js(
            "(s => { s.value = ''; s.dispatchEvent(new Event('input')); })(document.getElementById('f-text'))"
        )
        b.js(
            "(s => { s.value = '1'; s.dispatchEvent(new Event('change')); })(document.getElementById('f-col'))"
        )
        assert (
            b.js(
                "[...document.querySelectorAll('#grid th.col')].filter(t => !t.classList.contains('hidden')).length"
            )
            == 1
        )
        assert b.js("document.body.dataset.visibleRows") == "1"
        # a chip opens its run's report below the grid
        b.js("document.querySelector('#grid a.chip').click()")
        b.wait("!document.getElementById('detail').classList.contains('hidden')")
        b.wait(
            "(() => { try { const d = document.getElementById('detail').contentDocument;"
            " return d && d.body && d.body.dataset.render; } catch (e) { return false; } })()"
        )
        frames = b.call("Page.getFrameTree", session=True)["frameTree"]["childFrames"]
        assert frames[0]["frame"]["url"].endswith("refund/r0001/report.html")
        assert b.errors == []
    with Browser(900, 1200) as b:  # below 1000 px the grid scrolls inside its box, the page does not
        b.open(page)
        render = b.wait("document.body.dataset.render && JSON.parse(document.body.dataset.render)")
        assert render["overflow"] is False and render["errors"] == [] and b.errors == []


def test_compare_page_in_chromium(suite, tmp_path):
    from rolekit.report.compare import compare, load_side
    from rolekit.report.compare_html import write_compare_html

    other = tmp_path / "other"
    shutil.copytree(suite, other)
    (other / "refund" / "r0001" / "assertions.json").write_text(
        (suite / "refund" / "r0001" / "assertions.json").read_text().replace('"fail"', '"pass"')
    )
    rows = read_results(other / "results.jsonl")
    rows[0]["status"] = "pass"
    (other / "results.jsonl").unlink()
    for r in rows:
        append_result(other / "results.jsonl", r)
    page = write_compare_html(tmp_path / "cmp" / "compare.html", compare(load_side(suite), load_side(other)))
    with Browser(900, 1200) as b:
        b.open(page)
        render = b.wait("document.body.dataset.render && JSON.parse(document.body.dataset.render)")
        assert render["errors"] == [] and render["overflow"] is False and render["players"] == 4
        assert b.js("document.querySelectorAll('table.flips tr.better').length") == 1
        assert b.js("document.querySelectorAll('section.pair').length") == 3
        assert b.js(
            "[...document.querySelectorAll('table.scenarios td.better')].map(t => t.textContent)"
        ) == ["2/2"]
        assert b.errors == []


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "rolekit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_cli_report_run_suite_and_bad_path(suite, tmp_path):
    run = suite / "refund" / "r0002"
    (run / "metrics.json").unlink()
    out = _cli("report", run, "--link-audio")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"PASS  {run}  (1 pass, 0 fail, 0 error)")
    assert (run / "metrics.json").is_file() and 'src="conversation.wav"' in (run / "report.html").read_text()
    out = _cli("report", ".", cwd=suite)  # piped: Markdown source; `.` is named after the folder
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# rolekit suite: suite\n") and "**1/3 passed**" in out.stdout
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


def test_report_renders_markdown_on_a_terminal(monkeypatch, capsys):
    import io

    from rolekit.cli.review import _print_markdown

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    _print_markdown("# nightly\n\n**1/3 passed** · 1 failed\n\n| a | b |\n|---|---|\n| x | y |\n")
    shown = tty.getvalue()
    assert "nightly" in shown and "1/3 passed" in shown and "**" not in shown and "|---|" not in shown
