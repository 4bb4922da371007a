"""`rolekit doctor [--json] [--for COMMAND]`: what this machine has for rolekit, each gap with its fix.

Exit 1 when a check that COMMAND (default: run) needs has failed; 0 otherwise (warnings are slow
or reduced paths, printed with their fix).
"""

from __future__ import annotations

import json

import typer

from rolekit.errors import ConfigError
from rolekit.hub import DEFAULT_MODEL, MODEL_ENV

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "--  "}


def register(app: typer.Typer) -> None:
    """Add `doctor` to the rolekit app."""
    app.command("doctor")(doctor)


def doctor(
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of text."),
    command: str = typer.Option(
        "run", "--for", help="The next command to check for: demo, run, test, live or transcribe."
    ),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", envvar=MODEL_ENV, help="The model the next command will use."
    ),
    quick: bool = typer.Option(False, "--quick", help="Skip the OpenBLAS speed probe (two child processes)."),
) -> None:
    """Check MLX and its device, OpenBLAS, TTS, PortAudio and devices, Whisper, caches, CUDA kernels, the hub."""
    from rolekit.doctor.checks import COMMANDS, needed_failures, run_checks

    if command not in COMMANDS:
        raise ConfigError(f"--for: unknown command {command!r} (use one of: {', '.join(COMMANDS)})")
    checks = run_checks("tiny" if command == "demo" else model, gemm=not quick)
    failures = needed_failures(checks, command)
    if as_json:
        doc = {"for": command, "ok": not failures, "checks": [c.to_dict() for c in checks]}
        typer.echo(json.dumps(doc, indent=1))
    else:
        for c in checks:
            typer.echo(f"{_MARK[c.status]}  {c.name:13} {c.detail}")
            if c.fix and c.status in ("warn", "fail"):
                typer.echo(f"{'':6}{'':13} fix: {c.fix}")
        if failures:
            names = ", ".join(c.name for c in failures)
            typer.echo(f"`rolekit {command}` needs what failed: {names}")
        else:
            typer.echo(f"ready for `rolekit {command}`")
    if failures:
        raise typer.Exit(1)
