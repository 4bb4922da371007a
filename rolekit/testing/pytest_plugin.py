"""pytest plugin: scenario YAML files become test items, one per run (matrix cell × repeat).

    pytest scenarios/ --rolekit-model tiny --rolekit-no-transcribe
    pytest myscen/ x.yaml                    # a folder or file named on the command line
    pytest --rolekit-scenarios               # any YAML file with `persona:` and `user:` keys, anywhere

A YAML file is a scenario item when it has `persona:` and `user:` keys and either sits in a folder
named `scenarios`, was named on the command line, or sits directly in a folder named on the command
line (not in its subfolders: `pytest .` does not run every YAML of a project), or `--rolekit-scenarios`
is given.

Each item runs its conversation, saves it under --rolekit-out, evaluates the `expect:` list and fails
with the assertion messages. A bad scenario is a collection error naming file, line and field.
This module imports nothing heavy at import time: it is loaded by every pytest run.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest

from rolekit.hub import DEFAULT_MODEL, MODEL_ENV

_BACKENDS_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rolekit", "rolekit scenarios")
    group.addoption(
        "--rolekit-scenarios",
        action="store_true",
        help="collect every YAML file with `persona:` and `user:` as a rolekit scenario",
    )
    group.addoption(
        "--rolekit-model",
        default=os.environ.get(MODEL_ENV, DEFAULT_MODEL),
        help=f"model folder, hub id, or `tiny` (default: ${MODEL_ENV} or {DEFAULT_MODEL})",
    )
    group.addoption("--rolekit-out", default="transcripts", help="where run folders and results.jsonl go")
    group.addoption("--rolekit-whisper", default=None, help="mlx-whisper folder or hub id")
    group.addoption(
        "--rolekit-no-transcribe",
        action="store_true",
        help="skip Whisper (text checks with `source: whisper` then report an error)",
    )
    group.addoption(
        "--rolekit-backend",
        default=None,
        help="module:callable returning a suite backend for a model spec (default: the MLX engine)",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    config = parent.config
    if (
        file_path.parent.name != "scenarios"
        and not config.getoption("rolekit_scenarios")
        and not _named(config, file_path)
    ):
        return None
    if not _looks_like_scenario(file_path):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


def _named(config: pytest.Config, file_path: Path) -> bool:
    """`file_path` or its folder was given on the command line."""
    here = Path(config.invocation_params.dir)
    named = set()
    for arg in config.args:
        p = Path(arg.split("::")[0])
        named.add((p if p.is_absolute() else here / p).resolve())
    path = file_path.resolve()
    return path in named or path.parent in named


def _looks_like_scenario(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return True  # let the real loader report the problem with its line
    return isinstance(data, dict) and "persona" in data and "user" in data


class ScenarioFile(pytest.File):
    """One scenario file; its runs are the items."""

    def collect(self) -> list[pytest.Item]:
        from rolekit.errors import RolekitError
        from rolekit.scenario.schema import load_scenario
        from rolekit.suite.plan import expand

        try:
            runs = expand(load_scenario(self.path))
        except RolekitError as exc:
            raise self.CollectError(f"rolekit: {exc}") from None
        return [ScenarioRun.from_parent(self, name=spec.run_id, spec=spec) for spec in runs]


class ScenarioFailure(Exception):
    """A run whose assertions failed or that could not run."""


class ScenarioRun(pytest.Item):
    """One conversation of a scenario."""

    def __init__(self, *, spec: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.row: dict[str, Any] | None = None

    def runtest(self) -> None:
        from rolekit.errors import RolekitError
        from rolekit.suite.execute import SuiteOptions, run_suite

        cfg = self.config
        options = SuiteOptions(
            out=Path(cfg.getoption("rolekit_out")),
            whisper=cfg.getoption("rolekit_whisper"),
            transcribe=not cfg.getoption("rolekit_no_transcribe"),
            fresh_results=False,
        )
        try:
            outcome = run_suite([self.spec], _backend(cfg), options)
        except RolekitError as exc:
            raise ScenarioFailure(f"usage error: {exc}") from None
        (self.row,) = outcome.rows
        if self.row["status"] != "pass":
            lines = [f"{self.row['status']}: {self.spec.key} ({self.row.get('run_dir') or 'not saved'})"]
            lines += [f"  {m}" for m in self.row.get("failures") or []]
            if self.row.get("error"):
                lines.append(f"  {self.row['error']}")
            raise ScenarioFailure("\n".join(lines))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.spec.key}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say last, once per model, when scenario runs used a random-weight model (noise, not speech)."""
    backends = config.stash.get(_BACKENDS_KEY, {})
    if any(getattr(b, "is_random", False) for b in backends.values()):
        from rolekit.report.results import RANDOM_MODEL_NOTE

        for spec, backend in backends.items():
            if getattr(backend, "is_random", False):
                line = f"rolekit: random weights (--rolekit-model {spec}): {RANDOM_MODEL_NOTE}"
                terminalreporter.write_line(line, yellow=True, bold=True)


def _backend(config: pytest.Config) -> Any:
    """One backend (loaded model) per model spec for the whole session."""
    cache = config.stash.setdefault(_BACKENDS_KEY, {})
    spec = config.getoption("rolekit_model")
    if spec not in cache:
        factory_path = config.getoption("rolekit_backend")
        if factory_path:
            module, _, attr = factory_path.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        else:
            from rolekit.suite.backend import MlxBackend as factory
        cache[spec] = factory(spec)
    return cache[spec]
