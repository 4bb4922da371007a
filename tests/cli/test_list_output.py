"""List commands print full names: piped (tab-separated lines) and on an 80-column terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from rich.console import Console

from rolekit.cli.tables import print_table

SAMPLES = {"refund-desk", "refund-desk-contoso", "spanish-tutor", "dental-receptionist", "appointment-caller"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rolekit", *args], capture_output=True, text=True, timeout=120
    )


def test_persona_list_piped_prints_full_names_one_per_line(tmp_path):
    out = _cli("persona", "list")
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert rows[0] == ["name", "role", "voice", "description", "file"]
    assert SAMPLES <= {r[0] for r in rows[1:]} and all(len(r) == 5 for r in rows)
    assert "…" not in out.stdout and "\x1b" not in out.stdout
    as_json = json.loads(_cli("persona", "list", "--json").stdout)
    assert [r["name"] for r in as_json] == [r[0] for r in rows[1:]]


def test_voices_piped_and_json():
    out = _cli("voices")
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert out.returncode == 0 and rows[0] == ["voice", "gender", "style", "description"] and len(rows) == 19
    assert [r["name"] for r in json.loads(_cli("voices", "--json").stdout)] == [r[0] for r in rows[1:]]


def test_an_80_column_terminal_keeps_names_whole():
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None, highlight=False)
    long = "appointment-caller-with-a-very-long-name"
    rows = [
        [long, "outbound-caller", "NATM1", "Calls customers to confirm appointments. " * 3, "/a/b/c.yaml"]
    ]
    print_table(["name", "role", "voice", "description", "file"], rows, full=("name",), console=console)
    text = buf.getvalue()
    assert long in text and "…" not in text
