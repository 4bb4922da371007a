"""Render a persona's prompt template: sandboxed Jinja, StrictUndefined, typed variables, partials.

Every missing, undeclared or wrongly typed variable is reported at once, with file and line.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jinja2
from jinja2 import meta

from rolekit.errors import Problem, TemplateError
from rolekit.persona.sandbox import BoundedEnvironment, Limits, RootedLoader, render_bounded
from rolekit.persona.schema import Persona, value_has_type

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def make_environment(persona: Persona, limits: Limits | None = None) -> BoundedEnvironment:
    """Templates may include partials: `{% include "partials/x.j2" %}` from the persona folders.

    Sandboxed and bounded in time and size (rolekit.persona.sandbox)."""
    dirs = [str(d) for d in persona.template_dirs]
    return BoundedEnvironment(
        limits=limits,
        loader=RootedLoader(dirs),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


def coerce_vars(
    persona: Persona, given: dict[str, Any], origin: str = "--var"
) -> tuple[dict[str, Any], list[Problem]]:
    """Declared defaults overlaid with `given` (strings from the CLI are parsed to the declared type)."""
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name not in persona.variables:
            declared = ", ".join(persona.variables) or "none"
            file, line = persona.where("variables")
            problems.append(
                Problem(
                    f"not declared by persona {persona.name} (declared: {declared})",
                    file,
                    line,
                    f"{origin} {name}",
                )
            )
            continue
        spec = persona.variables[name]
        try:
            values[name] = _coerce(value, spec.type)
        except ValueError as exc:
            file, line = persona.where("variables", name)
            problems.append(Problem(f"{origin} {name}={value!r}: {exc}", file, line, f"variables.{name}"))
    for name, spec in persona.variables.items():
        if name not in values and spec.default is not None:
            values[name] = spec.default
    return values, problems


def render_prompt(persona: Persona, given: dict[str, Any] | None = None, origin: str = "--var") -> str:
    """The rendered prompt, whitespace collapsed to single spaces (the model reads one line)."""
    env = make_environment(persona)
    values, problems = coerce_vars(persona, dict(given or {}), origin)
    template_src = persona.prompt or ""
    ast = _parse(env, template_src, persona)
    referenced = _referenced_names(env, ast, template_src, persona)
    for name, (file, line) in referenced.items():
        if name in persona.variables:
            continue
        problems.append(
            Problem(
                f"template uses {{{{ {name} }}}} but it is not declared under variables:",
                file,
                line,
                f"prompt.{name}",
            )
        )
    for name, spec in persona.variables.items():
        if name not in values and spec.is_required:
            file, line = referenced.get(name) or persona.where("variables", name)
            problems.append(
                Problem(
                    f"missing value for required variable (pass --var {name}=...)",
                    file,
                    line,
                    f"variables.{name}",
                )
            )
    if problems:
        raise TemplateError(problems=problems)
    try:
        text = render_bounded(env, template_src, values, persona.template_file, persona.template_line)
    except jinja2.TemplateSyntaxError as exc:  # in an included partial
        raise TemplateError(problems=[_syntax_problem(exc, persona)]) from exc
    except jinja2.exceptions.SecurityError as exc:
        file, line = persona.template_file, persona.template_line
        raise TemplateError(
            problems=[
                Problem(
                    f"template tries to reach Python internals (blocked by the sandbox): {exc}",
                    file,
                    line,
                    "prompt",
                )
            ]
        ) from exc
    except jinja2.TemplateNotFound as exc:
        file, line = _line_of(template_src, re.escape(str(exc.name)), persona)
        dirs = ", ".join(str(d) for d in persona.template_dirs)
        raise TemplateError(
            problems=[
                Problem(f"included template {exc.name!r} not found (searched {dirs})", file, line, "prompt")
            ]
        ) from exc
    return " ".join(text.split())


def _coerce(value: Any, var_type: str) -> Any:
    if not isinstance(value, str) or var_type == "str":
        if var_type == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if var_type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not value_has_type(value, var_type):
            raise ValueError(f"expected {var_type}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value
    text = value.strip()
    if var_type == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an int") from None
    if var_type == "float":
        try:
            number = float(text)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if var_type == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError("expected true or false")
    if text.startswith("["):  # list: JSON, else comma-separated
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("expected a JSON list or comma-separated items") from None
        if isinstance(parsed, list):
            return parsed
    return [item.strip() for item in text.split(",") if item.strip()]


def _referenced_names(
    env: BoundedEnvironment, ast: Any, src: str, persona: Persona
) -> dict[str, tuple[str, int | None]]:
    """Free variables of the template and of the partials it includes, with where each is first used."""
    found: dict[str, tuple[str, int | None]] = {}
    for name in sorted(meta.find_undeclared_variables(ast) - set(env.globals)):
        found[name] = _line_of(src, rf"\b{re.escape(name)}\b", persona)
    for ref in meta.find_referenced_templates(ast):
        if ref is None:
            continue
        try:
            source, filename, _ = env.loader.get_source(env, ref)
        except jinja2.TemplateNotFound:
            continue  # reported at render time with its line
        try:
            sub = env.parse(source, name=ref, filename=filename)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                problems=[Problem(f"template syntax error: {exc.message}", filename, exc.lineno, "prompt")]
            ) from exc
        except RecursionError:
            raise TemplateError(
                problems=[Problem("template nested too deeply", filename, None, "prompt")]
            ) from None
        for name in meta.find_undeclared_variables(sub) - set(env.globals):
            if name not in found:
                match = re.search(rf"\b{re.escape(name)}\b", source)
                found[name] = (str(filename), source.count("\n", 0, match.start()) + 1 if match else None)
    return found


def _line_of(src: str, pattern: str, persona: Persona) -> tuple[str, int | None]:
    """(file, line) in the persona's template file of the first match of `pattern` in the template."""
    match = re.search(pattern, src)
    offset = src.count("\n", 0, match.start()) if match else 0
    return persona.template_file, persona.template_line + offset


def _syntax_problem(exc: jinja2.TemplateSyntaxError, persona: Persona) -> Problem:
    if exc.filename:  # a partial
        return Problem(f"template syntax error: {exc.message}", exc.filename, exc.lineno, "prompt")
    line = persona.template_line + (exc.lineno or 1) - 1
    return Problem(
        f"template syntax error: {exc.message} (template line {exc.lineno})",
        persona.template_file,
        line,
        "prompt",
    )


def _parse(env: BoundedEnvironment, src: str, persona: Persona) -> Any:
    try:
        return env.parse(src)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(problems=[_syntax_problem(exc, persona)]) from exc
    except RecursionError:
        raise TemplateError(
            problems=[
                Problem("template nested too deeply", persona.template_file, persona.template_line, "prompt")
            ]
        ) from None


def template_variables(persona: Persona) -> set[str]:
    """Names the template (and the partials it includes) reads."""
    env = make_environment(persona)
    ast = _parse(env, persona.prompt or "", persona)
    return set(_referenced_names(env, ast, persona.prompt or "", persona))
