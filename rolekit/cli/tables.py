"""Tables of the list commands (`persona list`, `voices`, `devices`): full values, on a terminal or not.

On a terminal: a rich table whose `full` columns (names) never wrap or truncate; other columns wrap.
Piped or redirected: tab-separated lines, the header first, every value whole, so `cut`, `grep`
and `awk` see full names. `--json` on each command gives the same rows as JSON.
"""

from __future__ import annotations

import sys
from typing import Any

import typer


def print_table(
    columns: list[str],
    rows: list[list[str]],
    title: str | None = None,
    full: tuple[str, ...] = (),
    console: Any = None,
) -> None:
    """Print `rows` under `columns` (see the module docstring); `console` forces the rich path (tests)."""
    if console is None and not sys.stdout.isatty():
        typer.echo("\t".join(columns))
        for row in rows:
            typer.echo("\t".join(_cell(v) for v in row))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        if col in full:
            width = max([len(col), *(len(r[i]) for r in rows)])
            table.add_column(col, no_wrap=True, min_width=width)
        else:
            table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(escape(v) for v in row))
    (console or Console(highlight=False, soft_wrap=False)).print(table)


def _cell(value: str) -> str:
    return " ".join(str(value).split("\t")).replace("\n", " ")
