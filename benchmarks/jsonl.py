"""One JSON line per result: printed, and appended to a file when one is given (lab scripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(out: Path | None, row: dict[str, Any]) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(line + "\n")
