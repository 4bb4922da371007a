"""Loading personas: every bad input names file, line and field; extends merge rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rolekit.errors import DocumentError, Problem
from rolekit.frames import VOICES
from rolekit.persona.loader import list_personas, load_persona

GOOD = """
name: desk
description: test desk
role: customer-service
voice: NATF2
variables:
  company: {default: Contoso}
prompt: |
  You work for {{ company }} which is a bank and your name is Sam. Information: open daily.
"""


def problems(path_or_name: str | Path, search: list[Path] | None = None) -> list[Problem]:
    with pytest.raises(DocumentError) as err:
        load_persona(path_or_name, search)
    return err.value.problems


def test_good_persona_loads(write: Callable[..., Path], pdir: Path) -> None:
    path = write("desk", GOOD)
    p = load_persona("desk", [pdir])
    assert (p.name, p.role, p.voice, p.source) == ("desk", "customer-service", "NATF2", path.resolve())
    assert p.variables["company"].default == "Contoso" and not p.variables["company"].is_required
    assert p.template_line == 8  # the template's first line in the YAML file
    assert load_persona(str(path)).name == "desk"


def test_unknown_key_names_line_and_field(write: Callable[..., Path]) -> None:
    path = write("desk", GOOD.replace("voice: NATF2", "voice: NATF2\nvoise: NATF1"))
    (p,) = problems(path)
    assert (p.file, p.line, p.field) == (str(path.resolve()), 5, "voise")
    assert "unknown key" in p.message and "voice" in p.message  # lists the allowed keys


def test_wrong_types_and_all_problems_at_once(write: Callable[..., Path]) -> None:
    text = """
    name: desk
    role: pirate
    variables:
      n: {type: int, default: many}
      m: {type: integer}
    sampling: {text_temperature: hot, audio_top_k: 0}
    prompt: hi
    """
    path = write("desk", text)
    found = {p.field: p for p in problems(path)}
    assert set(found) == {
        "role",
        "variables.n",
        "variables.m.type",
        "sampling.text_temperature",
        "sampling.audio_top_k",
    }
    assert found["role"].line == 2 and "customer-service" in found["role"].message
    assert found["variables.n"].line == 4 and "not of type int" in found["variables.n"].message
    assert found["variables.m.type"].line == 5
    assert found["sampling.text_temperature"].line == 6
    assert all(p.file == str(path.resolve()) for p in found.values())


def test_unknown_voice_lists_valid_ones(write: Callable[..., Path]) -> None:
    path = write("desk", GOOD.replace("voice: NATF2", "voice: NATF9"))
    (p,) = problems(path)
    assert (p.line, p.field) == (4, "voice")
    assert all(v in p.message for v in VOICES)


def test_voice_names_are_case_insensitive_and_files_resolve(write: Callable[..., Path], pdir: Path) -> None:
    write("a", GOOD.replace("voice: NATF2", "voice: varm3"))
    assert load_persona("a", [pdir]).voice == "VARM3"
    (pdir / "me.safetensors").write_bytes(b"x")
    write("b", GOOD.replace("voice: NATF2", "voice: me.safetensors"))
    assert load_persona("b", [pdir]).voice == str((pdir / "me.safetensors").resolve())
    path = write("c", GOOD.replace("voice: NATF2", "voice: missing.pt"))
    (p,) = problems(path)
    assert (p.line, p.field) == (4, "voice") and "not found" in p.message


def test_yaml_syntax_error_line(write: Callable[..., Path]) -> None:
    path = write("desk", "name: desk\nvariables: {a: [1, 2}\nprompt: hi\n")
    (p,) = problems(path)
    assert p.line == 2 and "YAML syntax error" in p.message


def test_duplicate_keys_and_empty_documents(write: Callable[..., Path]) -> None:
    path = write("desk", "name: desk\nprompt: a\nprompt: b\n")
    (p,) = problems(path)
    assert (p.line, p.field) == (3, "prompt") and "duplicate" in p.message
    (p,) = problems(write("empty", "# nothing\n"))
    assert "empty" in p.message
    (p,) = problems(write("listy", "- a\n- b\n"))
    assert "mapping" in p.message


def test_prompt_slot(write: Callable[..., Path], pdir: Path) -> None:
    (p,) = problems(write("none", "name: none\n"))
    assert "prompt" in p.message and p.line == 1
    (pdir / "t.j2").write_text("You are a friendly guide.\n")
    (p,) = problems(write("both", "name: both\nprompt: hi\nprompt_file: t.j2\n"))
    assert "not both" in p.message
    p = load_persona(write("file", "name: file\nprompt_file: t.j2\n"))
    assert p.prompt == "You are a friendly guide.\n"
    assert (p.template_file, p.template_line) == (str((pdir / "t.j2").resolve()), 1)
    (p,) = problems(write("gone", "name: gone\nprompt_file: gone.j2\n"))
    assert (p.line, p.field) == (2, "prompt_file")


def test_name_defaults_to_file_and_must_be_a_slug(write: Callable[..., Path], pdir: Path) -> None:
    write("my-desk", "prompt: You are kind.\n")
    assert load_persona("my-desk", [pdir]).name == "my-desk"
    (p,) = problems(write("bad", "name: Bad Name\nprompt: hi\n"))
    assert (p.line, p.field) == (1, "name")


def test_unknown_persona_lists_known(write: Callable[..., Path], pdir: Path) -> None:
    write("desk", GOOD)
    (p,) = problems("nope", [pdir])
    assert "desk" in p.message and p.field == "persona"
    (p,) = problems(pdir / "missing.yaml")
    assert "not found" in p.message


def test_extends_merge_rules(write: Callable[..., Path], pdir: Path) -> None:
    write(
        "base",
        """
        description: base desk
        role: customer-service
        voice: NATF2
        variables:
          company: {default: Contoso, description: the shop}
          agent: {default: Sam}
        sampling: {text_temperature: 0.5, audio_top_k: 100}
        tags: [a]
        prompt: |
          You work for {{ company }} which is a bank and your name is {{ agent }}. Information: open daily.
        """,
    )
    child_path = write(
        "child",
        """
        extends: base
        voice: NATM1
        variables:
          company: {default: Fabrikam}
          region: {default: north}
        sampling: {text_temperature: 0.9}
        """,
    )
    child = load_persona("child", [pdir])
    assert child.name == "child" and child.description == "base desk" and child.voice == "NATM1"
    assert child.variables["company"].default == "Fabrikam"
    assert child.variables["company"].description == "the shop"  # per-field merge
    assert set(child.variables) == {"company", "agent", "region"}
    assert child.sampling.overrides() == {"text_temperature": 0.9, "audio_top_k": 100}
    assert child.prompt is not None and child.prompt.startswith("You work for")
    assert child.template_file == str((pdir / "base.yaml").resolve())  # inherited template keeps its origin
    assert child.chain == [str(child_path.resolve()), str((pdir / "base.yaml").resolve())]
    # A child prompt_file replaces the parent's inline prompt.
    (pdir / "own.j2").write_text("You are {{ agent }}.")
    assert (
        load_persona(write("c2", "extends: base\nprompt_file: own.j2\n"), [pdir]).prompt
        == "You are {{ agent }}."
    )


def test_extends_errors_point_at_the_right_file(write: Callable[..., Path], pdir: Path) -> None:
    base = write("base", "voice: NATF2\nprompt: hi\nrole: nope\n")
    write("child", "extends: base\n")
    (p,) = problems("child", [pdir])
    assert (p.file, p.line, p.field) == (str(base.resolve()), 3, "role")
    write("orphan", "name: orphan\nextends: ghost\n")
    (p,) = problems("orphan", [pdir])
    assert (p.line, p.field) == (2, "extends") and "ghost" in p.message
    write("x", "extends: y\nprompt: a\n")
    write("y", "extends: z\n")
    write("z", "extends: x\n")
    (p,) = problems("x", [pdir])
    assert "cycle" in p.message and "x.yaml -> y.yaml -> z.yaml -> x.yaml" in p.message


def test_list_personas_skips_partials_and_shadows_by_name(
    write: Callable[..., Path], pdir: Path, tmp_path: Path
) -> None:
    write("desk", GOOD)
    write("partials/x.j2", "text")
    other = tmp_path / "other"
    other.mkdir()
    (other / "desk.yaml").write_text(GOOD)
    (other / "extra.yaml").write_text(GOOD.replace("name: desk", "name: extra"))
    found = list_personas([pdir, other])
    assert [p.name for p in found] == ["desk.yaml", "extra.yaml"]
    assert found[0].parent == pdir.resolve()
