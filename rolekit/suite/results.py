"""The suite's results.jsonl (format and writers in rolekit.report.results): start, resume, summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rolekit.report.results import RESULTS_JSONL, read_results, write_results

STATUSES = ("pass", "fail", "error")


def results_path(out: Path) -> Path:
    return Path(out) / RESULTS_JSONL


def start_results(out: Path, *, resume: bool) -> dict[str, dict[str, Any]]:
    """Prepare results.jsonl: kept when resuming (returns the last result per `scenario/run_id`), else emptied."""
    path = results_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        path.write_text("", encoding="utf-8")
        return {}
    rows = read_results(path)  # a torn last line (a crash mid-append) is dropped here
    if path.is_file():
        write_results(path, rows)
    return {f"{r['scenario']}/{r['run_id']}": r for r in rows}


def compact_results(out: Path) -> None:
    """Rewrite results.jsonl with exactly one line per run (the last one written), atomically."""
    path = results_path(out)
    if path.is_file():
        write_results(path, read_results(path))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per status, per scenario, and the exit code (0 all pass, 1 any failure or error)."""
    counts = {s: sum(1 for r in rows if r.get("status") == s) for s in STATUSES}
    by_scenario: dict[str, dict[str, int]] = {}
    for r in rows:
        d = by_scenario.setdefault(str(r.get("scenario")), {s: 0 for s in STATUSES})
        status = r.get("status") if r.get("status") in STATUSES else "error"
        d[status] += 1
    return {
        "runs": len(rows),
        **counts,
        "by_scenario": by_scenario,
        "exit_code": 0 if rows and counts["pass"] == len(rows) else 1,
    }
