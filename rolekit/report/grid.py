"""The suite report's grid (promptfoo's view for conversations): one row per scenario, one column
per matrix cell (persona and the matrix's voice / variables), each cell the runs' pass/fail chips
(each opening that run's report) and the key metrics averaged over its repeats. Pure data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rolekit.record import META_JSON
from rolekit.report.compare import cell_label

GRID_METRICS = (
    ("response_latency_mean", "latency", " s"),
    ("yield_rate", "yield", ""),
    ("pause_take_floor_rate", "pause floor", ""),
    ("talk_ratio", "talk", ""),
)
_ORDER = {"error": 0, "fail": 1, "pass": 2}


def run_folder(suite_dir: Path, row: dict[str, Any]) -> Path | None:
    """The run folder of a results row when it is on disk (never for a row marked damaged)."""
    if not row.get("run_dir") or row.get("damaged"):
        return None
    p = Path(row["run_dir"])
    folder = p if p.is_absolute() else Path(suite_dir) / p
    return folder if (folder / META_JSON).is_file() else None


def _mean(rows: list[dict[str, Any]], name: str) -> float | None:
    vals = [(r.get("metrics") or {}).get(name) for r in rows]
    nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(nums) / len(nums) if nums else None


def suite_grid(suite_dir: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """{"columns": [label], "rows": [{"scenario", "tags", "statuses", "cells": [cell | None]}]}."""
    columns: list[str] = []
    by_scenario: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        label = cell_label(r)
        if label not in columns:
            columns.append(label)
        by_scenario.setdefault(str(r.get("scenario")), {}).setdefault(label, []).append(r)
    rows = []
    for scenario, cells in by_scenario.items():
        out_cells = []
        for label in columns:
            runs = cells.get(label)
            out_cells.append(None if runs is None else _cell(suite_dir, label, runs))
        statuses = sorted({c2["status"] for c in out_cells if c for c2 in c["runs"]})
        tags = sorted({t for runs in cells.values() for r in runs for t in r.get("tags") or []})
        rows.append({"scenario": scenario, "tags": tags, "statuses": statuses, "cells": out_cells})
    return {"columns": columns, "rows": rows}


def _cell(suite_dir: Path, label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    chips = []
    for r in runs:
        folder = run_folder(suite_dir, r)
        href = None
        if folder is not None:
            href = Path(os.path.relpath(folder / "report.html", suite_dir)).as_posix()
        first = r.get("error") or (r.get("failures") or [""])[0]
        title = f"{r.get('scenario')}/{r.get('run_id')} · {r.get('status')} · seed {r.get('seed')}"
        if r.get("voice"):
            title += f" · voice {r['voice']}"
        if first and r.get("status") != "pass":
            title += f" · {first}"
        chips.append(
            {
                "run_id": r.get("run_id"),
                "status": r.get("status") if r.get("status") in _ORDER else "error",
                "href": href,
                "title": title,
                "warn": bool(r.get("warnings")),
                "short": f"r{r['repeat']}" if r.get("repeat") is not None else str(r.get("run_id")),
            }
        )
    worst = min((c["status"] for c in chips), key=lambda s: _ORDER[s])
    metrics = []
    for name, short, unit in GRID_METRICS:
        v = _mean(runs, name)
        if v is not None:
            metrics.append({"name": name, "short": short, "value": f"{v:.2f}{unit}"})
    return {
        "label": label,
        "runs": chips,
        "status": worst,
        "passed": sum(c["status"] == "pass" for c in chips),
        "total": len(chips),
        "metrics": metrics,
    }
