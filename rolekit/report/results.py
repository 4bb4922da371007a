"""results.jsonl: one JSON line per finished run, appended as each run ends (Pipecat Evals style).

A line (RESULT_VERSION 1):
    {"version": 1, "run_id", "scenario", "persona", "vars", "seed", "repeat", "model_id",
     "status": "pass" | "fail" | "error", "duration_s" (audio), "wall_s" (seconds the run took:
     its engine batch plus its own transcription and evaluation), "started_at", "run_dir",
     "voice", "matrix" (this run's matrix cell), "tags", "warnings": [...],
     "assertions": {"pass": n, "fail": n, "error": n},
     "failures": ["<label>: <message>", ...], "error": null | "<why the run itself failed>",
     "thresholds_version", "metrics": {<metrics.json summary>},
     "random_model": true | false | null (unknown: an error row or an older run folder),
     "model": {"model", "dtype", "quant", "compat", "random_weights", "label"?} (as loaded) | null}
`status` is error when the run crashed or an assertion could not be evaluated, fail when an
assertion failed, else pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rolekit.atomic import write_text
from rolekit.errors import Problem
from rolekit.evaluate.assertions import load_assertions
from rolekit.evaluate.metrics import load_metrics
from rolekit.record import META_JSON, RecordError

RESULT_VERSION = 1
RESULTS_JSONL = "results.jsonl"
RANDOM_MODEL_NOTE = (
    "the model has random weights: it produces noise, not speech, so these transcripts, metrics and "
    "check results say nothing about the persona (they test rolekit's plumbing)"
)


def random_model(meta: dict[str, Any]) -> bool | None:
    """Whether a run's model had random weights (meta.json's `is_random_model`; None: not recorded)."""
    value = meta.get("is_random_model")
    return None if value is None else bool(value)


def random_label(rows: list[dict[str, Any]]) -> str | None:
    """The warning a report shows when any of `rows` ran a random-weight model (None: none did)."""
    hits = [r for r in rows if r.get("random_model")]
    if not hits:
        return None
    labels = sorted(
        {str((r.get("model") or {}).get("label") or r.get("model_id") or "") for r in hits} - {""}
    )
    return RANDOM_MODEL_NOTE + (f" ({'; '.join(labels)})" if labels else "")


def _meta(folder: Path) -> dict[str, Any]:
    path = folder / META_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_result(folder: Path, base: Path | None = None) -> dict[str, Any]:
    """The results.jsonl line of an evaluated run folder (metrics.json / assertions.json read if present)."""
    folder = Path(folder)
    meta = _meta(folder)
    metrics = load_metrics(folder) or {}
    assertions = load_assertions(folder) or {"results": [], "counts": {"pass": 0, "fail": 0, "error": 0}}
    counts = assertions.get("counts", {"pass": 0, "fail": 0, "error": 0})
    failures = [
        f"{r['label']}: {r['message']}" for r in assertions.get("results", []) if r["status"] != "pass"
    ]
    status = "error" if counts.get("error") else "fail" if counts.get("fail") else "pass"
    try:
        run_dir = str(folder.relative_to(base)) if base is not None else str(folder)
    except ValueError:
        run_dir = str(folder)
    return {
        "version": RESULT_VERSION,
        "run_id": meta.get("run_id", folder.name),
        "scenario": meta.get("scenario", folder.parent.name),
        "persona": meta.get("persona"),
        "vars": meta.get("vars", {}),
        "seed": meta.get("seed"),
        "repeat": meta.get("repeat"),
        "model_id": meta.get("model_id"),
        "status": status,
        "duration_s": metrics.get("summary", {}).get("duration_s"),
        "wall_s": meta.get("wall_s"),
        "voice": meta.get("voice"),
        "matrix": meta.get("matrix", {}),
        "tags": meta.get("tags", []),
        "warnings": assertions.get("warnings", []),
        "started_at": meta.get("started_at"),
        "run_dir": run_dir,
        "assertions": counts,
        "failures": failures,
        "error": None,
        "thresholds_version": metrics.get("thresholds_version"),
        "metrics": metrics.get("summary", {}),
        "random_model": random_model(meta),
        "model": meta.get("model"),
    }


def error_result(scenario: str, run_id: str, message: str, **fields: Any) -> dict[str, Any]:
    """The results.jsonl line of a run that could not finish (crash, bad input)."""
    base = {
        "version": RESULT_VERSION,
        "run_id": run_id,
        "scenario": scenario,
        "persona": None,
        "vars": {},
        "seed": None,
        "repeat": None,
        "model_id": None,
        "status": "error",
        "duration_s": None,
        "wall_s": None,
        "voice": None,
        "matrix": {},
        "tags": [],
        "warnings": [],
        "started_at": None,
        "run_dir": None,
        "assertions": {"pass": 0, "fail": 0, "error": 0},
        "failures": [],
        "error": message,
        "thresholds_version": None,
        "metrics": {},
        "random_model": None,
        "model": None,
    }
    base.update(fields)
    return base


def append_result(path: Path, result: dict[str, Any]) -> None:
    """Append one line and fsync, so a crash never leaves a half-written earlier line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every row of a results.jsonl. A torn LAST line (a crash while appending) is skipped; any other
    line that is not a results row is an error naming the file and line (RecordError), never dropped.

    When a run id appears more than once (a resumed or filtered rerun), the last line wins.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(problems=[Problem(f"cannot read results ({exc})", str(path))]) from None
    torn = bool(lines) and lines[-1] != ""  # the file should end with a newline
    by_id: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        rec = _row(raw)
        if rec is None:
            if torn and number == len(lines):
                continue
            raise RecordError(
                problems=[
                    Problem(
                        "damaged line: not a results row (a JSON object with scenario, run_id, status); "
                        "fix or delete the line, or rerun the suite",
                        str(path),
                        number,
                    )
                ]
            )
        key = f"{rec['scenario']}/{rec['run_id']}"
        by_id.pop(key, None)
        by_id[key] = rec
    return list(by_id.values())


def _row(raw: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(rec, dict) or not all(
        isinstance(rec.get(k), str) for k in ("scenario", "run_id", "status")
    ):
        return None
    return rec


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace results.jsonl with `rows`, one line each, atomically (`rolekit.atomic.write_text`)."""
    write_text(
        path, "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows)
    )
