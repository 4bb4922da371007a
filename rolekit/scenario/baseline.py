"""A scenario's `baseline:` block: how much worse than a baseline suite a run may get.

    baseline:
      max_pass_rate_drop: 0.0            # a cell's pass rate may drop this much (default 0: no drop)
      metrics:                           # per metric, means over a cell's repeats
        response_latency_mean: {max_increase: 0.25}
        yield_rate: {max_decrease: 0.1}

`rolekit test --baseline DIR` compares every matrix cell (persona, voice, variables) found in both
suites; a cell beyond these bounds is a regression and the command exits 1.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MetricBound(BaseModel):
    """How far a metric's cell mean may move the wrong way (in the metric's unit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_increase: float | None = Field(default=None, ge=0)
    max_decrease: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> MetricBound:
        if self.max_increase is None and self.max_decrease is None:
            raise ValueError("give max_increase, max_decrease or both")
        return self


class BaselinePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pass_rate_drop: float = Field(default=0.0, ge=0, le=1)
    metrics: dict[str, MetricBound] = Field(default_factory=dict)
