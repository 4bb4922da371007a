"""Scenario files (`scenarios/*.yaml`): pydantic schema (extra=forbid) and loading with file:line:field errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rolekit.errors import DocumentError, Problem
from rolekit.persona.paths import contained, resolve_named
from rolekit.scenario.baseline import BaselinePolicy
from rolekit.scenario.expect import Expectation, python_check_target
from rolekit.yamldoc import YamlDoc, field_name, load_yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_SECONDS = 240.0  # the model's whole context (3000 frames): no time in a scenario can be longer
MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit (MLX keys take any uint64; numpy/torch take 32 bits)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TtsOptions(_Strict):
    """How `say:` text is spoken: backend (auto = `say` on macOS, espeak-ng elsewhere), voice, rate (words/min)."""

    backend: Literal["auto", "espeak-ng", "say"] = "auto"
    voice: str | None = None  # backend voice name; None = backend default (espeak-ng: en-us)
    rate: int = Field(default=170, ge=60, le=450)


class Interrupt(_Strict):
    """Barge-in: start this turn `after_agent_starts` seconds after the agent starts speaking."""

    after_agent_starts: float = Field(ge=0, le=MAX_SECONDS)


class UserTurn(_Strict):
    """One item of `user:`: what the user does (say / audio / pause) and when (default: right after the previous one)."""

    say: str | None = None
    audio: str | None = None  # a file, relative to the scenario file
    pause: float | None = Field(
        default=None, gt=0, le=MAX_SECONDS
    )  # silence in which the user keeps the floor
    at: float | None = Field(
        default=None, ge=0, le=MAX_SECONDS
    )  # absolute start, s from the conversation start
    after: Literal["agent_done"] | None = None
    silence: float = Field(default=0.8, gt=0, le=MAX_SECONDS)  # agent silence that counts as "done"
    timeout: float = Field(default=10.0, gt=0, le=MAX_SECONDS)  # give up waiting for the agent after this
    interrupt: Interrupt | None = None
    voice: str | None = None  # TTS voice for this turn (overrides tts.voice)
    rate: int | None = Field(default=None, ge=60, le=450)
    gain_db: float = Field(default=0.0, ge=-40, le=20)

    @model_validator(mode="after")
    def _consistent(self) -> UserTurn:
        content = [k for k in ("say", "audio", "pause") if getattr(self, k) is not None]
        if len(content) != 1:
            raise ValueError("each user turn needs exactly one of say, audio, pause")
        timing = [k for k in ("at", "after", "interrupt") if getattr(self, k) is not None]
        if len(timing) > 1:
            raise ValueError(f"use only one of at, after, interrupt (got {', '.join(timing)})")
        if self.say is not None and not self.say.strip():
            raise ValueError("say: text is empty")
        return self

    @property
    def kind(self) -> str:
        """Event kind of this turn: say | audio | pause | interrupt."""
        if self.interrupt is not None:
            return "interrupt"
        return "say" if self.say is not None else "audio" if self.audio is not None else "pause"

    @property
    def trigger(self) -> str:
        if self.at is not None:
            return "at"
        if self.after is not None:
            return "agent_done"
        if self.interrupt is not None:
            return "interrupt"
        return "sequential"

    @property
    def is_reactive(self) -> bool:
        return self.after is not None or self.interrupt is not None


class Scenario(_Strict):
    """A scripted conversation with a persona, and what must hold afterwards."""

    name: str = ""
    description: str = ""
    persona: str = Field(min_length=1)  # persona name (personas/<name>.yaml) or a path
    vars: dict[str, Any] = Field(default_factory=dict)
    voice: str | None = None  # override the persona's voice preset
    matrix: dict[str, list[Any]] = Field(default_factory=dict)  # var -> values; key `persona`/`voice` too
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    repeats: int = Field(default=1, ge=1, le=1000)
    lead_in: float = Field(default=2.0, ge=0, le=MAX_SECONDS)  # silence before the first user turn
    tail: float = Field(default=8.0, ge=0, le=MAX_SECONDS)  # seconds after the last user turn for the reply
    tts: TtsOptions = Field(default_factory=TtsOptions)
    vad_threshold_db: float = Field(
        default=-40.0, ge=-200, le=0
    )  # agent frame RMS (dBFS) that counts as speech
    user: list[UserTurn] = Field(min_length=1)
    expect: list[Expectation] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    baseline: BaselinePolicy = Field(default_factory=BaselinePolicy)  # regression bounds (--baseline)

    @model_validator(mode="after")
    def _checks(self) -> Scenario:
        if self.name and not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '-', '_', '.'")
        for key, values in self.matrix.items():
            if not values:
                raise ValueError(f"matrix.{key}: give at least one value")
        if self.seed + self.repeats - 1 > MAX_SEED:
            raise ValueError(f"seed + repeats - 1 must be at most {MAX_SEED}")
        return self


class LoadedScenario(BaseModel):
    """A validated scenario plus where it came from (for paths and error lines)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    scenario: Scenario
    path: Path
    doc: YamlDoc

    @property
    def name(self) -> str:
        return self.scenario.name or self.path.stem

    def problem(self, message: str, loc: tuple[Any, ...]) -> Problem:
        return Problem(message, str(self.path), self.doc.line_of(loc), field_name(loc))

    def check_file(self, spec: str) -> Path | None:
        """The file of a `python: file.py:function` check (None for `module:function`); ValueError
        when it is missing or resolves outside the scenario's folder (symlinks included)."""
        return check_file(self.path, spec)

    def audio_path(self, turn: int) -> Path:
        rel = Path(self.scenario.user[turn].audio or "").expanduser()
        return rel if rel.is_absolute() else self.path.parent / rel

    def named_path(self, name: str, loc: tuple[Any, ...]) -> Path:
        """A path named by this scenario (relative to its folder), checked to lie inside that folder
        (or a folder allowed with --allow-path): rolekit.persona.paths."""
        return resolve_named(
            self.path,
            name,
            loc[-1] if isinstance(loc[-1], str) else "path",
            self.doc.line_of(loc),
            field_name(loc),
        )


def check_file(scenario_file: Path, spec: str) -> Path | None:
    """See `LoadedScenario.check_file`; also used when a saved run is evaluated again."""
    kind, target, _ = python_check_target(spec)
    if kind != "file":
        return None
    root = Path(scenario_file).resolve().parent
    path = (root / target).resolve()
    if not contained(path, root):  # rolekit.persona.paths: the document's root or --allow-path folders
        raise ValueError(
            f"{target}: resolves to {path}, outside the scenario's folder {root} (allow a folder with --allow-path)"
        )
    if not path.is_file():
        raise ValueError(f"no such check file: {root / target}")
    return path


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and validate a scenario file; every problem is reported with file:line:field (DocumentError)."""
    path = Path(path)
    if not path.is_file():
        raise DocumentError(problems=[Problem("no such scenario file", str(path))])
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise DocumentError(problems=[Problem("a scenario must be a YAML mapping", str(path), 1)])
    try:
        scenario = Scenario.model_validate(doc.data)
    except ValidationError as exc:
        raise DocumentError(problems=_problems(exc, doc)) from None
    loaded = LoadedScenario(scenario=scenario, path=path, doc=doc)
    problems = []
    for i, turn in enumerate(scenario.user):
        if turn.audio is None:
            continue
        try:
            loaded.named_path(turn.audio, ("user", i, "audio"))
        except DocumentError as exc:
            problems.extend(exc.problems)
            continue
        if not loaded.audio_path(i).is_file():
            problems.append(
                loaded.problem(f"no such audio file: {loaded.audio_path(i)}", ("user", i, "audio"))
            )
    for i, item in enumerate(scenario.expect):
        if item.python is not None:
            try:
                loaded.check_file(item.python)
            except ValueError as exc:
                problems.append(loaded.problem(str(exc), ("expect", i, "python")))
        turn = getattr(item.check, "turn", None)
        if turn is not None and turn >= len(scenario.user):
            msg = f"turn {turn} does not exist (user has {len(scenario.user)} turns, numbered from 0)"
            problems.append(loaded.problem(msg, ("expect", i, item.kind, "turn")))
    if problems:
        raise DocumentError(problems=problems)
    return loaded


def _problems(exc: ValidationError, doc: YamlDoc) -> list[Problem]:
    out = []
    for err in exc.errors():
        # Drop pydantic's union/function tags so the location matches the YAML path.
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
        )
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(Problem(msg, doc.file, doc.line_of(loc), field_name(loc) or None))
    return sorted(out, key=lambda p: p.line or 0)
