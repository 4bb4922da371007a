"""The stages of a run and their ETAs: measured seconds per unit of work, per stage, in this suite.

A run goes prefill -> conversation -> transcribing -> evaluating -> report. `StageClock` times
each stage and its units (conversation frames for prefill and conversation, seconds of audio for
transcribing, runs for evaluating and report), and estimates the next stage from what this suite
measured so far. Before a stage has been measured, its estimate is None (unknown), except for
transcribing, which starts from the backend's expected real-time factor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

STAGES = ("prefill", "conversation", "transcribing", "evaluating", "report")
# Seconds of work per second of conversation (both channels) before any transcript was timed here.
TRANSCRIBE_PRIOR = {"ct2": 0.2, "mlx": 3.0, "mlx-gpu": 0.1}


@dataclass(frozen=True)
class StageEvent:
    """One run (or batch of runs) entering a stage."""

    stage: str  # one of STAGES
    runs: tuple[str, ...]  # scenario/run-id of each run in the batch
    eta_s: float | None  # expected seconds for this stage (None: not known yet)
    suite_eta_s: float | None  # expected seconds until the suite ends (None: not known yet)


@dataclass
class StageClock:
    """Seconds per unit of each stage, measured as the suite goes; estimates for what is left."""

    rates: dict[str, float] = field(default_factory=dict)  # stage -> seconds per unit
    run_seconds: list[float] = field(default_factory=list)  # wall time of each finished run
    _started: dict[str, tuple[float, float]] = field(default_factory=dict)

    def start(self, stage: str, units: float) -> float | None:
        """Start timing `stage` over `units`; returns its expected seconds (None when unknown)."""
        self._started[stage] = (time.perf_counter(), units)
        rate = self.rates.get(stage)
        return None if rate is None else rate * units

    def stop(self, stage: str) -> float:
        """Stop timing `stage`; its measured seconds per unit becomes the estimate (mean with the last)."""
        t0, units = self._started.pop(stage)
        seconds = time.perf_counter() - t0
        if units > 0:
            rate = seconds / units
            self.rates[stage] = rate if stage not in self.rates else 0.5 * (self.rates[stage] + rate)
        return seconds

    def finished_run(self, seconds: float) -> None:
        self.run_seconds.append(seconds)

    def suite_eta(self, runs_left: int) -> float | None:
        """Runs left x mean seconds of a finished run (None before the first run finished)."""
        if not self.run_seconds:
            return None
        return runs_left * sum(self.run_seconds) / len(self.run_seconds)


def format_eta(seconds: float | None) -> str:
    """`eta 1m05s` / `eta 12s`, or `eta ?` when unknown."""
    if seconds is None:
        return "eta ?"
    s = int(round(seconds))
    return f"eta {s // 60}m{s % 60:02d}s" if s >= 60 else f"eta {s}s"
