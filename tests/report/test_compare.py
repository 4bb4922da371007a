"""rolekit test --baseline, suite history, rolekit compare (a fake engine whose reply speed we set)."""

from __future__ import annotations

import soundfile as sf
from typer.testing import CliRunner

from rolekit.cli.app import app
from rolekit.report.compare import compare, load_side

SCENARIO = """name: greet
persona: shop
lead_in: 0.5
tail: 2.5
matrix: {company: [Contoso, Fabrikam]}
repeats: 2
user:
  - say: "hello there"
  - after: agent_done
    silence: 0.4
    say: "thanks"
expect:
  - agent_says: {contains: w10, source: monologue}
  - max_response_latency: 0.3
baseline:
  metrics:
    response_latency_mean: {max_increase: 0.1}
"""


def _test(monkeypatch, fake_backend, reply_after, *args):
    monkeypatch.setattr(
        "rolekit.suite.backend.MlxBackend", lambda spec, *args: fake_backend(reply_after=reply_after)
    )
    return CliRunner().invoke(app, ["test", "--no-transcribe", "--out", "out", *args])


def test_history_baseline_and_compare(project, fake_backend, monkeypatch):
    (project / "scenarios" / "greet.yaml").write_text(SCENARIO)
    fast = _test(monkeypatch, fake_backend, 3)
    assert fast.exit_code == 0, fast.output
    (snap1,) = sorted((project / "out" / "history").iterdir())
    results1 = (snap1 / "results.jsonl").read_text()
    wav1 = sf.read(snap1 / "greet" / "company-Contoso-r0" / "conversation.wav")[0]
    assert len(results1.splitlines()) == 4 and "history:" in fast.output
    # same speed against the last snapshot: no regression
    same = _test(monkeypatch, fake_backend, 3, "--baseline", "last")
    assert same.exit_code == 0 and "no regressions against the baseline" in same.output, same.output
    # slower replies: the latency check flips and the cell mean moves past max_increase
    slow = _test(monkeypatch, fake_backend, 9, "--baseline", str(snap1))
    assert slow.exit_code == 1, slow.output
    lines = [x for x in slow.output.splitlines() if x.strip().startswith("REGRESSION")]
    assert len(lines) == 4, slow.output  # 2 cells x (pass rate, response_latency_mean)
    assert any("greet/company-Contoso: pass rate 1 -> 0" in x for x in lines)
    assert any("response_latency_mean" in x and "max_increase 0.1" in x for x in lines)
    assert (project / "out" / "compare.html").is_file()
    # history is never overwritten: the first snapshot still holds its results and its audio
    snaps = sorted((project / "out" / "history").iterdir())
    assert len(snaps) == 3 and snaps[0] == snap1
    assert (snap1 / "results.jsonl").read_text() == results1
    assert (sf.read(snap1 / "greet" / "company-Contoso-r0" / "conversation.wav")[0] == wav1).all()
    # compare the two snapshots
    c = compare(load_side(snap1), load_side(snaps[2]))
    assert len(c.pairs) == 4 and len(c.cells) == 2 and not c.only_a and not c.only_b
    cell = c.cells[0]
    assert cell.key == "greet/company-Contoso" and cell.passed == (2, 0) and cell.runs == (2, 2)
    assert cell.label == "shop · company=Contoso"
    assert cell.delta("response_latency_mean") > 0.1 and cell.worse("response_latency_mean") is True
    (flip,) = c.pairs[0].flips
    assert (flip.label, flip.before, flip.after) == ("max_response_latency max=0.3", "pass", "fail")
    assert c.pairs[0].text_source == "text stream" and c.pairs[0].lines_a
    out = CliRunner().invoke(app, ["compare", str(snap1), str(snaps[2]), "--html", "cmp/compare.html"])
    assert out.exit_code == 0, out.output
    assert "greet/company-Contoso" in out.output and "pass -> fail" in out.output
    assert "4 runs paired, 4 with checks that changed" in out.output
    assert "A -> B per scenario" in out.output and "listen: A " in out.output
    # the suite report of OUT ignores the history snapshots' run folders
    snap_page = snap1 / "greet" / "company-Contoso-r0" / "report.html"
    before = (snap_page.stat().st_ino, snap_page.stat().st_mtime_ns)
    rep = CliRunner().invoke(app, ["report", "out"])
    assert rep.exit_code == 0, rep.output
    assert (snap_page.stat().st_ino, snap_page.stat().st_mtime_ns) == before
    page = (project / "cmp" / "compare.html").read_text()
    assert 'src="../out/history/' in page and page.count("<audio") == 8
    # two single run folders pair with each other
    one = CliRunner().invoke(
        app,
        [
            "compare",
            str(snap1 / "greet" / "company-Contoso-r0"),
            str(snaps[2] / "greet" / "company-Fabrikam-r1"),
        ],
    )
    assert one.exit_code == 0 and "1 runs paired" in one.output, one.output


def test_bad_compare_and_baseline_inputs(project, fake_backend, monkeypatch):
    (project / "scenarios" / "greet.yaml").write_text(SCENARIO)
    out = CliRunner().invoke(app, ["compare", "nope", "."])
    assert out.exit_code == 2 and "nope: no such folder" in out.output
    out = _test(monkeypatch, fake_backend, 3, "--baseline", "last")
    assert out.exit_code == 2 and "no history snapshot" in out.output
    assert not (project / "out" / "results.jsonl").exists()  # nothing ran
    (project / "scenarios" / "greet.yaml").write_text(
        SCENARIO.replace("response_latency_mean", "latency_typo")
    )
    out = _test(monkeypatch, fake_backend, 3)
    assert (
        out.exit_code == 2
        and "unknown metric 'latency_typo'" in out.output
        and "greet.yaml:17: baseline.metrics.latency_typo" in out.output
    )


def test_run_titles_its_summary_rolekit_run(project, fake_backend, monkeypatch):
    (project / "scenarios" / "greet.yaml").write_text(SCENARIO)
    monkeypatch.setattr("rolekit.suite.backend.MlxBackend", lambda spec, *args: fake_backend(reply_after=3))
    out = CliRunner().invoke(
        app, ["run", "scenarios/greet.yaml", "--no-transcribe", "--out", "out", "-n", "1"]
    )
    assert out.exit_code == 0, out.output
    assert "rolekit run" in out.output and "rolekit test" not in out.output
