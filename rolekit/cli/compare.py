"""`rolekit compare A B`: two suites or two runs side by side, in the terminal and as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rolekit.cli.user_input import user_errors


def register(app: typer.Typer) -> None:
    """Add `compare` to the rolekit app."""
    app.command("compare")(compare_command)


def compare_command(
    a: Path = typer.Argument(..., help="Run or suite folder A (before: persona v1, model 1, last week)."),
    b: Path = typer.Argument(..., help="Run or suite folder B (after)."),
    html: Path = typer.Option(Path("compare.html"), "--html", help="Write the HTML comparison here."),
    diffs: str = typer.Option(
        "flips",
        "--diffs",
        help="Transcript diffs in the terminal: flips (runs whose checks changed), all, none.",
    ),
) -> None:
    """Per-cell metric deltas, flipped checks and transcript diffs of A -> B; HTML with both recordings."""
    from rolekit.errors import ConfigError
    from rolekit.report.compare import compare, load_side
    from rolekit.report.compare_html import write_compare_html

    with user_errors():
        if diffs not in ("flips", "all", "none"):
            raise ConfigError(f"--diffs {diffs!r}: use flips, all or none")
        comparison = compare(load_side(a), load_side(b))
        if not comparison.pairs and not comparison.cells:
            raise ConfigError(f"{a} and {b} have no scenario/run in common")
        out = write_compare_html(html, comparison)
    print_comparison(comparison, diffs)
    typer.echo(f"wrote {out}")


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def print_comparison(c: Any, diffs: str = "flips") -> None:
    from rich.console import Console
    from rich.table import Table

    from rolekit.report.compare import KEY_METRICS

    console = Console(highlight=False)
    console.print(f"A: {c.a.label}", markup=False)
    console.print(f"B: {c.b.label}", markup=False)
    scen = Table(title="A -> B per scenario")
    for col in ("scenario", "cells", "pass A", "pass B"):
        scen.add_column(col, justify="left" if col == "scenario" else "right")
    by: dict[str, list[Any]] = {}
    for cell in c.cells:
        by.setdefault(cell.scenario, []).append(cell)
    for name, cells in by.items():
        pa, na = sum(x.passed[0] for x in cells), sum(x.runs[0] for x in cells)
        pb, nb = sum(x.passed[1] for x in cells), sum(x.runs[1] for x in cells)
        scen.add_row(name, str(len(cells)), f"{pa}/{na}", _color(f"{pb}/{nb}", _rate_color(pa, na, pb, nb)))
    console.print(scen)
    table = Table(title="A -> B per cell (means over repeats; red = worse, green = better)")
    table.add_column("cell")
    table.add_column("pass", justify="right")
    shown = [m for m in KEY_METRICS if any(m in cell.metrics for cell in c.cells)]
    for m in shown:
        table.add_column(m, justify="right")
    for cell in c.cells:
        (pa, pb), (na, nb) = cell.passed, cell.runs
        row = [
            f"{cell.key}\n[dim]{cell.label}[/]",
            _color(f"{pa}/{na} -> {pb}/{nb}", _rate_color(pa, na, pb, nb)),
        ]
        for m in shown:
            va, vb = cell.metrics.get(m, (None, None))
            worse = cell.worse(m)
            text = f"{_num(va)} -> {_num(vb)}"
            row.append(_color(text, "" if worse is None else "red" if worse else "green"))
        table.add_row(*row)
    console.print(table)
    flipped = [p for p in c.pairs if p.flips]
    for p in flipped:
        console.print(f"[bold]{p.key}[/]: checks that changed")
        for f in p.flips:
            color = "green" if f.after == "pass" else "red"
            console.print(f"  [{color}]{f.before} -> {f.after}[/] ", end="")
            console.print(f"{f.label}: {f.message}", markup=False)
        if p.folder_a is not None and p.folder_b is not None:
            wav = "conversation.wav"
            console.print(f"  listen: A {p.folder_a / wav}  B {p.folder_b / wav}", markup=False)
    for p in c.pairs if diffs == "all" else flipped if diffs == "flips" else []:
        lines = p.unified()
        if lines:
            console.print(f"[bold]{p.key}[/] transcript diff ({p.text_source}):")
            for line in lines:
                style = "red" if line.startswith("-") else "green" if line.startswith("+") else "dim"
                console.print("  " + line, markup=False, style=style)
    if c.only_a:
        console.print(f"only in A: {', '.join(c.only_a)}", markup=False)
    if c.only_b:
        console.print(f"only in B: {', '.join(c.only_b)}", markup=False)
    console.print(f"{len(c.pairs)} runs paired, {len(flipped)} with checks that changed", markup=False)
    if c.random_note:  # one line, never wrapped: the last thing a reader sees
        from rich.markup import escape

        console.print(f"[bold yellow]random weights:[/] {escape(c.random_note)}", soft_wrap=True)


def _rate_color(passed_a: int, runs_a: int, passed_b: int, runs_b: int) -> str:
    """red where B's pass rate is below A's, green where above, "" where equal."""
    a, b = passed_a / max(runs_a, 1), passed_b / max(runs_b, 1)
    return "red" if b < a else "green" if b > a else ""


def _color(text: str, color: str) -> str:
    return f"[{color}]{text}[/]" if color else text
