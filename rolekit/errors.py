"""Errors that reach the user. LEAF module: imports nothing from rolekit.

Each error names file, line and field where known; the CLI prints them without a traceback and
exits with code 2.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input document."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class RolekitError(Exception):
    """Base class for every error rolekit reports to a user (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        self.problems = list(problems or [])
        if not message and self.problems:
            message = "\n".join(str(p) for p in self.problems)
        super().__init__(message)


class DocumentError(RolekitError):
    """A persona, scenario or other YAML document is invalid (all problems collected)."""


class TemplateError(DocumentError):
    """A persona template does not render."""


class ModelError(RolekitError):
    """A checkpoint or model folder is missing, corrupt or incomplete."""


class AudioInputError(RolekitError):
    """An audio file or buffer cannot be used (empty, NaN/Inf, unreadable)."""


class DeviceError(RolekitError):
    """No audio device, no PortAudio, or the device failed."""


class KernelError(RolekitError):
    """rolekit's CUDA kernels cannot be built here: NVRTC or CUDA's headers are missing, or NVRTC
    refused a kernel."""


class ConfigError(RolekitError):
    """A command-line option or configuration value is invalid."""
