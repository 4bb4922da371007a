"""The HTML page of `rolekit compare`: cell deltas, flipped checks, both recordings side by side and
a side-by-side transcript diff per paired run. Audio is referenced relative to the page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rolekit.atomic import write_text
from rolekit.evaluate.metric_docs import METRICS
from rolekit.record import CONVERSATION_WAV
from rolekit.report.compare import KEY_METRICS, Comparison


def _rel(target: Path | None, page: Path) -> str | None:
    if target is None or not target.is_file():
        return None
    try:
        return Path(os.path.relpath(target.resolve(), page.resolve().parent)).as_posix()
    except ValueError:
        return target.resolve().as_uri()


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def render_compare_html(page: Path, c: Comparison) -> str:
    from rolekit.report.html import _env

    shown = [m for m in KEY_METRICS if any(m in cell.metrics for cell in c.cells)]
    cells = []
    for cell in c.cells:
        metrics = []
        for m in shown:
            va, vb = cell.metrics.get(m, (None, None))
            worse = cell.worse(m)
            d = cell.delta(m)
            metrics.append(
                {
                    "a": _num(va),
                    "b": _num(vb),
                    "delta": "" if d is None else f"{d:+.3g}",
                    "cls": "" if worse is None else "worse" if worse else "better",
                }
            )
        ra, rb = cell.pass_rates
        cls = "" if ra is None or rb is None or ra == rb else "worse" if rb < ra else "better"
        cells.append({"cell": cell, "metrics": metrics, "pass_cls": cls})
    pairs = []
    for p in c.pairs:
        pairs.append(
            {
                "pair": p,
                "id": "pair-" + "".join(ch if ch.isalnum() else "-" for ch in p.key),
                "audio_a": _rel(p.folder_a / CONVERSATION_WAV if p.folder_a else None, page),
                "audio_b": _rel(p.folder_b / CONVERSATION_WAV if p.folder_b else None, page),
                "diff": p.diff(),
            }
        )
    docs = {m: METRICS[m] for m in shown}
    scenarios: dict[str, dict[str, Any]] = {}
    for cell in c.cells:
        d = scenarios.setdefault(cell.scenario, {"name": cell.scenario, "cells": 0, "a": [0, 0], "b": [0, 0]})
        d["cells"] += 1
        d["a"] = [d["a"][0] + cell.passed[0], d["a"][1] + cell.runs[0]]
        d["b"] = [d["b"][0] + cell.passed[1], d["b"][1] + cell.runs[1]]
    for d in scenarios.values():
        ra, rb = d["a"][0] / max(d["a"][1], 1), d["b"][0] / max(d["b"][1], 1)
        d["cls"] = "worse" if rb < ra else "better" if rb > ra else ""
    return (
        _env()
        .get_template("compare.html.j2")
        .render(
            title="rolekit compare",
            c=c,
            cells=cells,
            shown=shown,
            docs=docs,
            pairs=pairs,
            scenarios=list(scenarios.values()),
            random_note=c.random_note,
        )
    )


def write_compare_html(page: Path, c: Comparison) -> Path:

    page = Path(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    return write_text(page, render_compare_html(page, c))


def compare_rows(c: Comparison) -> list[dict[str, Any]]:
    """Plain rows of the cell table (for JSON output and tests)."""
    return [
        {
            "cell": cell.key,
            "label": cell.label,
            "passed": list(cell.passed),
            "runs": list(cell.runs),
            "deltas": {m: cell.delta(m) for m in cell.metrics},
        }
        for cell in c.cells
    ]
