"""Every report a user reads says when the model had random weights (its speech and metrics mean
nothing): the run page, the suite page, summary.md, JUnit, compare.html, results.jsonl and
metrics.json. A run of a model with real weights shows no such banner. Documents are parsed
(html.parser, markdown-it, ElementTree), not searched for substrings."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from markdown_it import MarkdownIt

from rolekit.evaluate.review import review_run
from rolekit.report.compare import compare, load_side
from rolekit.report.compare_html import render_compare_html
from rolekit.report.html import render_run_html, render_suite_html
from rolekit.report.junit import junit_xml
from rolekit.report.markdown import summary_markdown
from rolekit.report.results import RANDOM_MODEL_NOTE, append_result, read_results, run_result

LABEL = "tiny random-weight model: it produces noise, not speech"


class _ById(HTMLParser):
    """The text inside the element with id `target` (None when the page has no such element)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target, self.depth, self.text, self.classes = target, 0, None, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self.depth:
            self.depth += 1
        elif a.get("id") == self.target:
            self.depth, self.text, self.classes = 1, "", a.get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text += data


def banner(page: str) -> str | None:
    parser = _ById("random-model")
    parser.feed(page)
    if parser.text is not None:
        assert "banner" in parser.classes.split()
        return " ".join(parser.text.split())
    return None


def markdown_quotes(md: str) -> list[str]:
    """The text of every blockquote of a Markdown document."""
    tokens, quotes, depth = MarkdownIt("commonmark").parse(md), [], 0
    for t in tokens:
        if t.type == "blockquote_open":
            depth += 1
            quotes.append("")
        elif t.type == "blockquote_close":
            depth -= 1
        elif depth and t.type == "inline":
            quotes[-1] += "".join(c.content for c in t.children or [] if c.type == "text")
    return quotes


def _suite(root: Path, record, random: bool) -> Path:
    rec = copy.deepcopy(record)
    rec.meta.update(scenario="refund", run_id="r0", expect=[{"must_yield": {"within": 1.5}}])
    rec.meta["is_random_model"] = random
    rec.meta["model"] = {"model": "tiny-v2", "dtype": "fp32", "quant": "fp32", "compat": "kyutai"}
    rec.meta["model"]["random_weights"] = random
    if random:
        rec.meta["model"]["label"] = LABEL
    folder = rec.save(root / "refund" / "r0")
    review_run(folder)
    append_result(root / "results.jsonl", run_result(folder, base=root))
    return folder


def test_random_model_is_labelled_in_every_report(synth_record, tmp_path, capsys):
    random_run = _suite(tmp_path / "random", synth_record, random=True)
    real_run = _suite(tmp_path / "real", synth_record, random=False)
    want = f"Random weights: {RANDOM_MODEL_NOTE} ({LABEL})"

    # results.jsonl and metrics.json carry a field
    (random_row,) = read_results(tmp_path / "random" / "results.jsonl")
    (real_row,) = read_results(tmp_path / "real" / "results.jsonl")
    assert random_row["random_model"] is True and real_row["random_model"] is False
    assert random_row["model"]["label"] == LABEL
    assert json.loads((random_run / "metrics.json").read_text())["random_model"] is True
    assert json.loads((real_run / "metrics.json").read_text())["random_model"] is False

    # the run page and the suite page
    assert banner(render_run_html(random_run)) == want
    assert banner(render_run_html(real_run)) is None
    assert banner(render_suite_html(tmp_path / "random", [random_row])) == want
    assert banner(render_suite_html(tmp_path / "real", [real_row])) is None
    assert banner(render_suite_html(tmp_path / "mixed", [real_row, random_row])) == want

    # summary.md: a blockquote; JUnit: a property of the random run's testcase
    assert markdown_quotes(summary_markdown([random_row])) == [f"⚠️ {want}"]
    assert markdown_quotes(summary_markdown([real_row])) == []
    root = ET.fromstring(junit_xml([random_row, {**real_row, "run_id": "r1"}]))
    props = {c.get("name").split()[0]: [p.attrib for p in c.iter("property")] for c in root.iter("testcase")}
    assert props == {
        "r0": [{"name": "random_model", "value": want.removeprefix("Random weights: ")}],
        "r1": [],
    }

    # compare.html names the side(s) that ran random weights
    page = tmp_path / "compare.html"
    mixed = render_compare_html(page, compare(load_side(tmp_path / "real"), load_side(tmp_path / "random")))
    assert banner(mixed) == f"Random weights: side B: {RANDOM_MODEL_NOTE}"
    both = render_compare_html(page, compare(load_side(random_run), load_side(tmp_path / "random")))
    assert banner(both) == f"Random weights: side A and B: {RANDOM_MODEL_NOTE}"
    real = render_compare_html(page, compare(load_side(real_run), load_side(tmp_path / "real")))
    assert banner(real) is None

    # and `rolekit compare`'s terminal output ends with it
    from rolekit.cli.compare import print_comparison

    for a, b, want_line in (
        ("real", "random", [f"random weights: side B: {RANDOM_MODEL_NOTE}"]),
        ("real", "real", []),
    ):
        capsys.readouterr()
        print_comparison(compare(load_side(tmp_path / a), load_side(tmp_path / b)))
        assert [
            x for x in capsys.readouterr().out.splitlines() if x.startswith("random weights: ")
        ] == want_line


def test_a_run_folder_from_before_the_field_is_not_called_random(synth_record, tmp_path):
    folder = synth_record.save(tmp_path / "old" / "r0")  # meta.json without is_random_model
    review_run(folder)
    assert run_result(folder)["random_model"] is None
    assert banner(render_run_html(folder)) is None


PERSONA = """name: shop
voice: NATF2
prompt: You work for Northwind and your name is Maya.
"""
SCENARIO = """persona: shop
lead_in: 0.5
tail: 0.5
seed: 3
user:
  - say: "Hello."
"""


def _rolekit_test(tmp_path: Path, monkeypatch, capsys, real_weights: bool) -> tuple[Path, str]:
    """`rolekit test --model tiny` in a fresh project; `real_weights`: the tiny bundle as if its
    weights were real (`is_random` False), what a user's own checkpoint loads as."""
    import pytest

    from rolekit import models
    from rolekit.cli.app import main

    project = tmp_path / "project"
    (project / "personas").mkdir(parents=True)
    (project / "scenarios").mkdir()
    (project / "personas" / "shop.yaml").write_text(PERSONA)
    (project / "scenarios" / "hello.yaml").write_text(SCENARIO)
    monkeypatch.chdir(project)
    if real_weights:
        load = models.load

        def real(*args, **kwargs):
            bundle = load(*args, **kwargs)
            bundle.is_random = False
            return bundle

        monkeypatch.setattr(models, "load", real)
    out = project / "transcripts"
    with pytest.raises(SystemExit) as ex:
        main(
            [
                "test",
                "--model",
                "tiny",
                "--no-transcribe",
                "--out",
                str(out),
                "--junit",
                str(out / "junit.xml"),
            ]
        )
    assert ex.value.code == 0
    return out, capsys.readouterr().out


def _terminal_note(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.startswith("random weights: ")]
    assert len(lines) <= 1
    return lines[0].removeprefix("random weights: ") if lines else None


def test_rolekit_test_on_the_tiny_model_says_random_everywhere(tmp_path, monkeypatch, capsys):
    out, terminal = _rolekit_test(tmp_path, monkeypatch, capsys, real_weights=False)
    (row,) = read_results(out / "results.jsonl")
    assert row["random_model"] is True and row["model"]["random_weights"] is True
    note = f"{RANDOM_MODEL_NOTE} ({row['model']['label']})"
    assert "noise" in row["model"]["label"]
    assert banner((out / "report.html").read_text()) == f"Random weights: {note}"
    assert banner((out / "hello" / "r0" / "report.html").read_text()) == f"Random weights: {note}"
    assert markdown_quotes((out / "summary.md").read_text()) == [f"⚠️ Random weights: {note}"]
    (prop,) = ET.parse(out / "junit.xml").getroot().iter("property")
    assert prop.attrib == {"name": "random_model", "value": note}
    assert _terminal_note(terminal) == note


def test_rolekit_test_on_real_weights_shows_no_random_label(tmp_path, monkeypatch, capsys):
    out, terminal = _rolekit_test(tmp_path, monkeypatch, capsys, real_weights=True)
    (row,) = read_results(out / "results.jsonl")
    assert row["random_model"] is False and row["model"]["random_weights"] is False
    assert "label" not in row["model"]
    assert banner((out / "report.html").read_text()) is None
    assert banner((out / "hello" / "r0" / "report.html").read_text()) is None
    assert markdown_quotes((out / "summary.md").read_text()) == []
    assert list(ET.parse(out / "junit.xml").getroot().iter("property")) == []
    assert _terminal_note(terminal) is None
    assert json.loads((out / "hello" / "r0" / "metrics.json").read_text())["random_model"] is False
