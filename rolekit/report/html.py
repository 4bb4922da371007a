"""Self-contained HTML reports: one per run (`report.html` in the run folder, the WAV embedded as
base64 up to EMBED_LIMIT bytes) and one per suite (`report.html` in the suite folder: a grid of
scenarios by matrix cell whose chips open each run's report below the grid). No external assets,
no network.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from rolekit.atomic import write_text
from rolekit.evaluate.assertions import load_assertions
from rolekit.evaluate.metric_docs import METRICS, checked_metrics
from rolekit.evaluate.metrics import load_metrics
from rolekit.evaluate.thresholds import LOW_CONFIDENCE
from rolekit.record import CONVERSATION_WAV, EVENTS_JSON, META_JSON, MONOLOGUE_JSON, monologue_words
from rolekit.report.grid import run_folder, suite_grid
from rolekit.report.results import random_label, read_results, run_result
from rolekit.report.timeline import lane_labels, svg_height, timeline_svg
from rolekit.transcribe.transcript import clock, load_transcript

REPORT_HTML = "report.html"
EMBED_LIMIT = 24 * 1024 * 1024  # larger recordings are referenced, not embedded


def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def run_page(folder: Path) -> dict[str, Any]:
    """Everything the run section of a report shows, read from an evaluated run folder."""
    folder = Path(folder)
    meta = _json(folder / META_JSON, {})
    events = _json(folder / EVENTS_JSON, [])
    metrics = load_metrics(folder) or {"summary": {}, "segments": {}, "turns": [], "interruptions": []}
    assertions = load_assertions(folder) or {"results": [], "counts": {"pass": 0, "fail": 0, "error": 0}}
    transcript = load_transcript(folder)
    summary = metrics.get("summary", {})
    duration = float(summary.get("duration_s") or 0.0)
    if not duration:
        ends = [float(e.get("end") or e.get("start") or 0) for e in events] + [
            s[1] for segs in metrics.get("segments", {}).values() for s in segs
        ]
        duration = max(ends + [1.0])
    low = float(metrics.get("thresholds", {}).get("low_confidence", LOW_CONFIDENCE))
    segs, dialogue, words = [], [], []
    if transcript is not None:
        segs = [
            {"speaker": s.speaker, "start": s.start, "end": s.end, "text": s.text}
            for s in transcript.segments
        ]
        words = [
            {
                "speaker": sp,
                "word": w.word.strip(),
                "start": w.start,
                "end": w.end,
                "probability": w.probability,
            }
            for sp in ("user", "agent")
            for seg in transcript.of(sp)
            for w in seg.words
        ]
        dialogue = [_dialogue_line(d, words, low) for d in transcript.dialogue()]
    pieces = [str(m.get("piece", "")) for m in _json(folder / MONOLOGUE_JSON, [])]
    mono = monologue_words(pieces)
    checked = checked_metrics(list(meta.get("expect") or []))
    metric_rows = [_metric_row(k, v, k in checked) for k, v in summary.items()]
    result = run_result(folder)
    return {
        "folder": folder,
        "folder_name": str(folder),
        "run_id": result["run_id"],
        "scenario": result["scenario"],
        "status": result["status"],
        "meta": meta,
        "metrics": metrics,
        "duration": duration,
        "summary": [(k, _fmt(v)) for k, v in summary.items()],
        "metric_rows": sorted(metric_rows, key=lambda r: not r["checked"]),
        "warnings": assertions.get("warnings", []),
        "low_confidence": low,
        "lanes": lane_labels(),
        "lanes_height": svg_height(),
        "turns": metrics.get("turns", []),
        "interruptions": metrics.get("interruptions", []),
        "assertions": assertions.get("results", []),
        "counts": assertions.get("counts", {"pass": 0, "fail": 0, "error": 0}),
        "dialogue": dialogue,
        "monologue": " ".join(w for _, w in mono),
        "timeline": timeline_svg(
            duration, metrics.get("segments", {}), events, segs, metrics.get("turns", []), words, mono, low
        ),
        "report_link": None,
        "random_note": random_label([result]),
    }


def _dialogue_line(d: Any, words: list[dict[str, Any]], low: float) -> dict[str, Any]:
    """A dialogue line with its words (and their confidences) when Whisper gave word times."""
    mine = [w for w in words if w["speaker"] == d.speaker and d.start - 1e-6 <= w["start"] <= d.end + 1e-6]
    spans = [{"text": w["word"], "p": w["probability"], "low": w["probability"] < low} for w in mine]
    return {"speaker": d.speaker, "clock": clock(d.start), "text": d.text, "words": spans}


def _metric_row(name: str, value: Any, checked: bool) -> dict[str, Any]:
    doc = METRICS.get(name)
    unit = doc.unit if doc else ""
    return {
        "name": name,
        "value": _fmt(value),
        "unit": "" if unit in ("count", "bool", "ratio") else unit,
        "kind": unit,
        "better": doc.better if doc else "",
        "text": doc.text if doc else "",
        "checked": checked,
    }


def _audio_data_uri(path: Path) -> str | None:
    if not path.is_file() or path.stat().st_size > EMBED_LIMIT:
        return None
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_run_html(folder: Path, embed_audio: bool = True) -> str:
    folder = Path(folder)
    run = run_page(folder)
    wav = folder / CONVERSATION_WAV
    src = (_audio_data_uri(wav) if embed_audio else None) or (CONVERSATION_WAV if wav.is_file() else None)
    title = f"{run['scenario']} / {run['run_id']} ({run['status']})"
    return (
        _env()
        .get_template("run.html.j2")
        .render(run=run, audio_src=src, title=title, random_note=run["random_note"])
    )


def render_suite_html(suite_dir: Path, results: list[dict[str, Any]], title: str | None = None) -> str:
    """The grid (scenarios x matrix cells, filters) whose chips open each run's report.html below it."""
    suite_dir = Path(suite_dir)
    counts = {s: sum(r.get("status") == s for r in results) for s in ("pass", "fail", "error")}
    title = title or f"rolekit suite: {suite_dir.resolve().name}"
    failures = [
        {"key": f"{r.get('scenario')}/{r.get('run_id')}", "status": r.get("status"), "messages": _messages(r)}
        for r in results
        if r.get("status") != "pass"
    ]
    warnings = [
        (f"{r.get('scenario')}/{r.get('run_id')}", w) for r in results for w in r.get("warnings") or []
    ]
    return (
        _env()
        .get_template("suite.html.j2")
        .render(
            title=title,
            grid=suite_grid(suite_dir, results),
            counts=counts,
            total=len(results),
            failures=failures,
            warnings=warnings,
            random_note=random_label(results),
        )
    )


def _messages(r: dict[str, Any]) -> list[str]:
    return ([f"run error: {r['error']}"] if r.get("error") else []) + list(r.get("failures") or [])


def write_run_report(folder: Path, embed_audio: bool = True) -> Path:
    """Write `<run folder>/report.html`."""
    return write_text(Path(folder) / REPORT_HTML, render_run_html(folder, embed_audio))


def write_suite_report(
    suite_dir: Path, results: list[dict[str, Any]] | None = None, title: str | None = None
) -> Path:
    """Write `<suite folder>/report.html` from `results` (default: the folder's results.jsonl)."""
    suite_dir = Path(suite_dir)
    if results is None:
        results = read_results(suite_dir / "results.jsonl")
    for r in results:  # the grid opens each run's own page
        folder = run_folder(suite_dir, r)
        if folder is not None and not (folder / REPORT_HTML).is_file():
            write_run_report(folder)  # embedded audio: the channel switches need it on file:// pages
    return write_text(suite_dir / REPORT_HTML, render_suite_html(suite_dir, results, title))
