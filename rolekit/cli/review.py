"""Review commands: `rolekit report`, `rolekit transcribe`, `rolekit whisper import-ct2`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rolekit.atomic import write_text
from rolekit.errors import ConfigError, Problem, RolekitError
from rolekit.record import RecordError, SessionRecord

whisper_app = typer.Typer(help="Whisper models for transcripts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
    app.command("report")(report)
    app.command("transcribe")(transcribe)
    app.add_typer(whisper_app, name="whisper")


def _find_runs(root: Path) -> list[Path]:
    from rolekit.record import is_complete

    def in_history(p: Path) -> bool:  # <suite>/history/<time>/<scenario>/<run>/meta.json: a snapshot
        parts = p.relative_to(root).parts
        return len(parts) >= 5 and parts[0] == "history"

    return sorted(
        p.parent
        for p in root.rglob("meta.json")
        if is_complete(p.parent) and ".partial" not in str(p) and not in_history(p)
    )


ASR_OPTION = typer.Option(
    None,
    "--asr",
    help="Whisper backend: auto (ct2 on CPU-only machines, mlx on Apple Silicon / CUDA), ct2 or mlx.",
)


def _review(folder: Path, whisper: str | None, do_transcribe: bool, asr: str | None = None) -> Any:
    from rolekit.evaluate.review import review_run
    from rolekit.record import SessionRecord
    from rolekit.transcribe.transcript import load_transcript, write_transcript

    record = SessionRecord.load(folder)
    transcript = load_transcript(folder)
    if do_transcribe and transcript is None:
        from rolekit.transcribe.whisper import transcribe_record

        transcript = transcribe_record(record, whisper, asr=asr)
        write_transcript(folder, transcript)
    return review_run(folder, record=record, transcript=transcript)


def report(
    path: Path = typer.Argument(
        ..., help="A run folder (transcripts/<scenario>/<run-id>) or a suite folder."
    ),
    transcribe_missing: bool = typer.Option(
        False, "--transcribe", help="Transcribe runs that have no transcript.json yet (Whisper)."
    ),
    whisper: str = typer.Option(
        None, "--whisper", help="Whisper model folder or hub id (with --transcribe)."
    ),
    embed_audio: bool = typer.Option(
        True, "--embed-audio/--link-audio", help="Embed the WAV in run reports."
    ),
    asr: str = ASR_OPTION,
) -> None:
    """Evaluate metrics and assertions and write report.html (+ junit.xml and summary.md for a suite)."""
    from rolekit.record import is_complete
    from rolekit.report.html import write_run_report, write_suite_report
    from rolekit.report.junit import write_junit
    from rolekit.report.markdown import summary_markdown
    from rolekit.report.results import random_label, read_results, run_result

    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder")
    if is_complete(path):
        try:
            rev = _review(path, whisper, transcribe_missing, asr)
            out = write_run_report(path, embed_audio=embed_audio)
        except ValueError as exc:  # a malformed transcript / assertions JSON in the folder
            raise RecordError(f"{path}: damaged JSON ({exc})") from None
        counts = {s: sum(r.status == s for r in rev.results) for s in ("pass", "fail", "error")}
        typer.echo(
            f"{'PASS' if rev.passed else 'FAIL'}  {path}  ({counts['pass']} pass, {counts['fail']} fail, {counts['error']} error)"
        )
        for r in rev.results:
            if not r.passed:
                typer.echo(f"  {r.status}: {r.label}: {r.message}")
        for w in rev.warnings:
            typer.echo(f"  warning: {w}")
        note = random_label([run_result(path)])
        if note:
            typer.echo(f"random weights: {note}")
        typer.echo(f"wrote {out}")
        return
    results_file = path / "results.jsonl"
    results = read_results(results_file)
    runs = _find_runs(path)
    if not results and not runs:
        raise ConfigError(
            f"{path}: neither a run folder nor a suite folder (no results.jsonl, no run folders)"
        )
    damaged: dict[Path, str] = {}
    for run in runs:  # a damaged run folder is reported as such; the other runs go on
        try:
            SessionRecord.load(run)  # checks the folder before anything is rewritten from it
            if not results or not (run / "metrics.json").is_file():
                _review(run, whisper, transcribe_missing, asr)
            write_run_report(run, embed_audio=embed_audio)
        except RolekitError as exc:  # RecordError, a malformed transcript, ...
            damaged[run] = str(exc)
        except ValueError as exc:  # a malformed metrics / assertions / transcript JSON next to a good record
            damaged[run] = f"{run}: damaged JSON ({exc})"
    if not results:
        results = [run_result(run, base=path) for run in runs if run not in damaged]
    results = _check_rows(results, path, damaged)
    name = path.resolve().name  # `rolekit report .` names the folder, not ""
    out = write_suite_report(path, results, title=f"rolekit suite: {name}")
    junit = write_junit(path / "junit.xml", results, name=name)
    md = summary_markdown(results, title=f"rolekit suite: {name}")
    write_text(path / "summary.md", md)
    _print_markdown(md)
    typer.echo(f"wrote {out}, {junit}, {path / 'summary.md'}")


def _print_markdown(md: str) -> None:
    """Rendered (tables, bold) on a terminal; the Markdown source when piped, for files and CI logs."""
    import sys

    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(md))
    else:
        typer.echo(md)


def _check_rows(rows: list[dict[str, Any]], suite: Path, damaged: dict[Path, str]) -> list[dict[str, Any]]:
    """Rows whose run folder is gone, incomplete or damaged become explicit errors (`damaged: true`),
    never a pass read from a stale results line."""
    from rolekit.record import is_complete
    from rolekit.report.results import error_result

    out = []
    for row in rows:
        folder = suite / str(row.get("run_dir") or "") if row.get("run_dir") else None
        problem = None
        if folder is not None and folder.resolve() in {d.resolve() for d in damaged}:
            problem = next(msg for d, msg in damaged.items() if d.resolve() == folder.resolve())
        elif folder is not None and not is_complete(folder):
            problem = f"run folder {folder} is missing or incomplete"
        if problem is None:
            out.append(row)
            continue
        keep = {
            k: row.get(k)
            for k in ("persona", "vars", "seed", "repeat", "model_id", "run_dir", "random_model", "model")
        }
        out.append(error_result(row["scenario"], row["run_id"], f"damaged: {problem}", damaged=True, **keep))
    for run, msg in damaged.items():  # damaged runs that results.jsonl does not list
        if not any(r["scenario"] == run.parent.name and r["run_id"] == run.name for r in out):
            out.append(
                error_result(
                    run.parent.name,
                    run.name,
                    f"damaged: {msg}",
                    damaged=True,
                    run_dir=str(run.relative_to(suite)),
                )
            )
    return out


def transcribe(
    run_dir: Path = typer.Argument(..., help="A run folder written by `rolekit run`."),
    whisper: str = typer.Option(
        None,
        "--whisper",
        help="Whisper folder (mlx-whisper or CTranslate2) or Hugging Face repo id (default: tiny.en).",
    ),
    asr: str = ASR_OPTION,
) -> None:
    """Transcribe both channels with Whisper (word times); write transcript.json/.md and refresh metrics."""
    from rolekit.evaluate.review import review_run
    from rolekit.record import SessionRecord
    from rolekit.transcribe.transcript import write_transcript
    from rolekit.transcribe.whisper import transcribe_record

    record = SessionRecord.load(run_dir)
    transcript = transcribe_record(record, whisper, asr=asr)
    j, m = write_transcript(run_dir, transcript)
    review_run(run_dir, record=record, transcript=transcript)
    typer.echo(transcript.markdown(f"Transcript: {run_dir.name}"))
    typer.echo(f"wrote {j}, {m}")


@whisper_app.command("import-ct2")
def import_ct2(
    src: Path = typer.Argument(..., help="CTranslate2 / faster-whisper folder (model.bin, config.json)."),
    dst: Path = typer.Argument(..., help="New mlx-whisper folder (config.json, weights.safetensors)."),
    dtype: str = typer.Option(
        "float32", "--dtype", help="float32 (fastest on CPU) or float16 (half the size)."
    ),
) -> None:
    """Convert a CTranslate2 Whisper model to mlx-whisper's folder format (numpy only)."""
    from rolekit.outputs import check_output_dir
    from rolekit.transcribe.ct2 import convert_ct2

    check_output_dir(dst, "DST")
    if not (src / "model.bin").is_file():
        raise ConfigError(
            problems=[
                Problem(
                    "no model.bin (expected a CTranslate2 / faster-whisper folder)",
                    repr(str(src)),
                    field="SRC",
                )
            ]
        )
    out = convert_ct2(src, dst, dtype)
    typer.echo(f"wrote {out} (use it with --whisper {out})")
