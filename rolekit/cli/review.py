"""CLI commands (work in progress: filled in by the owning issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
