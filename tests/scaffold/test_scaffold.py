"""rolekit init / persona new / scenario new / schema: files that load, lint clean, validate and run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from rolekit.errors import ConfigError
from rolekit.persona.compile import compile_persona
from rolekit.persona.lint import lint_paths
from rolekit.persona.loader import load_persona
from rolekit.persona.schema import ROLES
from rolekit.scaffold.files import init_project, new_persona, new_scenario
from rolekit.scaffold.schema import json_schema
from rolekit.scenario.schema import load_scenario
from rolekit.suite.execute import SuiteOptions, run_suite
from rolekit.suite.plan import plan_suite
from rolekit.text import TINY_TOKENIZER, Tokenizer

REPO = Path(__file__).resolve().parents[2]


def _schema_of(doc: Path) -> Path:
    first = doc.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    return (doc.parent / first.split("=", 1)[1]).resolve()


def test_init_writes_a_project_that_lints_validates_and_runs(tmp_path, monkeypatch, fake_tts, fake_backend):
    root = tmp_path / "proj"
    done = init_project(root)
    names = sorted(str(p.relative_to(root)) for p in done.written)
    assert names == [
        ".gitignore",
        "conftest.py",
        "personas/my-agent.yaml",
        "scenarios/my-agent-first-call.yaml",
        "schemas/persona.schema.json",
        "schemas/scenario.schema.json",
    ]
    assert "transcripts/" in (root / ".gitignore").read_text().split()
    assert 'collect_ignore = ["transcripts"]' in (root / "conftest.py").read_text()
    tok = Tokenizer(TINY_TOKENIZER)
    # the sample persona lints without a single finding (no placeholders, NVIDIA's form for its role)
    assert lint_paths([root / "personas"], [root / "personas"], tok) == []
    for doc in (root / "personas" / "my-agent.yaml", root / "scenarios" / "my-agent-first-call.yaml"):
        schema = json.loads(_schema_of(doc).read_text())
        jsonschema.validate(yaml.safe_load(doc.read_text()), schema)
    # and the sample scenario runs through the suite (a fake engine, silent TTS stand-in)
    monkeypatch.chdir(root)
    runs = plan_suite([root / "scenarios"])
    outcome = run_suite(
        runs, fake_backend(), SuiteOptions(out=root / "transcripts", transcribe=False), synth=fake_tts
    )
    (row,) = outcome.rows
    assert row["run_dir"] and row["error"] is None and row["assertions"]["pass"] >= 1
    # a second init keeps every file; a .gitignore without the line gets it appended
    (root / "personas" / "my-agent.yaml").write_text(
        "# mine\n" + (root / "personas" / "my-agent.yaml").read_text()
    )
    (root / ".gitignore").write_text("*.pyc")
    again = init_project(root)
    assert (root / "personas" / "my-agent.yaml").read_text().startswith("# mine\n")
    assert root / "personas" / "my-agent.yaml" in again.kept
    assert (
        (root / ".gitignore").read_text()
        == "*.pyc\n# rolekit run folders (audio, transcripts, reports) and its history snapshots\ntranscripts/\n"
    )


@pytest.mark.parametrize("role", ROLES)
def test_persona_new_for_every_role_loads_compiles_and_lints_clean(tmp_path, role):
    done = new_persona(f"p-{role}", role, None, tmp_path / "personas")
    path = tmp_path / "personas" / f"p-{role}.yaml"
    assert path in done.written
    persona = load_persona(path, [tmp_path / "personas"])
    assert persona.role == role
    tok = Tokenizer(TINY_TOKENIZER)
    assert compile_persona(persona, {}, tok, None).frames > 0
    assert lint_paths([path], [tmp_path / "personas"], tok) == []
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(_schema_of(path).read_text()))


def test_new_refuses_to_overwrite_and_bad_names(tmp_path):
    new_scenario("hello", "shop", tmp_path / "scenarios")
    path = tmp_path / "scenarios" / "hello.yaml"
    before = path.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        new_scenario("hello", "other", tmp_path / "scenarios")
    assert path.read_text() == before
    assert load_scenario(path).scenario.persona == "shop"
    with pytest.raises(ConfigError, match="name 'Bad Name'"):
        new_persona("Bad Name", "tutor", None, tmp_path / "personas")
    with pytest.raises(ConfigError, match="--role 'pirate'"):
        new_persona("ok", "pirate", None, tmp_path / "personas")
    assert not (tmp_path / "personas" / "ok.yaml").exists()


def _documents():
    for folder in (REPO / "personas", REPO / "rolekit" / "assets" / "personas"):
        for p in sorted(folder.glob("*.yaml")):
            yield "persona", p
    for folder in (REPO / "scenarios", REPO / "rolekit" / "assets" / "scenarios"):
        for p in sorted(folder.glob("*.yaml")):
            yield "scenario", p


def test_schema_accepts_every_sample_and_rejects_what_the_loader_rejects():
    schemas = {k: json_schema(k) for k in ("persona", "scenario")}
    docs = list(_documents())
    assert sum(k == "scenario" for k, _ in docs) >= 5 and sum(k == "persona" for k, _ in docs) >= 5
    for kind, path in docs:
        jsonschema.validate(yaml.safe_load(path.read_text()), schemas[kind])
    # the loader's shorthands are valid too
    shorthands = {
        "persona": "p",
        "user": [{"say": "hi"}],
        "expect": [
            {"max_response_latency": 1.5},
            {"must_yield": True},
            {"not_contains": ["bye", "ciao"]},
            {"python": "checks/c.py:ok"},
        ],
    }
    jsonschema.validate(shorthands, schemas["scenario"])
    for bad in (
        {"persona": "p", "user": [{"say": "hi", "colour": "red"}]},  # unknown key
        {"persona": "p", "user": [{"say": "hi"}], "repeats": 0},  # out of range
        {"user": [{"say": "hi"}]},  # persona missing
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schemas["scenario"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"prompt": "x", "role": "pirate"}, schemas["persona"])


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "rolekit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_cli_schema_init_and_new(tmp_path):
    out = _cli("schema", "scenario")
    assert out.returncode == 0 and json.loads(out.stdout)["title"] == "rolekit scenario"
    out = _cli("schema", "persona", "--out", tmp_path / "p.json")
    assert out.returncode == 0 and json.loads((tmp_path / "p.json").read_text())["title"] == "rolekit persona"
    out = _cli("schema", "voice")
    assert out.returncode == 2 and "unknown schema 'voice'" in out.stderr and "Traceback" not in out.stderr
    out = _cli("init", tmp_path / "p")
    assert out.returncode == 0 and "wrote" in out.stdout, out.stderr
    out = _cli("persona", "new", "coach", "--role", "tutor", "--voice", "natm1", cwd=tmp_path / "p")
    assert out.returncode == 0, out.stderr
    assert "voice: NATM1" in (tmp_path / "p" / "personas" / "coach.yaml").read_text()
    out = _cli("scenario", "new", "drill", "--persona", "coach", cwd=tmp_path / "p")
    assert out.returncode == 0 and load_scenario(tmp_path / "p" / "scenarios" / "drill.yaml")
    out = _cli("scenario", "new", "drill", "--persona", "coach", cwd=tmp_path / "p")
    assert out.returncode == 2 and "already exists" in out.stderr and "Traceback" not in out.stderr
    out = _cli("persona", "new", "x", "--voice", "NOPE", cwd=tmp_path / "p")
    assert out.returncode == 2 and "--voice 'NOPE'" in out.stderr
