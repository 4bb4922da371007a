"""`rolekit persona list | show | render | compile | lint` and `rolekit voices`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from rolekit.cli.user_input import parse_vars, user_errors
from rolekit.errors import ConfigError, RolekitError
from rolekit.hub import MODEL_ENV

persona_app = typer.Typer(
    help="Design personas: a YAML file with a Jinja prompt, variables and one of 18 voices.",
    no_args_is_help=True,
)

_VAR = typer.Option(None, "--var", "-v", help="Template variable NAME=VALUE (repeatable).")
_JSON = typer.Option(False, "--json", help="Print plain JSON.")
_MODEL = typer.Option(
    "tiny",
    "--model",
    "-m",
    envvar=MODEL_ENV,
    help="Tokenizer/voices source: tiny, a model folder or a HF repo id.",
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
    app.add_typer(persona_app, name="persona")
    app.command("voices")(voices)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@persona_app.command("list")
def list_cmd(as_json: bool = _JSON) -> None:
    """List the personas on the search path (./personas, then rolekit's samples)."""
    from rolekit.persona.loader import list_personas, load_persona

    with user_errors():
        rows = []
        for path in list_personas():
            try:
                p = load_persona(path)
                rows.append(
                    {
                        "name": p.name,
                        "role": p.role,
                        "voice": p.voice,
                        "description": p.description,
                        "file": str(path),
                    }
                )
            except RolekitError as exc:
                rows.append(
                    {
                        "name": path.stem,
                        "role": "",
                        "voice": "",
                        "description": f"INVALID: {exc}",
                        "file": str(path),
                    }
                )
    if as_json:
        _print_json(rows)
        return
    from rolekit.cli.tables import print_table

    cols = ["name", "role", "voice", "description", "file"]
    print_table(cols, [[str(r[k]) for k in cols] for r in rows], title="personas", full=("name",))


@persona_app.command("show")
def show(name: str = typer.Argument(..., help="Persona name or path."), as_json: bool = _JSON) -> None:
    """Show a persona: role, voice, variables, sampling and its prompt template."""
    from rolekit.persona.loader import load_persona

    with user_errors():
        p = load_persona(name)
    data = p.model_dump() | {"source": str(p.source), "extends_chain": p.chain}
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{_escape(p.name)}[/] — {_escape(p.description)}")
    console.print(
        f"role: {p.role}   voice: {_escape(p.voice)}   language: {p.language}   file: {_escape(str(p.source))}"
    )
    if len(p.chain) > 1:
        console.print("extends: " + _escape(" -> ".join(p.chain[1:])))
    if p.sampling.overrides():
        console.print(f"sampling: {p.sampling.overrides()}")
    table = Table("variable", "type", "default", "required", "description")
    for var, spec in p.variables.items():
        default = "" if spec.default is None else repr(spec.default)
        table.add_row(
            var, spec.type, _escape(default), "yes" if spec.is_required else "", _escape(spec.description)
        )
    if p.variables:
        console.print(table)
    console.print("[bold]prompt template[/]")
    console.print(_escape(p.prompt or ""))


@persona_app.command("render")
def render(
    name: str = typer.Argument(..., help="Persona name or path."),
    var: list[str] = _VAR,
    wrapped: bool = typer.Option(
        False, "--wrapped", help="Add NVIDIA's <system> tags, as the model reads it."
    ),
) -> None:
    """Print the rendered prompt text (what goes between the <system> tags)."""
    from rolekit.persona.compile import wrap_system
    from rolekit.persona.loader import load_persona
    from rolekit.persona.render import render_prompt

    with user_errors():
        text = render_prompt(load_persona(name), parse_vars(var))
    typer.echo(wrap_system(text) if wrapped else text)


@persona_app.command("compile")
def compile_cmd(
    name: str = typer.Argument(..., help="Persona name or path."),
    var: list[str] = _VAR,
    model: str = _MODEL,
    as_json: bool = _JSON,
) -> None:
    """Compile to the prefill plan: voice, silence and text-token frames, context left, content hash."""
    from rolekit.frames import FRAME_RATE
    from rolekit.persona.compile import compile_persona, wrap_system
    from rolekit.persona.loader import load_persona
    from rolekit.text import Tokenizer, tokenizer_path

    with user_errors():
        persona = load_persona(name)
        tokenizer = Tokenizer(tokenizer_path(model))
        frames = voice_frames_for(persona.voice, model)
        plan = compile_persona(persona, parse_vars(var), tokenizer, frames)
    data = {
        "persona": plan.persona,
        "source": str(persona.source),
        "model": model,
        "tokenizer": str(tokenizer.path),
        "voice": plan.voice,
        "voice_frames": plan.voice_frames,
        "silence_frames": plan.silence_frames,
        "text_tokens": len(plan.text_ids),
        "prefill_frames": plan.frames,
        "prefill_seconds": round(plan.frames / FRAME_RATE, 2),
        "remaining_frames": plan.remaining_frames,
        "remaining_seconds": round(plan.remaining_frames / FRAME_RATE, 2),
        "content_hash": plan.content_hash,
        "sampling": plan.sampling,
        "rendered_text": plan.rendered_text,
        "wrapped_text": wrap_system(plan.rendered_text),
        "text_ids": list(plan.text_ids),
    }
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    table = Table("field", "value", title=f"prefill plan: {plan.persona}", show_header=False)
    for key, value in data.items():
        if key == "text_ids":
            value = " ".join(map(str, plan.text_ids[:24])) + (" …" if len(plan.text_ids) > 24 else "")
        if key == "voice_frames" and value is None:
            value = "unknown for presets of this model (not counted)"
        table.add_row(key, _escape(str(value)))
    _console().print(table)


def voice_frames_for(voice: str, model: str) -> int | None:
    """Frames of the voice prompt: read from a voice file, or from the model's preset."""
    from rolekit.persona.voices import is_voice_file, voice_file, voice_frames

    if is_voice_file(voice):
        return voice_frames(Path(voice))
    if model in ("tiny", "random-7b"):
        from rolekit.models import resolve  # builds the embedded model once (its presets are generated)

        return voice_frames(voice_file(resolve(model), voice))
    from rolekit.hub import resolve_model

    folder = resolve_model(model, [f"voices/{voice}.*", "voices*.tgz"])
    return voice_frames(voice_file(folder, voice))


@persona_app.command("lint")
def lint(
    paths: list[Path] = typer.Argument(
        None, help="Persona files or folders (default: ./personas or the samples)."
    ),
    model: str = _MODEL,
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    as_json: bool = _JSON,
) -> None:
    """Check personas: placeholders, length, language, role wording, NVIDIA's prompt forms. Exit 1 on errors."""
    from rolekit.persona.lint import lint_paths
    from rolekit.persona.loader import PACKAGED_PERSONAS
    from rolekit.text import Tokenizer, tokenizer_path

    with user_errors():
        targets = list(paths or [])
        if not targets:
            targets = [Path("personas")] if Path("personas").is_dir() else [PACKAGED_PERSONAS]
        missing = [repr(str(p)) for p in targets if not p.exists()]  # repr: a blank name stays visible
        if missing:
            raise ConfigError(f"PATHS: no such file or folder: {', '.join(missing)}")
        findings = lint_paths(targets, None, Tokenizer(tokenizer_path(model)))
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if as_json:
        _print_json([f.to_dict() for f in findings])
    else:
        console = _console()
        for f in findings:
            color = "red" if f.severity == "error" else "yellow"
            console.print(f"[{color}]{_escape(str(f))}[/]")
        console.print(f"{errors} error(s), {warnings} warning(s)")
    if errors or (strict and warnings):
        raise typer.Exit(1)


def voices(as_json: bool = _JSON) -> None:
    """List the 18 PersonaPlex voice presets."""
    from rolekit.persona.voices import VOICES

    rows = [
        {"name": v.name, "gender": v.gender, "style": v.style, "description": v.description}
        for v in VOICES.values()
    ]
    if as_json:
        _print_json(rows)
        return
    from rolekit.cli.tables import print_table

    table = [[r["name"], r["gender"], r["style"], r["description"]] for r in rows]
    print_table(
        ["voice", "gender", "style", "description"], table, title="PersonaPlex voices", full=("voice",)
    )
