"""Rendering: sandboxed Jinja, StrictUndefined, typed variables, partials, every problem at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rolekit.errors import Problem, TemplateError
from rolekit.persona.loader import load_persona
from rolekit.persona.render import render_prompt

DESK = """
name: desk
variables:
  company: {default: Contoso}
  agent: {description: agent name}
  days: {type: int, default: 30}
  credit: {type: bool, default: false}
  items: {type: list, default: [shoes, shirts]}
prompt: |
  You work for {{ company }} which is a shop and your name is {{ agent }}.
  Information: refunds within {{ days }} days for {{ items | join(", ") }}.
  {% if credit %}Store credit is possible.{% endif %}
"""


def render_problems(persona_path: Path, given: dict | None = None) -> list[Problem]:
    with pytest.raises(TemplateError) as err:
        render_prompt(load_persona(persona_path), given or {})
    return err.value.problems


def test_render_with_defaults_and_typed_cli_values(write: Callable[..., Path]) -> None:
    p = load_persona(write("desk", DESK))
    text = render_prompt(p, {"agent": "Maya"})
    assert text == (
        "You work for Contoso which is a shop and your name is Maya. "
        "Information: refunds within 30 days for shoes, shirts."
    )
    text = render_prompt(p, {"agent": "Maya", "days": "14", "credit": "yes", "items": "hats,  socks"})
    assert "within 14 days for hats, socks." in text and text.endswith("Store credit is possible.")
    assert "for a, b." in render_prompt(p, {"agent": "M", "items": '["a", "b"]'})
    # Values already typed (from a scenario's YAML `vars:`) pass through.
    assert "within 7 days" in render_prompt(p, {"agent": "M", "days": 7, "credit": True})


def test_every_variable_problem_at_once(write: Callable[..., Path]) -> None:
    path = write(
        "desk",
        DESK.replace("{{ company }} which", "{{ company }} and {{ brand }} which").replace(
            "{% if credit %}", "{% if credit and vip %}"
        ),
    )
    found = {p.field: p for p in render_problems(path, {"days": "soon", "colour": "red"})}
    assert set(found) == {"--var colour", "variables.days", "prompt.brand", "prompt.vip", "variables.agent"}
    assert "not declared" in found["--var colour"].message and "company" in found["--var colour"].message
    assert "expected an int" in found["variables.days"].message and found["variables.days"].line == 5
    assert found["prompt.brand"].line == 9 and "not declared" in found["prompt.brand"].message
    assert found["prompt.vip"].line == 11
    assert found["variables.agent"].line == 9 and "--var agent=" in found["variables.agent"].message
    assert all(p.file == str(path.resolve()) for p in found.values())


def test_bool_and_list_coercion_errors(write: Callable[..., Path]) -> None:
    path = write("desk", DESK)
    found = {p.field for p in render_problems(path, {"agent": "M", "credit": "maybe", "items": "[1,"})}
    assert found == {"variables.credit", "variables.items"}


def test_includes_from_partials(write: Callable[..., Path], pdir: Path) -> None:
    write("partials/facts.j2", "Open {{ hours }}.")
    write(
        "desk",
        """
        variables:
          hours: {default: daily}
        prompt: |
          You are a helper. {% include "partials/facts.j2" %}
        """,
    )
    assert render_prompt(load_persona("desk", [pdir])) == "You are a helper. Open daily."
    # A variable used only inside a partial must be declared too.
    write("bare", 'prompt: You are a helper. {% include "partials/facts.j2" %}\n')
    (p,) = render_problems(pdir / "bare.yaml")
    assert p.field == "prompt.hours" and p.file is not None and p.file.endswith("facts.j2") and p.line == 1


def test_missing_include_and_partial_syntax_error(write: Callable[..., Path], pdir: Path) -> None:
    path = write("desk", 'prompt: |\n  You are kind.\n  {% include "partials/nope.j2" %}\n')
    (p,) = render_problems(path)
    assert p.line == 3 and "nope.j2" in p.message and "not found" in p.message
    write("partials/bad.j2", "line one\n{% if %}\n")
    (p,) = render_problems(write("d2", 'prompt: You are kind. {% include "partials/bad.j2" %}\n'))
    assert p.file is not None and p.file.endswith("bad.j2") and p.line == 2


def test_template_syntax_error_maps_to_yaml_line(write: Callable[..., Path]) -> None:
    path = write("desk", "name: desk\nprompt: |\n  You are kind.\n  Say {{ hello.\n")
    (p,) = render_problems(path)
    assert (p.file, p.line, p.field) == (str(path.resolve()), 4, "prompt")
    assert "syntax error" in p.message


def test_sandbox_blocks_python_internals(write: Callable[..., Path]) -> None:
    path = write("desk", "prompt: |\n  You are {{ ''.__class__.__mro__[1].__subclasses__() }}.\n")
    (p,) = render_problems(path)
    assert "sandbox" in p.message and p.line == 2


def test_strict_undefined_attribute(write: Callable[..., Path]) -> None:
    path = write("desk", "variables:\n  who: {default: Sam}\nprompt: You are {{ who.surname }}.\n")
    (p,) = render_problems(path)
    assert "undefined" in p.message and p.field == "prompt"


def test_whitespace_collapses_to_one_line(write: Callable[..., Path]) -> None:
    p = load_persona(write("desk", "prompt: |\n  You are kind.\n\n     Be brief.   \n"))
    assert render_prompt(p) == "You are kind. Be brief."
