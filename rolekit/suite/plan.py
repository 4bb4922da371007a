"""Suite planning: scenario files × matrix × repeats -> a list of runs with stable ids."""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rolekit.errors import ConfigError, DocumentError, Problem
from rolekit.scenario.schema import LoadedScenario, load_scenario

SPECIAL_MATRIX_KEYS = ("persona", "voice")


@dataclass(frozen=True)
class RunSpec:
    """One conversation to run: a scenario with one matrix cell and one repeat."""

    loaded: LoadedScenario
    persona: str
    vars: dict[str, Any]
    voice: str | None
    seed: int
    repeat: int
    cell: dict[str, Any] = field(default_factory=dict)  # the matrix values of this run

    @property
    def scenario(self) -> str:
        return self.loaded.name

    @property
    def run_id(self) -> str:
        """Stable across invocations (used by --resume) and unique within a scenario: the matrix
        cell's slug, plus a short hash of the cell's exact values whenever the slug loses anything
        ("Acme Inc" and "Acme-Inc", two non-ASCII names, 1 and "1", long cells), + repeat index."""
        if not self.cell:
            return f"r{self.repeat}"
        items = sorted(self.cell.items())
        slug = "_".join(f"{_slug(k)}-{_slug(v)}" for k, v in items)
        exact = all(_slug(k) == k and _exact(v) for k, v in items)
        if len(slug) > 60 or not exact:
            digest = hashlib.sha1(json.dumps(items, sort_keys=True, default=repr).encode()).hexdigest()[:8]
            slug = slug[:48].rstrip("-_") + "-" + digest
        return f"{slug}-r{self.repeat}"

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.run_id}"


def _exact(value: Any) -> bool:
    """Whether `value` can be read back from its slug: an int, or a string of letters, digits, '.'
    and single inner '-' that does not look like a number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, str) and _slug(value) == value and not re.fullmatch(r"[-+]?[\d.]+", value)


def _slug(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-")
    return text or "x"


def expectation_problems(loaded: LoadedScenario) -> list[Problem]:
    """Checks of `expect:` that need rolekit.evaluate (the schema checks kinds, numbers and turns):
    every `metric:` names a key of metrics.json's summary."""
    from rolekit.evaluate.metrics import metric_names

    known = metric_names()
    problems = []
    for i, item in enumerate(loaded.scenario.expect):
        if item.kind == "metric" and item.check.name not in known:
            msg = f"unknown metric {item.check.name!r}; known: {', '.join(sorted(known))}"
            problems.append(loaded.problem(msg, ("expect", i, "metric", "name")))
    return problems


def find_scenario_files(paths: list[Path]) -> list[Path]:
    """Scenario files from files and folders (folders: every *.yaml / *.yml inside, sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"{p}: no such scenario file or folder")
    if not out:
        raise ConfigError(f"no scenario files found in {', '.join(map(str, paths))}")
    seen: set[Path] = set()
    unique = []
    for f in out:  # a file named on its own and inside a named folder runs once
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def expand(loaded: LoadedScenario, repeats: int | None = None) -> list[RunSpec]:
    """All runs of one scenario: the cartesian product of its matrix, times repeats (seed + repeat index)."""
    sc = loaded.scenario
    keys = list(sc.matrix)
    cells = [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sc.matrix[k] for k in keys))
    ]
    runs = []
    for cell in cells or [{}]:
        variables = dict(sc.vars)
        variables.update({k: v for k, v in cell.items() if k not in SPECIAL_MATRIX_KEYS})
        for r in range(repeats if repeats is not None else sc.repeats):
            runs.append(
                RunSpec(
                    loaded=loaded,
                    persona=str(cell.get("persona", sc.persona)),
                    vars=variables,
                    voice=cell.get("voice", sc.voice),
                    seed=sc.seed + r,
                    repeat=r,
                    cell=cell,
                )
            )
    return runs


def _baseline_problems(ld: LoadedScenario) -> list:
    from rolekit.evaluate.metric_docs import METRICS

    return [
        ld.problem(
            f"unknown metric {name!r} (see the metric names in the README)", ("baseline", "metrics", name)
        )
        for name in ld.scenario.baseline.metrics
        if name not in METRICS
    ]


def plan_suite(
    paths: list[Path], pattern: str | None = None, repeats: int | None = None, tags: list[str] | None = None
) -> list[RunSpec]:
    """Load every scenario (all problems of all files reported together) and expand them.

    `pattern` filters runs by `scenario/run-id` (glob, or a plain substring); `tags` keeps the
    scenarios that carry at least one of them.
    """
    files = find_scenario_files(paths)
    loaded, problems = [], []
    for f in files:
        try:
            loaded.append(load_scenario(f))
        except DocumentError as exc:
            problems.extend(exc.problems or [])
    for ld in loaded:
        problems.extend(expectation_problems(ld))
    problems += [p for ld in loaded for p in _baseline_problems(ld)]
    if problems:
        raise DocumentError(problems=problems)
    names: dict[str, Path] = {}
    for ld in loaded:
        if ld.name in names and names[ld.name] != ld.path:
            raise ConfigError(f"two scenarios are named {ld.name!r}: {names[ld.name]} and {ld.path}")
        names[ld.name] = ld.path
    if tags:
        loaded = [ld for ld in loaded if set(tags) & set(ld.scenario.tags)]
    runs = [run for ld in loaded for run in expand(ld, repeats)]
    if pattern:
        glob = any(c in pattern for c in "*?[")
        runs = [r for r in runs if (fnmatch.fnmatch(r.key, pattern) if glob else pattern in r.key)]
    return runs
