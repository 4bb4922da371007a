"""Regressions of a suite against a baseline suite, under each scenario's `baseline:` bounds."""

from __future__ import annotations

from dataclasses import dataclass

from rolekit.report.compare import Comparison
from rolekit.scenario.baseline import BaselinePolicy


@dataclass(frozen=True)
class Regression:
    cell: str  # scenario/cell
    what: str  # "pass rate" or a metric name
    before: float
    after: float
    bound: str

    def __str__(self) -> str:
        return f"{self.cell}: {self.what} {self.before:g} -> {self.after:g} ({self.bound})"


def regressions(comparison: Comparison, policies: dict[str, BaselinePolicy]) -> list[Regression]:
    """Every cell (in both suites) whose pass rate or metric means moved past its scenario's bounds.

    `policies` maps a scenario name to its `baseline:` block (missing: the defaults, no pass-rate drop).
    """
    out = []
    for cell in comparison.cells:
        policy = policies.get(cell.scenario, BaselinePolicy())
        ra, rb = cell.pass_rates
        if ra is not None and rb is not None and rb < ra - policy.max_pass_rate_drop - 1e-9:
            bound = f"pass rate may drop {policy.max_pass_rate_drop:g}"
            out.append(Regression(cell.key, "pass rate", round(ra, 3), round(rb, 3), bound))
        for name, bound in policy.metrics.items():
            a, b = cell.metrics.get(name, (None, None))
            if a is None or b is None:
                continue
            if bound.max_increase is not None and b - a > bound.max_increase + 1e-9:
                out.append(
                    Regression(
                        cell.key, name, round(a, 3), round(b, 3), f"max_increase {bound.max_increase:g}"
                    )
                )
            if bound.max_decrease is not None and a - b > bound.max_decrease + 1e-9:
                out.append(
                    Regression(
                        cell.key, name, round(a, 3), round(b, 3), f"max_decrease {bound.max_decrease:g}"
                    )
                )
    return out
