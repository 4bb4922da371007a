"""Evaluate a scenario's `expect:` list against a run: transcript, text stream and metrics.

Each result is pass, fail or error (error: the check could not be evaluated, e.g. its turn never
played or the scenario has no interrupt to yield to); only pass counts as passing. Every result
carries a one-line message saying what was seen. Text checks on `source: whisper` fall back to the
model's text stream (`source: monologue`) only when asked: a `source: whisper` check on a run
without a transcript (`--no-transcribe`, no Whisper model) is an error that says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.atomic import write_text
from rolekit.evaluate.metrics import turn_window, user_turns
from rolekit.evaluate.thresholds import LOW_CONFIDENCE
from rolekit.frames import FRAME_SECONDS
from rolekit.record import SessionRecord, monologue_words
from rolekit.scenario.expect import (
    Expectation,
    LatencyCheck,
    MetricCheck,
    NoInterruptCheck,
    TextCheck,
    YieldCheck,
)
from rolekit.transcribe.transcript import Transcript, Word
from rolekit.transcribe.words import normalize_words

ASSERTIONS_JSON = "assertions.json"


@dataclass
class AssertionResult:
    kind: str
    label: str
    status: str  # pass | fail | error
    message: str
    turn: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class RunView:
    """What assertions look at: the record, its metrics, and its transcript if any."""

    record: SessionRecord
    metrics: dict[str, Any]
    transcript: Transcript | None


def evaluate_expectations(
    expect: list[Expectation | dict[str, Any]],
    record: SessionRecord,
    metrics: dict[str, Any],
    transcript: Transcript | None = None,
    folder: Path | None = None,
) -> list[AssertionResult]:
    """One AssertionResult per item of `expect` (models or plain dicts with the same keys)."""
    view = RunView(record, metrics, transcript)
    out = []
    for item in expect:
        exp = item if isinstance(item, Expectation) else Expectation.model_validate(item)
        check = exp.check
        if exp.python is not None:
            from rolekit.evaluate.custom import check_run, run_custom_check

            res = run_custom_check(exp.python, check_run(record, metrics, transcript, folder))
        elif isinstance(check, TextCheck):
            res = _text(view, check, negate=exp.kind == "not_says")
        elif isinstance(check, LatencyCheck):
            res = _latency(view, check)
        elif isinstance(check, YieldCheck):
            res = _yield(view, check)
        elif isinstance(check, NoInterruptCheck):
            res = _no_interrupt(view, check)
        else:
            res = _metric(view, check)
        status, message, details = res
        out.append(
            AssertionResult(exp.kind, exp.label, status, message, getattr(check, "turn", None), details)
        )
    return out


# -- text -------------------------------------------------------------------------------------------


def agent_words(view: RunView, source: str, turn: int | None) -> list[Word] | None:
    """The agent's words from `source` (whisper | monologue), in a turn window or the whole run.

    None when the turn never played or `source` is whisper and the run has no transcript.
    Monologue words carry their frame time and probability 1.0.
    """
    window = None
    if turn is not None:
        window = turn_window(view.record.events, turn, view.record.duration)
        if window is None:
            return None
    lo, hi = window or (None, None)
    if source == "whisper":
        if view.transcript is None:
            return None
        return view.transcript.words("agent", lo, hi)
    lo_t, hi_t = window or (0.0, float("inf"))
    return [
        Word(w, t, t + FRAME_SECONDS) for t, w in monologue_words(view.record.text_pieces) if lo_t <= t < hi_t
    ]


def agent_text(view: RunView, source: str, turn: int | None) -> str | None:
    """The agent's text from `source` (whisper | monologue), in a turn window or the whole run."""
    words = agent_words(view, source, turn)
    return None if words is None else " ".join(w.word.strip() for w in words).strip()


def _norm(s: str) -> str:
    return " ".join(normalize_words(s))


def _found(check: TextCheck, text: str) -> list[str]:
    """The strings/pattern of `check` that occur in `text`."""
    if check.regex is not None:
        flags = 0 if check.case_sensitive else re.IGNORECASE
        m = re.search(check.regex, text, flags)
        return [m.group(0)] if m else []
    if check.case_sensitive:
        return [s for s in check.strings if s in text]
    hay = f" {_norm(text)} "
    return [s for s in check.strings if _norm(s) and _norm(s) in hay]


def _text(view: RunView, check: TextCheck, negate: bool) -> tuple[str, str, dict]:
    where = f"turn {check.turn}" if check.turn is not None else "the run"
    if check.turn is not None and turn_window(view.record.events, check.turn, view.record.duration) is None:
        return "error", f"turn {check.turn} was never played", {}
    source = check.source
    if source == "whisper" and view.transcript is None:
        return (
            "error",
            "no Whisper transcript (run not transcribed: --no-transcribe or no Whisper model); "
            "run `rolekit transcribe RUN_DIR`, or check the text stream with `source: monologue`",
            {"source": source},
        )
    words = agent_words(view, source, check.turn) or []
    low_bar = float(view.metrics.get("thresholds", {}).get("low_confidence", LOW_CONFIDENCE))
    dropped = []
    if check.min_confidence is not None:
        dropped = [w for w in words if w.probability < check.min_confidence]
        words = [w for w in words if w.probability >= check.min_confidence]
    text = " ".join(w.word.strip() for w in words).strip()
    found = _found(check, text)
    quote = text if len(text) <= 160 else text[:157] + "..."
    low = [w for w in words if w.probability < low_bar]
    details = {
        "source": source,
        "text": text,
        "found": found,
        "low_confidence": [[w.word.strip(), round(w.probability, 3)] for w in low],
        "dropped_below_min_confidence": [[w.word.strip(), round(w.probability, 3)] for w in dropped],
    }
    if check.min_confidence is not None:
        source = f"{source}, {len(dropped)} word(s) below confidence {check.min_confidence:g} ignored"
    if low:
        worst = min(low, key=lambda w: w.probability)
        source += (
            f"; warning: {len(low)} of {len(words)} judged words below confidence {low_bar:g}, "
            f"e.g. {worst.word.strip()!r} {worst.probability:.2f}"
        )
    if check.regex is not None:
        wanted = f"regex {check.regex!r}"
        ok = bool(found)
    elif check.any_of is not None:
        wanted = f"any of {check.strings}"
        ok = bool(found)
    else:
        wanted = f"all of {check.strings}" if len(check.strings) > 1 else repr(check.strings[0])
        ok = len(found) == len(check.strings)
    if negate:
        if found:
            return "fail", f"agent said {found} in {where} ({source}): {quote!r}", details
        return "pass", f"agent never said {wanted} in {where} ({source})", details
    if ok:
        return "pass", f"agent said {found} in {where} ({source})", details
    said = f"agent said: {quote!r}" if text else "agent said nothing"
    return "fail", f"expected {wanted} in {where} ({source}); {said}", details


# -- timing -----------------------------------------------------------------------------------------


def _latency(view: RunView, check: LatencyCheck) -> tuple[str, str, dict]:
    turns = view.metrics.get("turns", [])
    if check.turn is not None:
        turns = [t for t in turns if t["turn"] == check.turn]
        if not turns:
            return "error", f"turn {check.turn} is not a played user turn (say/audio/interrupt)", {}
    if not turns:
        return "error", "the scenario has no user turns", {}
    missing = [t["turn"] for t in turns if t["response_latency_s"] is None]
    lat = {t["turn"]: t["response_latency_s"] for t in turns if t["response_latency_s"] is not None}
    details = {"latencies": lat, "no_response": missing, "stat": check.stat, "max": check.max}
    if missing:
        return "fail", f"no agent response to turn(s) {missing} (bound {check.max:.2f} s)", details
    values = np.asarray(list(lat.values()))
    if check.stat == "each":
        slow = {k: v for k, v in lat.items() if v > check.max}
        if slow:
            worst = max(slow, key=slow.get)
            return (
                "fail",
                f"response latency {slow[worst]:.2f} s at turn {worst} > {check.max:.2f} s ({len(slow)} slow)",
                details,
            )
        return (
            "pass",
            f"all {len(lat)} response latencies <= {check.max:.2f} s (max {values.max():.2f} s)",
            details,
        )
    value = float(values.mean() if check.stat == "mean" else np.percentile(values, 90))
    details["value"] = round(value, 3)
    op = "<=" if value <= check.max else ">"
    return (
        ("pass" if value <= check.max else "fail"),
        f"{check.stat} response latency {value:.2f} s {op} {check.max:.2f} s",
        details,
    )


def _yield(view: RunView, check: YieldCheck) -> tuple[str, str, dict]:
    items = view.metrics.get("interruptions", [])
    if check.turn is not None:
        items = [x for x in items if x["turn"] == check.turn]
    if not items:
        return (
            "error",
            "no scripted interrupt" + (f" at turn {check.turn}" if check.turn is not None else ""),
            {},
        )
    live = [x for x in items if x["agent_speaking"]]
    idle = [x["turn"] for x in items if not x["agent_speaking"]]
    details = {"interrupts": items, "within": check.within}
    if not live:
        return "error", f"the agent was not speaking at interrupt turn(s) {idle}: nothing to yield", details
    slow = [x for x in live if x["time_to_yield_s"] > check.within + 1e-9]
    note = f"; agent silent at turn(s) {idle}" if idle else ""
    if slow:
        x = max(slow, key=lambda x: x["time_to_yield_s"])
        return (
            "fail",
            f"agent kept talking {x['time_to_yield_s']:.2f} s after the interrupt at {x['at']:.2f} s (turn {x['turn']}) > {check.within:.2f} s{note}",
            details,
        )
    worst = max(x["time_to_yield_s"] for x in live)
    return (
        "pass",
        f"agent yielded at {len(live)} interrupt(s) within {worst:.2f} s <= {check.within:.2f} s{note}",
        details,
    )


def _no_interrupt(view: RunView, check: NoInterruptCheck) -> tuple[str, str, dict]:
    user = [tuple(s) for s in view.metrics.get("segments", {}).get("user", [])]
    agent = [tuple(s) for s in view.metrics.get("segments", {}).get("agent", [])]
    window = (float("-inf"), float("inf"))
    if check.turn is not None:
        ev = next((e for e in user_turns(view.record.events) if e.get("turn") == check.turn), None)
        if ev is None:
            return "error", f"turn {check.turn} is not a played user turn", {}
        window = (float(ev["start"]), float(ev["end"] if ev.get("end") is not None else view.record.duration))
    bad = []
    for a0, a1 in agent:
        if not window[0] <= a0 < window[1]:
            continue
        for u0, u1 in user:
            if u0 <= a0 < u1:
                over = min(a1, u1) - a0
                if over > check.max_overlap + 1e-9:
                    bad.append({"at": round(a0, 3), "overlap_s": round(over, 3)})
    details = {"interruptions": bad, "max_overlap": check.max_overlap}
    if bad:
        first = bad[0]
        return (
            "fail",
            f"agent started talking over the user {len(bad)} time(s), first at {first['at']:.2f} s ({first['overlap_s']:.2f} s overlap)",
            details,
        )
    return "pass", "agent never started talking while the user spoke", details


def _metric(view: RunView, check: MetricCheck) -> tuple[str, str, dict]:
    summary = view.metrics.get("summary", {})
    if check.name not in summary:
        return "error", f"unknown metric {check.name!r} (see metrics.json summary)", {}
    value = summary[check.name]
    if value is None:
        return (
            "error",
            f"metric {check.name} is not available for this run (needs a transcript or events)",
            {},
        )
    value = float(value)
    lo = -np.inf if check.min is None else check.min
    hi = np.inf if check.max is None else check.max
    bounds = " and ".join(
        b
        for b in (
            f">= {check.min}" if check.min is not None else "",
            f"<= {check.max}" if check.max is not None else "",
        )
        if b
    )
    details = {"value": value, "min": check.min, "max": check.max}
    if lo - 1e-9 <= value <= hi + 1e-9:
        return "pass", f"{check.name} = {value:g} ({bounds})", details
    return "fail", f"{check.name} = {value:g}, expected {bounds}", details


# -- files ------------------------------------------------------------------------------------------


def run_warnings(metrics: dict[str, Any]) -> list[str]:
    """Run-level cautions a reader needs before trusting the text checks (not failures)."""
    summary, th = metrics.get("summary", {}), metrics.get("thresholds", {})
    share = summary.get("agent_low_confidence_share")
    bar = float(th.get("low_confidence_run_share", 0.5))
    out = []
    if share is not None and share >= bar - 1e-9:
        out.append(
            f"agent text is mostly low-confidence: {share:.0%} of {summary.get('agent_words', 0)} Whisper "
            f"words below confidence {float(th.get('low_confidence', LOW_CONFIDENCE)):g}; Whisper may have "
            "invented them (listen, or use min_confidence / source: monologue)"
        )
    return out


def assertions_dict(results: list[AssertionResult], warnings: list[str] | None = None) -> dict[str, Any]:
    return {
        "passed": all(r.passed for r in results),
        "counts": {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error")},
        "results": [asdict(r) for r in results],
        "warnings": list(warnings or []),
    }


def write_assertions(folder: Path, results: list[AssertionResult], warnings: list[str] | None = None) -> Path:
    return write_text(
        Path(folder) / ASSERTIONS_JSON, json.dumps(assertions_dict(results, warnings), indent=1) + "\n"
    )


def load_assertions(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / ASSERTIONS_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
