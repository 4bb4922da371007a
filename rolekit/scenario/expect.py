"""The `expect:` list of a scenario: assertion models (shared with rolekit.evaluate, which checks them).

Each list item is a mapping with exactly one key naming the assertion:

    expect:
      - agent_says: {any_of: [refund, credit]}            # per run, Whisper transcript (default)
      - agent_says: {contains: "order", turn: 1, source: monologue}
      - agent_says: {contains: "refund", min_confidence: 0.5}    # ignore Whisper words below 0.5
      - not_says: {regex: "(?i)have a great day"}
      - max_response_latency: 1.5                          # every user turn; or {max: 1.5, turn: 0, stat: mean}
      - must_yield: {within: 1.0}                          # every scripted interrupt (alias yields_on_interrupt)
      - must_not_interrupt: true                           # or {max_overlap: 0.3, turn: 2}
      - metric: {name: dead_air_ratio, max: 0.5}
      - python: checks/refund.py:mentions_policy           # or module:function (see rolekit.evaluate.custom)

`turn` is the 0-based index of a user turn in `user:`; a text check with a turn looks at what the
agent said after that user turn started and before the next user turn started.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TextCheck(_Strict):
    """A check on the agent's words. Exactly one of contains / any_of / regex."""

    contains: str | list[str] | None = (
        None  # every string must occur (case-insensitive unless case_sensitive)
    )
    any_of: list[str] | None = None  # at least one must occur
    regex: str | None = None  # re.search on the transcript text
    source: Literal["whisper", "monologue"] = "whisper"
    turn: int | None = Field(default=None, ge=0, le=10_000)
    case_sensitive: bool = False
    # judge only Whisper words whose confidence (probability, 0-1) is at least this
    min_confidence: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_kind(self) -> TextCheck:
        given = [k for k in ("contains", "any_of", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of contains, any_of, regex")
        if self.min_confidence is not None and self.source != "whisper":
            raise ValueError("min_confidence applies to source: whisper (the text stream has no confidences)")
        if self.any_of is not None and not self.any_of:
            raise ValueError("any_of needs at least one string")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return v

    @property
    def strings(self) -> list[str]:
        """The literal strings of contains / any_of."""
        if self.contains is not None:
            return [self.contains] if isinstance(self.contains, str) else list(self.contains)
        return list(self.any_of or [])


class LatencyCheck(_Strict):
    """Response latency (user turn end -> first agent speech) must stay under `max` seconds."""

    max: float = Field(gt=0, le=1e6)
    turn: int | None = Field(default=None, ge=0, le=10_000)
    stat: Literal["each", "mean", "p90"] = "each"  # each turn / mean over turns / 90th percentile


class YieldCheck(_Strict):
    """At each scripted interrupt the agent stops speaking within `within` seconds."""

    within: float = Field(default=2.0, gt=0, le=1e6)
    turn: int | None = Field(default=None, ge=0, le=10_000)


class NoInterruptCheck(_Strict):
    """The agent never starts speaking while the user speaks (overlap at its start <= max_overlap s)."""

    max_overlap: float = Field(default=0.0, ge=0, le=1e6)
    turn: int | None = Field(default=None, ge=0, le=10_000)


class MetricCheck(_Strict):
    """A named metric from rolekit.evaluate's metrics.json within [min, max]."""

    name: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> MetricCheck:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


_PY_FILE_CHECK = re.compile(r"^(?P<file>[^:]+\.py):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")
_PY_MODULE_CHECK = re.compile(
    r"^(?P<module>[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$"
)


def python_check_target(spec: str) -> tuple[str, str, str]:
    """`file.py:function` -> ("file", path, function); `pkg.module:function` -> ("module", name, function).

    Raises ValueError for anything else. Where a file may live (inside the scenario's folder, since
    scenario files are untrusted) is checked by `rolekit.scenario.schema.check_file`.
    """
    m = _PY_FILE_CHECK.match(spec)
    if m is not None:
        return "file", m.group("file"), m.group("func")
    m = _PY_MODULE_CHECK.match(spec)
    if m is not None:
        return "module", m.group("module"), m.group("func")
    raise ValueError("write `path/to/file.py:function` (relative to the scenario file) or `module:function`")


AssertionKind = Literal[
    "agent_says", "not_says", "max_response_latency", "must_yield", "must_not_interrupt", "metric", "python"
]


class Expectation(_Strict):
    """One item of `expect:` (exactly one key set). Use `.kind` and `.check`."""

    agent_says: TextCheck | None = None
    not_says: TextCheck | None = None
    max_response_latency: LatencyCheck | None = None
    must_yield: YieldCheck | None = None
    must_not_interrupt: NoInterruptCheck | None = None
    metric: MetricCheck | None = None
    # a custom check: `file.py:function` (relative to the scenario file) or `module:function`
    python: str | None = None
    description: str | None = None  # shown in reports instead of the generated label

    @field_validator("python")
    @classmethod
    def _python_target(cls, v: str | None) -> str | None:
        if v is not None:
            python_check_target(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "yields_on_interrupt" in data and "must_yield" not in data:
            data["must_yield"] = data.pop("yields_on_interrupt")
        if "not_contains" in data and "not_says" not in data:
            value = data.pop("not_contains")
            data["not_says"] = {"contains": value} if isinstance(value, (str, list)) else value
        lat = data.get("max_response_latency")
        if isinstance(lat, (int, float)) and not isinstance(lat, bool):
            data["max_response_latency"] = {"max": lat}
        for key in ("must_yield", "must_not_interrupt"):
            if data.get(key) is True:
                data[key] = {}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Expectation:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"each expect item needs exactly one of: {', '.join(_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) is not None)

    @property
    def check(self) -> TextCheck | LatencyCheck | YieldCheck | NoInterruptCheck | MetricCheck | str:
        return getattr(self, self.kind)

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. `agent_says any_of ['refund']`."""
        if self.description:
            return self.description
        if isinstance(self.check, str):
            return f"{self.kind} {self.check}"
        args = self.check.model_dump(exclude_defaults=True)
        return f"{self.kind} " + ", ".join(f"{k}={v!r}" for k, v in args.items())


_KINDS = (
    "agent_says",
    "not_says",
    "max_response_latency",
    "must_yield",
    "must_not_interrupt",
    "metric",
    "python",
)
