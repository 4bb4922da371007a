"""The persona document (pydantic, unknown keys are errors). Loading lives in `loader.py`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from rolekit.frames import VOICES

ROLES = ("assistant", "customer-service", "tutor", "casual", "outbound-caller")
VAR_TYPES = ("str", "int", "float", "bool", "list")
VOICE_FILE_SUFFIXES = (".pt", ".safetensors", ".wav")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Role = Literal["assistant", "customer-service", "tutor", "casual", "outbound-caller"]
VarType = Literal["str", "int", "float", "bool", "list"]


class Variable(BaseModel):
    """A template variable the persona declares."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: VarType = "str"
    default: Any = None
    description: str = ""
    required: bool | None = None  # default: required exactly when there is no default

    @property
    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required

    @model_validator(mode="after")
    def _default_has_type(self) -> Variable:
        if self.default is not None and not value_has_type(self.default, self.type):
            raise ValueError(f"default {self.default!r} is not of type {self.type}")
        if isinstance(self.default, float) and not math.isfinite(self.default):
            raise ValueError(f"default {self.default!r} is not a finite number")
        return self


class Sampling(BaseModel):
    """Per-persona overrides of the engine's sampling parameters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    text_temperature: float | None = Field(default=None, ge=0.0, le=5.0)
    text_top_k: int | None = Field(default=None, ge=1)
    audio_temperature: float | None = Field(default=None, ge=0.0, le=5.0)
    audio_top_k: int | None = Field(default=None, ge=1)

    def overrides(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Persona(BaseModel):
    """One persona: who the agent is (prompt template + variables) and how it sounds (voice)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    description: str = ""
    role: Role = "assistant"
    voice: str = "NATF2"
    language: str = "en"
    prompt: str | None = None
    prompt_file: str | None = None
    variables: dict[str, Variable] = Field(default_factory=dict)
    extends: str | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    tags: list[str] = Field(default_factory=list)

    # Where it came from (set by the loader): errors and includes need it.
    _source: Path | None = PrivateAttr(default=None)
    _template_file: str = PrivateAttr(default="<prompt>")
    _template_line: int = PrivateAttr(default=1)  # file line of the template's first line
    _template_dirs: list[Path] = PrivateAttr(default_factory=list)
    _lines: dict[tuple[Any, ...], tuple[str, int]] = PrivateAttr(default_factory=dict)
    _chain: list[str] = PrivateAttr(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits, '.', '_' or '-' (e.g. refund-desk)")
        return value

    @field_validator("voice")
    @classmethod
    def _voice_ok(cls, value: str) -> str:
        if value.upper() in VOICES and "/" not in value:
            return value.upper()
        if value.lower().endswith(VOICE_FILE_SUFFIXES):
            return value
        raise ValueError(
            f"unknown voice {value!r}: use one of {', '.join(VOICES)} "
            f"or a path to a {'/'.join(VOICE_FILE_SUFFIXES)} voice file"
        )

    @field_validator("language")
    @classmethod
    def _language_ok(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("variables")
    @classmethod
    def _variable_names_ok(cls, value: dict[str, Variable]) -> dict[str, Variable]:
        bad = [name for name in value if not _IDENT.match(name)]
        if bad:
            raise ValueError(f"variable names must be identifiers (letters, digits, _): {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> Persona:
        if self.prompt is None and self.prompt_file is None:
            raise ValueError("give the prompt: `prompt:` (inline Jinja) or `prompt_file:` (a template file)")
        if self.prompt is not None and self.prompt_file is not None:
            raise ValueError("give either `prompt:` or `prompt_file:`, not both")
        return self

    # --- provenance (read-only views) ---
    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def template_file(self) -> str:
        return self._template_file

    @property
    def template_line(self) -> int:
        return self._template_line

    @property
    def template_dirs(self) -> list[Path]:
        return list(self._template_dirs)

    @property
    def chain(self) -> list[str]:
        """This persona's file followed by the files it extends."""
        return list(self._chain)

    def where(self, *loc: Any) -> tuple[str | None, int | None]:
        """(file, line) of a field, e.g. where("variables", "company")."""
        key = tuple(loc)
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key[:-1]
        return (str(self._source) if self._source else None, None)


def value_has_type(value: Any, var_type: str) -> bool:
    """Whether an already-typed value fits a declared variable type (bool is not an int here)."""
    if var_type == "str":
        return isinstance(value, str)
    if var_type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if var_type == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if var_type == "bool":
        return isinstance(value, bool)
    return isinstance(value, list)
