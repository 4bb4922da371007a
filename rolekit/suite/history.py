"""Suite history: every `rolekit test` / `rolekit run` leaves `<out>/history/<UTC time>/`, never
overwritten: results.jsonl, summary.md, and each run folder's files as hard links (a later run
replaces its folder by rename, so the linked files keep the old content at no copy cost; copies
where links are impossible). A snapshot is itself a suite folder: `rolekit report`, `rolekit
compare` and `rolekit test --baseline` read it.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rolekit.atomic import write_text
from rolekit.report.results import RESULTS_JSONL

HISTORY = "history"


def snapshot(out: Path, rows: list[dict[str, Any]], now: datetime | None = None) -> Path:
    """Write a new history snapshot of `rows` (results lines, run_dir relative to `out`)."""
    out = Path(out)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    root = out / HISTORY
    root.mkdir(parents=True, exist_ok=True)
    target, n = root / stamp, 1
    while True:
        try:
            target.mkdir()  # atomic: two suites finishing in the same second get two folders
            break
        except FileExistsError:
            n += 1
            target = root / f"{stamp}-{n}"
    kept = []
    for row in rows:
        row = dict(row)
        src = _run_dir(out, row)
        if src is not None:
            rel = Path(row["scenario"]) / str(row["run_id"])
            _link_tree(src, target / rel)
            row["run_dir"] = str(rel)
        kept.append(row)
    lines = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in kept)
    write_text(target / RESULTS_JSONL, lines)  # last and whole: `snapshots` lists folders that have it
    for name in ("summary.md", "junit.xml"):  # copies: summary.md is rewritten in place
        if (out / name).is_file():
            shutil.copy2(out / name, target / name)
    return target


def snapshots(out: Path) -> list[Path]:
    """History snapshots of a suite folder, oldest first."""
    root = Path(out) / HISTORY
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if (p / RESULTS_JSONL).is_file()), key=lambda p: p.name)


def _run_dir(out: Path, row: dict[str, Any]) -> Path | None:
    if not row.get("run_dir"):
        return None
    p = Path(row["run_dir"])
    p = p if p.is_absolute() else out / p
    return p if p.is_dir() else None


def _link_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*"):
        if path.is_file():
            _link(path, dst / path.relative_to(src))


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
