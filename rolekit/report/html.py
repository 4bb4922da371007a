"""Self-contained HTML reports: one per run (`report.html` in the run folder, the WAV embedded as
base64 up to EMBED_LIMIT bytes) and one per suite (`report.html` in the suite folder; each run's
audio is referenced next to it, relative to the report). No external assets, no network.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from rolekit.evaluate.assertions import load_assertions
from rolekit.evaluate.metrics import load_metrics
from rolekit.record import CONVERSATION_WAV, EVENTS_JSON, META_JSON, MONOLOGUE_JSON, monologue_words
from rolekit.report.results import read_results, run_result
from rolekit.report.timeline import timeline_svg
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
    segs = []
    dialogue = []
    if transcript is not None:
        segs = [
            {"speaker": s.speaker, "start": s.start, "end": s.end, "text": s.text}
            for s in transcript.segments
        ]
        dialogue = [
            {"speaker": d.speaker, "clock": clock(d.start), "text": d.text} for d in transcript.dialogue()
        ]
    pieces = [str(m.get("piece", "")) for m in _json(folder / MONOLOGUE_JSON, [])]
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
        "turns": metrics.get("turns", []),
        "interruptions": metrics.get("interruptions", []),
        "assertions": assertions.get("results", []),
        "counts": assertions.get("counts", {"pass": 0, "fail": 0, "error": 0}),
        "dialogue": dialogue,
        "monologue": " ".join(w for _, w in monologue_words(pieces)),
        "timeline": timeline_svg(
            duration, metrics.get("segments", {}), events, segs, metrics.get("turns", [])
        ),
        "report_link": None,
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
    return _env().get_template("run.html.j2").render(run=run, audio_src=src, title=title)


def render_suite_html(suite_dir: Path, results: list[dict[str, Any]], title: str | None = None) -> str:
    """Summary table of every result line, then a section (audio, timeline, checks) per run folder."""
    suite_dir = Path(suite_dir)
    rows, runs = [], []
    for r in results:
        folder = _run_folder(suite_dir, r)
        anchor = folder is not None
        if anchor:
            run = run_page(folder)
            run["status"] = r.get("status", run["status"])  # the suite's verdict (e.g. evaluation error)
            rel = os.path.relpath(folder, suite_dir)
            run["audio_src"] = f"{rel}/{CONVERSATION_WAV}" if (folder / CONVERSATION_WAV).is_file() else None
            run["report_link"] = f"{rel}/{REPORT_HTML}" if (folder / REPORT_HTML).is_file() else None
            runs.append(run)
        m, a = r.get("metrics") or {}, r.get("assertions") or {}
        first = (r.get("error") or (r.get("failures") or [""])[0]) if r.get("status") != "pass" else ""
        rows.append(
            {
                "scenario": r.get("scenario"),
                "run_id": r.get("run_id"),
                "anchor": anchor,
                "status": r.get("status"),
                "checks": f"{a.get('pass', 0)}/{sum(a.get(k, 0) for k in ('pass', 'fail', 'error'))}",
                "latency": _fmt(m.get("response_latency_mean")),
                "yield_rate": _fmt(m.get("yield_rate")),
                "pause": _fmt(m.get("pause_take_floor_rate")),
                "talk": _fmt(m.get("talk_ratio")),
                "first_failure": first,
            }
        )
    counts = {s: sum(r.get("status") == s for r in results) for s in ("pass", "fail", "error")}
    title = title or f"rolekit suite: {suite_dir.name}"
    return (
        _env()
        .get_template("suite.html.j2")
        .render(title=title, results=rows, runs=runs, counts=counts, total=len(results))
    )


def _run_folder(suite_dir: Path, r: dict[str, Any]) -> Path | None:
    if not r.get("run_dir"):
        return None
    p = Path(r["run_dir"])
    folder = p if p.is_absolute() else suite_dir / p
    return folder if (folder / META_JSON).is_file() else None


def _write(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def write_run_report(folder: Path, embed_audio: bool = True) -> Path:
    """Write `<run folder>/report.html`."""
    return _write(Path(folder) / REPORT_HTML, render_run_html(folder, embed_audio))


def write_suite_report(
    suite_dir: Path, results: list[dict[str, Any]] | None = None, title: str | None = None
) -> Path:
    """Write `<suite folder>/report.html` from `results` (default: the folder's results.jsonl)."""
    suite_dir = Path(suite_dir)
    if results is None:
        results = read_results(suite_dir / "results.jsonl")
    return _write(suite_dir / REPORT_HTML, render_suite_html(suite_dir, results, title))
