"""`rolekit demo` (the README's first command) runs the main job end to end on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_a_scripted_conversation_from_an_empty_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rolekit", "demo", "--no-transcribe", "--out", str(tmp_path / "out")],
        cwd=tmp_path,  # no personas/ or scenarios/ here: the packaged samples are used
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "refund-desk" in proc.stdout and "needs --var patient_name=..." in proc.stdout
    (run_dir,) = (tmp_path / "out" / "refund-late-delivery").iterdir()
    for name in ("conversation.wav", "monologue.json", "metrics.json", "assertions.json", "report.html"):
        assert (run_dir / name).is_file(), name
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["persona"] == "refund-desk" and meta["is_random_model"] is True
    assert "random weights" in proc.stdout
