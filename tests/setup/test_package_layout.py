"""The package stays readable: no module of rolekit/ over 400 lines (a kernel's launcher and
dispatcher beside its ops reference fit; anything longer is split by what it owns)."""

from __future__ import annotations

from pathlib import Path

import rolekit

MAX_LINES = 400


def test_no_module_of_the_package_is_over_400_lines():
    root = Path(rolekit.__file__).parent
    modules = sorted(root.rglob("*.py"))
    assert len(modules) > 50  # the package, not an empty folder
    long = {
        str(p.relative_to(root)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
