"""Untrusted personas: paths stay in the persona's folder, templates are bounded, runtime errors are clear."""

from __future__ import annotations

import os
import time

import pytest

from rolekit.errors import DocumentError, TemplateError
from rolekit.persona.loader import load_persona
from rolekit.persona.paths import allowing
from rolekit.persona.render import render_prompt
from rolekit.persona.sandbox import Limits
from rolekit.yamldoc import MAX_VALUES, parse_yaml


@pytest.fixture
def project(tmp_path):
    (tmp_path / "personas" / "partials").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.txt").write_text("TOPSECRET")
    return tmp_path


def _persona(project, body: str):
    path = project / "personas" / "p.yaml"
    path.write_text("name: p\n" + body)
    return path


@pytest.mark.parametrize(
    "body, field",
    [
        ("prompt_file: ../secret/key.txt\n", "prompt_file"),
        ("prompt_file: {abs}\n", "prompt_file"),
        ("extends: ../secret/parent.yaml\nprompt: hi\n", "extends"),
        ("voice: ../secret/v.wav\nprompt: hi\n", "voice"),
    ],
)
def test_paths_outside_the_persona_folder_are_refused(project, body, field):
    (project / "secret" / "parent.yaml").write_text("prompt: from outside\n")
    (project / "secret" / "v.wav").write_bytes(b"RIFF")
    path = _persona(project, body.format(abs=project / "secret" / "key.txt"))
    with pytest.raises(DocumentError) as err:
        load_persona(path, [])
    (problem,) = err.value.problems
    assert problem.file == str(path) and problem.line == 2 and problem.field == field
    assert "outside this document's folder" in problem.message and "--allow-path" in problem.message
    assert "TOPSECRET" not in str(err.value)


def test_allow_path_lets_a_folder_in(project):
    path = _persona(project, "prompt_file: ../secret/key.txt\n")
    with allowing([project / "secret"]):
        assert render_prompt(load_persona(path, [])) == "TOPSECRET"
    with pytest.raises(DocumentError):
        load_persona(path, [])


def test_prompt_file_inside_the_folder_still_works(project):
    (project / "personas" / "t").mkdir()
    (project / "personas" / "t" / "p.j2").write_text("You are {{ 'ok' }}.")
    path = _persona(project, "prompt_file: t/p.j2\n")
    assert render_prompt(load_persona(path, [])) == "You are ok."


def test_include_through_a_symlink_out_of_the_folder_is_refused(project):
    os.symlink(project / "secret" / "key.txt", project / "personas" / "partials" / "leak.j2")
    path = _persona(project, "prompt: \"{% include 'partials/leak.j2' %}\"\n")
    with pytest.raises(TemplateError, match="resolves outside the persona folders") as err:
        render_prompt(load_persona(path, []))
    assert "TOPSECRET" not in str(err.value)


@pytest.mark.parametrize(
    "template, message",
    [
        ("{{ {}.pop('x') }}", "KeyError"),
        ("{{ [].pop() }}", "IndexError"),
        ("{{ '{0}'.format() }}", "IndexError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion"),
        ("{{ 'x' * 1000000000 }}", "too large"),
        ("{{ 'x'.ljust(1000000000) }}", "too large"),
        ("{{ '{:>999999999}'.format(1) }}", "too large"),
        ("{{ '%0999999999d' % 1 }}", "too large"),
        ("{{ 'a' | center(999999999) }}", "too large"),
        ("{{ 7 ** 99999999 }}", "too large"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(80) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "beyond",
        ),
        (
            "{% set ns = namespace(s=['x']) %}{% for i in range(80) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "beyond",
        ),
    ],
)
def test_runtime_errors_and_limits_are_one_clear_error(project, template, message):
    path = _persona(project, f"prompt: |\n  You are here.\n  {template}\n")
    with pytest.raises(TemplateError) as err:
        render_prompt(load_persona(path, []))
    (problem,) = err.value.problems
    assert message in problem.message and problem.file == str(path) and problem.line in (3, 4)


def test_an_error_in_a_partial_names_the_partial_and_its_line(project):
    (project / "personas" / "partials" / "bad.j2").write_text("fine\n{{ [].pop() }}\n")
    path = _persona(project, "prompt: \"You are {% include 'partials/bad.j2' %}\"\n")
    with pytest.raises(TemplateError) as err:
        render_prompt(load_persona(path, []))
    (problem,) = err.value.problems
    assert problem.file.endswith("partials/bad.j2") and problem.line == 2


def test_a_self_include_is_a_clear_error(project):
    (project / "personas" / "partials" / "loop.j2").write_text("{% include 'partials/loop.j2' %}")
    path = _persona(project, "prompt: \"{% include 'partials/loop.j2' %}\"\n")
    with pytest.raises(TemplateError, match="recursion"):
        render_prompt(load_persona(path, []))


@pytest.mark.parametrize(
    "template",
    ["{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{% include 'partials/loop.j2' %}"],
)
def test_recursion_stops_at_the_depth_limit_far_from_pythons(project, template):
    """A template that calls itself stops at `Limits.depth` nested template frames, long before
    Python's recursion limit (whose C stack a traced recursion can overflow first: a crash)."""
    import sys

    (project / "personas" / "partials" / "loop.j2").write_text("{% include 'partials/loop.j2' %}")
    path = _persona(project, f'prompt: "{template}"\n')
    limit = sys.getrecursionlimit()
    with pytest.raises(TemplateError) as err:
        render_prompt(load_persona(path, []))
    assert sys.getrecursionlimit() == limit
    (problem,) = err.value.problems
    assert f"more than {Limits().depth} nested" in problem.message


def test_nested_loops_stop_at_the_time_limit(project, monkeypatch):
    import rolekit.persona.render as render

    monkeypatch.setattr(
        render, "make_environment", _with_limits(render.make_environment, Limits(seconds=0.3))
    )
    path = _persona(
        project,
        'prompt: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"\n',
    )
    t0 = time.monotonic()
    with pytest.raises(TemplateError, match="longer than 0.3 s"):
        render_prompt(load_persona(path, []))
    assert time.monotonic() - t0 < 30  # stopped, not run to the end (1e10 iterations)


def test_output_is_bounded(project, monkeypatch):
    import rolekit.persona.render as render

    monkeypatch.setattr(
        render, "make_environment", _with_limits(render.make_environment, Limits(output_chars=1000))
    )
    path = _persona(project, 'prompt: "{% for i in range(1000) %}word {% endfor %}"\n')
    with pytest.raises(TemplateError, match="longer than 1000 characters"):
        render_prompt(load_persona(path, []))


def _with_limits(make, limits):
    return lambda persona, _limits=None: make(persona, limits)


def test_yaml_alias_bomb_is_refused_before_expansion():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    t0 = time.monotonic()
    with pytest.raises(DocumentError, match=f"more than {MAX_VALUES} values"):
        parse_yaml("\n".join(lines), "bomb.yaml")
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: &a [*a]", "recursive YAML alias"),
        ("[" * 500 + "]" * 500, "nested too deeply"),
        ("x: '" + "y" * 1_100_000 + "'", "document too large"),
    ],
)
def test_other_yaml_bounds(text, message):
    with pytest.raises(DocumentError, match=message):
        parse_yaml(text, "doc.yaml")
