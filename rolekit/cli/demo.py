"""`rolekit demo`: the main job end to end on the embedded tiny model, on a fresh machine, offline.

Compiles the sample personas, then runs one sample scenario (TTS user, full-duplex engine, recording,
Whisper transcripts when a Whisper model is installed, metrics, assertions, HTML report).
"""

from __future__ import annotations

from pathlib import Path

import typer

DEMO_SCENARIO = "refund-late-delivery.yaml"
PACKAGED_SCENARIOS = Path(__file__).resolve().parent.parent / "assets" / "scenarios"


def register(app: typer.Typer) -> None:
    """Add `demo` to the rolekit app."""
    app.command("demo")(demo_command)


def demo_command(
    out: Path = typer.Option(Path("transcripts/demo"), "--out", "-o", help="Where the demo run goes."),
    model: str = typer.Option("tiny", "--model", "-m", help="Model to run (default: the random tiny model)."),
    no_transcribe: bool = typer.Option(False, "--no-transcribe", help="Skip Whisper."),
) -> None:
    """Compile the sample personas and run one scripted conversation on the tiny model."""
    from rich.console import Console
    from rich.table import Table

    from rolekit.cli.persona import voice_frames_for
    from rolekit.errors import DocumentError
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.loader import list_personas, load_persona
    from rolekit.suite.backend import MlxBackend
    from rolekit.suite.execute import SuiteOptions, run_suite
    from rolekit.suite.plan import plan_suite
    from rolekit.text import Tokenizer, tokenizer_path

    console = Console(highlight=False)
    tokenizer = Tokenizer(tokenizer_path(model))
    table = Table(title=f"sample personas (tokenizer of `{model}`)")
    for col in ("persona", "role", "voice", "prefill", "context left"):
        table.add_column(col, no_wrap=True)
    for path in list_personas():
        persona = load_persona(path)
        try:
            plan = compile_persona(persona, {}, tokenizer, voice_frames_for(persona.voice, model))
        except DocumentError as exc:  # e.g. a required variable: show it rather than stop the demo
            names = [(p.field or "").removeprefix("variables.") for p in exc.problems]
            needs = " ".join(f"--var {n}=..." for n in names if n) or str(exc)
            table.add_row(persona.name, str(persona.role), str(persona.voice), "", f"needs {needs}")
            continue
        table.add_row(
            persona.name,
            str(persona.role),
            str(persona.voice),
            f"{plan.frames} frames",
            f"{plan.remaining_frames * 0.08:.0f} s of 240 s",
        )
    console.print(table)

    scenario = Path("scenarios") / DEMO_SCENARIO
    if not scenario.is_file():
        scenario = PACKAGED_SCENARIOS / DEMO_SCENARIO
    runs = plan_suite([scenario], None, 1)[:1]
    console.print(f"running [bold]{runs[0].key}[/] on `{model}` ...")
    options = SuiteOptions(out=out, whisper=None, transcribe=not no_transcribe, resume=False, batch=1)
    from rolekit.cli.progress import suite_progress

    with suite_progress(1) as progress:
        outcome = run_suite(runs, MlxBackend(model), options, progress.listener())
    row = outcome.rows[0]
    if row.get("error") or not row.get("run_dir"):  # the run itself failed (not one of its checks)
        console.print(f"[red]the run failed:[/] {row.get('error')}")
        raise typer.Exit(1)
    run_dir = Path(row["run_dir"])
    if not run_dir.is_absolute():
        run_dir = out / run_dir
    console.print(f"run folder: {run_dir}")
    for name in ("conversation.wav", "transcript.md", "metrics.json", "report.html"):
        if (run_dir / name).exists():
            console.print(f"  {run_dir / name}")
    counts = row.get("assertions") or {}
    console.print(
        f"assertions: {row.get('status')} ({counts.get('fail', 0)} failed, {counts.get('error', 0)} could "
        "not be evaluated)"
    )
    if model == "tiny":
        console.print(
            "[yellow]The tiny model has random weights: it speaks noise, so its assertions are expected to "
            "fail.[/] Point --model at a real PersonaPlex folder or hub id for real conversations."
        )
