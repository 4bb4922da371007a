"""`rolekit init`, `rolekit persona new`, `rolekit scenario new`, `rolekit schema persona|scenario`."""

from __future__ import annotations

from pathlib import Path

import typer

from rolekit.cli.user_input import user_errors

scenario_app = typer.Typer(
    help="Scenario files: scripted conversations and their checks.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app (and `new` to the persona group)."""
    from rolekit.cli.persona import persona_app

    app.command("init")(init)
    app.command("schema")(schema)
    persona_app.command("new")(persona_new)
    scenario_app.command("new")(scenario_new)
    app.add_typer(scenario_app, name="scenario")


def _report(done: object) -> None:
    for p in getattr(done, "written", []):
        typer.echo(f"wrote {p}")
    for p in getattr(done, "kept", []):
        typer.echo(f"kept  {p} (already there)")


def init(
    folder: Path = typer.Argument(Path("."), help="Project folder (created if missing)."),
    persona: str = typer.Option("my-agent", "--persona", help="Name of the sample persona."),
    role: str = typer.Option("customer-service", "--role", help="Role of the sample persona."),
) -> None:
    """Start a project: personas/, scenarios/, schemas/, a sample persona and scenario, conftest.py, .gitignore."""
    from rolekit.scaffold.files import check_name, init_project

    with user_errors():
        check_name(persona, "persona")
        done = init_project(folder, persona, role)
    _report(done)
    typer.echo(
        f"next: cd {folder} && rolekit test --model tiny --no-transcribe   (random weights: a dry run)"
    )


def persona_new(
    name: str = typer.Argument(..., help="Persona name (file personas/NAME.yaml)."),
    role: str = typer.Option(
        "assistant", "--role", help="assistant | customer-service | tutor | casual | outbound-caller"
    ),
    voice: str | None = typer.Option(None, "--voice", help="Voice preset (default: one suited to the role)."),
    folder: Path = typer.Option(Path("personas"), "--dir", help="Folder of the new file."),
) -> None:
    """Write personas/NAME.yaml in NVIDIA's trained prompt form for the role (never overwrites)."""
    from rolekit.scaffold.files import new_persona

    with user_errors():
        if voice is not None:
            from rolekit.frames import VOICES

            if voice.upper() not in VOICES:
                from rolekit.errors import ConfigError

                raise ConfigError(f"--voice {voice!r}: use one of {', '.join(VOICES)}")
            voice = voice.upper()
        done = new_persona(name, role, voice, folder)
    _report(done)


def scenario_new(
    name: str = typer.Argument(..., help="Scenario name (file scenarios/NAME.yaml)."),
    persona: str = typer.Option(..., "--persona", "-p", help="Persona name or path the scenario talks to."),
    folder: Path = typer.Option(Path("scenarios"), "--dir", help="Folder of the new file."),
) -> None:
    """Write scenarios/NAME.yaml: a greeting window, a reactive turn, a barge-in and checks (never overwrites)."""
    from rolekit.scaffold.files import new_scenario

    with user_errors():
        done = new_scenario(name, persona, folder)
    _report(done)


def schema(
    kind: str = typer.Argument(..., help="persona | scenario"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print (or write) the JSON Schema of persona or scenario files, generated from rolekit's models."""
    import json

    from rolekit.scaffold.schema import json_schema, write_schema

    with user_errors():
        if out is None:
            typer.echo(json.dumps(json_schema(kind), indent=1))
            return
        write_schema(kind, out)
    typer.echo(f"wrote {out}")
