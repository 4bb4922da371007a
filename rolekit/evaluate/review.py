"""Evaluate one run folder: metrics.json and assertions.json from the record, transcript and expect list.

This is what `rolekit report` and the suite runner call after a run has been saved (and, when a
Whisper model is available, transcribed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rolekit.evaluate.assertions import (
    AssertionResult,
    evaluate_expectations,
    run_warnings,
    write_assertions,
)
from rolekit.evaluate.metrics import compute_metrics, write_metrics
from rolekit.record import SessionRecord
from rolekit.scenario.expect import Expectation
from rolekit.transcribe.transcript import Transcript, load_transcript


@dataclass
class RunReview:
    folder: Path
    metrics: dict[str, Any]
    results: list[AssertionResult]
    warnings: list[str]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def review_run(
    folder: Path,
    record: SessionRecord | None = None,
    expect: list[Expectation | dict[str, Any]] | None = None,
    transcript: Transcript | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunReview:
    """Compute and write metrics.json and assertions.json for the run in `folder`.

    `record` and `transcript` are read from the folder when not given; `expect` defaults to the
    list stored in meta.json under "expect" (none: no assertions).
    """
    folder = Path(folder)
    record = record if record is not None else SessionRecord.load(folder)
    transcript = transcript if transcript is not None else load_transcript(folder)
    if expect is None:
        expect = list(record.meta.get("expect") or [])
    metrics = compute_metrics(record, transcript, overrides)
    results = evaluate_expectations(expect, record, metrics, transcript, folder)
    write_metrics(folder, metrics)
    warnings = run_warnings(metrics)
    write_assertions(folder, results, warnings)
    return RunReview(folder, metrics, results, warnings)
