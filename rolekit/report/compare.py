"""Compare two suites or two runs (persona v1 / v2, two models, two dates): pure data, no printing.

A side is a run folder or a suite folder (results.jsonl, e.g. `transcripts/` or one of its
`history/<time>/` snapshots). Runs pair by `scenario/run-id`; cells (a scenario's matrix cell:
persona, voice, variables) aggregate their repeats. Two run folders pair with each other whatever
their ids. Metric deltas are B - A of the cell means.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rolekit.errors import ConfigError
from rolekit.evaluate.metric_docs import METRICS
from rolekit.record import MONOLOGUE_JSON, is_complete, monologue_words
from rolekit.report.results import RANDOM_MODEL_NOTE, RESULTS_JSONL, random_label, read_results, run_result
from rolekit.transcribe.transcript import load_transcript

KEY_METRICS = (
    "response_latency_mean",
    "yield_rate",
    "pause_take_floor_rate",
    "agent_interruptions",
    "dead_air_ratio",
    "talk_ratio",
)
_REPEAT = re.compile(r"(^|-)r\d+$")


@dataclass
class Side:
    path: Path
    rows: list[dict[str, Any]]
    single_run: bool = False

    def folder(self, row: dict[str, Any]) -> Path | None:
        """The run folder of a results row, when it is on disk."""
        if self.single_run:
            return self.path
        if not row.get("run_dir"):
            return None
        p = Path(row["run_dir"])
        folder = p if p.is_absolute() else self.path / p
        return folder if is_complete(folder) else None

    @property
    def label(self) -> str:
        models = sorted({str(r.get("model_id")) for r in self.rows if r.get("model_id")})
        personas = sorted({str(r.get("persona")) for r in self.rows if r.get("persona")})
        return f"{self.path} (model {', '.join(models) or '?'}; persona {', '.join(personas) or '?'})"


def load_side(path: Path) -> Side:
    """A run folder or a suite folder; ConfigError for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder")
    if is_complete(path):
        return Side(path, [run_result(path)], single_run=True)
    rows = read_results(path / RESULTS_JSONL)
    if not rows:
        raise ConfigError(f"{path}: neither a run folder nor a suite folder with {RESULTS_JSONL}")
    return Side(path, rows)


def cell_id(row: dict[str, Any]) -> str:
    """`scenario/cell` of a results row: its run id without the repeat suffix."""
    cell = _REPEAT.sub("", str(row.get("run_id", "")))
    return f"{row.get('scenario')}/{cell}" if cell else str(row.get("scenario"))


def cell_label(row: dict[str, Any]) -> str:
    """persona · matrix values (voice and variables) of a row: what tells its cell from the others."""
    parts = [str(row.get("persona") or "?")]
    matrix = dict(row.get("matrix") or {})
    if "voice" in matrix:
        parts.append(f"voice={matrix.pop('voice')}")
    parts += [f"{k}={v}" for k, v in sorted(matrix.items()) if k != "persona"]
    return " · ".join(parts)


@dataclass
class CellDelta:
    key: str
    scenario: str
    label: str
    runs: tuple[int, int]
    passed: tuple[int, int]
    metrics: dict[str, tuple[float | None, float | None]]  # name -> (mean A, mean B)

    @property
    def pass_rates(self) -> tuple[float | None, float | None]:
        return tuple(p / n if n else None for p, n in zip(self.passed, self.runs, strict=True))  # type: ignore[return-value]

    def delta(self, name: str) -> float | None:
        a, b = self.metrics.get(name, (None, None))
        return None if a is None or b is None else b - a

    def worse(self, name: str) -> bool | None:
        """True when B moved the wrong way for `name` (None: no direction or no values)."""
        d, better = self.delta(name), METRICS[name].better if name in METRICS else ""
        if d is None or not better or abs(d) < 1e-12:
            return None
        return d > 0 if better == "lower" else d < 0


@dataclass
class Flip:
    label: str
    before: str
    after: str
    message: str


@dataclass
class RunPair:
    key: str
    a: dict[str, Any]
    b: dict[str, Any]
    folder_a: Path | None
    folder_b: Path | None
    flips: list[Flip] = field(default_factory=list)
    lines_a: list[str] = field(default_factory=list)
    lines_b: list[str] = field(default_factory=list)
    text_source: str = "whisper"

    def diff(self) -> list[tuple[str, str, str]]:
        """Side-by-side rows (tag, line A, line B); tag = equal | replace | delete | insert."""
        out = []
        sm = difflib.SequenceMatcher(a=self.lines_a, b=self.lines_b, autojunk=False)
        for tag, i1, i2, j1, j2 in sm.get_opcodes():
            left, right = self.lines_a[i1:i2], self.lines_b[j1:j2]
            for k in range(max(len(left), len(right))):
                out.append((tag, left[k] if k < len(left) else "", right[k] if k < len(right) else ""))
        return out

    def unified(self) -> list[str]:
        return list(difflib.unified_diff(self.lines_a, self.lines_b, "A", "B", lineterm="", n=1))[2:]


@dataclass
class Comparison:
    a: Side
    b: Side
    cells: list[CellDelta]
    pairs: list[RunPair]
    only_a: list[str]
    only_b: list[str]

    @property
    def random_note(self) -> str | None:
        """The warning when side A, B or both ran a random-weight model (None: neither did)."""
        sides = [name for name, side in (("A", self.a), ("B", self.b)) if random_label(side.rows)]
        return f"side {' and '.join(sides)}: {RANDOM_MODEL_NOTE}" if sides else None


def compare(a: Side, b: Side) -> Comparison:
    """Pair the runs and cells of two sides."""
    if a.single_run and b.single_run:
        ka = kb = "run"
        rows_a, rows_b = {ka: a.rows[0]}, {kb: b.rows[0]}
    else:
        rows_a = {f"{r['scenario']}/{r['run_id']}": r for r in a.rows}
        rows_b = {f"{r['scenario']}/{r['run_id']}": r for r in b.rows}
    pairs = [_pair(k, rows_a[k], rows_b[k], a, b) for k in rows_a if k in rows_b]
    cells = _cells(list(rows_a.values()), list(rows_b.values()), a.single_run and b.single_run)
    return Comparison(
        a,
        b,
        cells,
        pairs,
        only_a=[k for k in rows_a if k not in rows_b],
        only_b=[k for k in rows_b if k not in rows_a],
    )


def _cells(rows_a: list[dict], rows_b: list[dict], single: bool) -> list[CellDelta]:
    def group(rows: list[dict]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault("run" if single else cell_id(r), []).append(r)
        return out

    ga, gb = group(rows_a), group(rows_b)
    cells = []
    for key in [k for k in ga if k in gb]:
        ra, rb = ga[key], gb[key]
        names = [n for n in METRICS if any(n in (r.get("metrics") or {}) for r in ra + rb)]
        cells.append(
            CellDelta(
                key,
                str(rb[0].get("scenario")),
                cell_label(rb[0]),
                (len(ra), len(rb)),
                (sum(r.get("status") == "pass" for r in ra), sum(r.get("status") == "pass" for r in rb)),
                {n: (_mean(ra, n), _mean(rb, n)) for n in names},
            )
        )
    return cells


def _mean(rows: list[dict], name: str) -> float | None:
    vals = [(r.get("metrics") or {}).get(name) for r in rows]
    nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(nums) / len(nums) if nums else None


def _pair(key: str, ra: dict, rb: dict, a: Side, b: Side) -> RunPair:
    fa, fb = a.folder(ra), b.folder(rb)
    pair = RunPair(key, ra, rb, fa, fb)
    pair.flips = _flips(fa, fb, ra, rb)
    la, sa = _dialogue(fa)
    lb, sb = _dialogue(fb)
    pair.lines_a, pair.lines_b = la, lb
    pair.text_source = sa if sa == sb else f"A: {sa}, B: {sb}"
    return pair


def _assertions(folder: Path | None) -> list[dict[str, Any]]:
    path = folder / "assertions.json" if folder is not None else None
    if path is None or not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("results", []))
    except (ValueError, OSError):
        return []


def _flips(fa: Path | None, fb: Path | None, ra: dict, rb: dict) -> list[Flip]:
    """Checks whose status changed (matched by label and position among equal labels)."""

    def keyed(results: list[dict]) -> dict[tuple[str, int], dict]:
        seen: dict[str, int] = {}
        out = {}
        for r in results:
            n = seen.get(r["label"], 0)
            seen[r["label"]] = n + 1
            out[(r["label"], n)] = r
        return out

    xa, xb = keyed(_assertions(fa)), keyed(_assertions(fb))
    flips = [
        Flip(k[0], xa[k]["status"], xb[k]["status"], xb[k].get("message", ""))
        for k in xb
        if k in xa and xa[k]["status"] != xb[k]["status"]
    ]
    if not xa or not xb:  # no assertions.json: the run's status only
        if ra.get("status") != rb.get("status"):
            flips.append(
                Flip("run", str(ra.get("status")), str(rb.get("status")), str(rb.get("error") or ""))
            )
    return flips


def _dialogue(folder: Path | None) -> tuple[list[str], str]:
    """Transcript lines `speaker: text` (Whisper), else the agent's text stream, for the diff."""
    if folder is None:
        return [], "not on disk"
    try:
        transcript = load_transcript(folder)
    except Exception:  # noqa: BLE001 - a damaged transcript shows as none
        transcript = None
    if transcript is not None:
        return [f"{d.speaker}: {d.text}" for d in transcript.dialogue()], "whisper"
    path = folder / MONOLOGUE_JSON
    if not path.is_file():
        return [], "none"
    pieces = [str(m.get("piece", "")) for m in json.loads(path.read_text(encoding="utf-8"))]
    words = [w for _, w in monologue_words(pieces)]
    return [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)], "text stream"
