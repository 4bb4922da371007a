"""`rolekit persona ...` and `rolekit voices`: output, JSON, exit codes 0/1/2, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import rolekit
from rolekit.cli.app import main
from rolekit.text import TINY_TOKENIZER, TOKENIZER_FILE

REPO = Path(rolekit.__file__).resolve().parent.parent
DESK = """
name: desk
description: a test desk
role: customer-service
voice: NATF2
variables:
  company: {default: Contoso}
  agent: {required: true}
prompt: |
  You work for {{ company }} which is a bank and your name is {{ agent }}.
  Information: the branch opens at nine.
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err


@pytest.fixture
def project(write: Callable[..., Path], pdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder whose ./personas holds `desk`; the CLI runs from it."""
    write("desk", DESK)
    monkeypatch.chdir(pdir.parent)
    return pdir.parent


def test_list_shows_local_and_packaged_personas(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "persona", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["desk"]["role"] == "customer-service"
    assert {"refund-desk", "spanish-tutor", "dental-receptionist", "appointment-caller"} <= set(rows)
    code, out, _ = run(capsys, "persona", "list")
    assert code == 0 and "desk" in out


def test_show(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "persona", "show", "desk")
    assert code == 0 and "customer-service" in out and "{{ company }}" in out and "agent" in out
    code, out, _ = run(capsys, "persona", "show", "desk", "--json")
    data = json.loads(out)
    assert data["variables"]["agent"]["required"] is True and data["source"].endswith("desk.yaml")


def test_render(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "persona", "render", "desk", "--var", "agent=Maya", "--var", "company=Fabrikam"
    )
    assert code == 0
    assert (
        out.strip()
        == "You work for Fabrikam which is a bank and your name is Maya. Information: the branch opens at nine."
    )
    code, out, _ = run(capsys, "persona", "render", "desk", "--var", "agent=Maya", "--wrapped")
    assert out.startswith("<system> You work for Contoso") and out.rstrip().endswith("nine. <system>")


def test_compile_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "persona", "compile", "desk", "--var", "agent=Maya", "--json")
    plan = json.loads(out)
    # the tiny model's presets are generated with it: their length is known (E stored embeddings + 1)
    assert code == 0 and plan["voice"] == "NATF2" and plan["voice_frames"] > 1
    assert plan["prefill_frames"] == plan["voice_frames"] + 12 + plan["text_tokens"]
    assert plan["text_tokens"] == len(plan["text_ids"])
    assert plan["remaining_frames"] == 3000 - plan["prefill_frames"]
    assert (
        plan["wrapped_text"] == f"<system> {plan['rendered_text']} <system>"
        and len(plan["content_hash"]) == 64
    )
    code, out, _ = run(capsys, "persona", "compile", "desk", "--var", "agent=Maya")
    assert code == 0 and "content_hash" in out and "remaining_frames" in out


def test_compile_against_a_model_folder_counts_voice_frames(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    model = project / "model"
    (model / "voices").mkdir(parents=True)
    (model / TOKENIZER_FILE).write_bytes(TINY_TOKENIZER.read_bytes())
    save_file(
        {"embeddings": np.zeros((48, 1, 1, 4), np.float32)}, str(model / "voices" / "NATF2.safetensors")
    )
    code, out, _ = run(
        capsys, "persona", "compile", "desk", "--var", "agent=Maya", "--model", str(model), "--json"
    )
    plan = json.loads(out)
    assert (
        code == 0 and plan["voice_frames"] == 49 and plan["prefill_frames"] == 49 + 12 + plan["text_tokens"]
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("persona", "render", "desk"), "desk.yaml:9: variables.agent: missing value"),
        (("persona", "render", "desk", "--var", "agent"), "expected NAME=VALUE"),
        (("persona", "render", "desk", "--var", "agent=M", "--var", "x=1"), "--var x: not declared"),
        (("persona", "show", "nobody"), "no persona named 'nobody'"),
        (
            ("persona", "compile", "desk", "--var", "agent=M", "--model", "/nonexistent/model"),
            "no such model folder",
        ),
        (("persona", "lint", "missing-dir"), "no such file or folder"),
    ],
)
def test_bad_input_exits_2_with_one_message(
    project: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and "Traceback" not in out + err


def test_lint_exit_codes(
    project: Path, write: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "persona", "lint")
    assert code == 0 and "0 error(s), 0 warning(s)" in out
    warn = write("warn", "role: casual\nprompt: You like chatting.\n")
    code, out, _ = run(capsys, "persona", "lint", str(warn))
    assert code == 0 and "template-form" in out
    code, _, _ = run(capsys, "persona", "lint", "--strict", str(warn))
    assert code == 1
    bad = write("bad", "role: assistant\nprompt: You are X.\n")
    code, out, _ = run(capsys, "persona", "lint", "--json")
    findings = json.loads(out)
    assert code == 1 and {f["rule"] for f in findings} == {"placeholder", "template-form"}
    assert any(f["file"] == str(bad.resolve()) and f["line"] == 2 for f in findings)


def test_voices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "voices", "--json")
    assert (
        code == 0
        and [v["name"] for v in json.loads(out)][:2] == ["NATF0", "NATF1"]
        and len(json.loads(out)) == 18
    )
    code, out, _ = run(capsys, "voices")
    assert code == 0 and "VARM4" in out


def test_python_dash_m_and_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    ok = subprocess.run(
        [sys.executable, "-m", "rolekit", "persona", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert ok.returncode == 0 and "compile" in ok.stdout and "lint" in ok.stdout
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "broken.yaml").write_text("name: broken\nprompt: [unclosed\n")
    bad = subprocess.run(
        [sys.executable, "-m", "rolekit", "persona", "compile", "broken"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "broken.yaml:" in bad.stderr and "Traceback" not in bad.stderr + bad.stdout
