"""Bounded rendering of untrusted Jinja templates: Jinja's sandbox plus limits on time, size and errors.

Persona templates come from other people. On top of `jinja2.sandbox.SandboxedEnvironment` (no
Python internals), `BoundedEnvironment` bounds what a template can cost:
- every value a template builds (`*`, `+`, `~`, `%`, filters, method calls) holds at most
  `Limits.value_chars` characters or items, and no call gets an integer argument beyond it (so
  `'x' * 10**9`, `'x'.ljust(10**9)` or `'{:>999999999}'.format(1)` are refused before they allocate);
- integer powers stay below `Limits.power_bits` bits;
- the rendered text is at most `Limits.output_chars` characters;
- rendering stops after `Limits.seconds` of wall time (nested loops), checked on every template line;
- `lipsum` is not available (it has no place in a prompt and generates text without bound).

`render_bounded` turns every exception raised while rendering (KeyError, IndexError, RecursionError,
MemoryError, a limit, ...) into one `TemplateError` naming the template file and line.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import SandboxedEnvironment

from rolekit.errors import Problem, TemplateError


@dataclass(frozen=True)
class Limits:
    """What one render may cost. A prompt that fits the 240 s context is a few thousand characters."""

    seconds: float = 2.0
    depth: int = 64  # template frames (macro calls, includes, blocks) nested at once
    output_chars: int = 200_000
    value_chars: int = 1_000_000
    power_bits: int = 100_000


class LimitExceeded(Exception):
    """A template went over one of its `Limits` (reported as a TemplateError)."""


_BIG_FORMAT = re.compile(r"\d{7,}")  # a width or precision of a million or more in a format spec


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return 0


class _BoundedCodeGenerator(CodeGenerator):
    """`~` (string concatenation) goes through `environment.bounded`, like every other operator."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.bounded(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedEnvironment(SandboxedEnvironment):
    """A sandboxed environment whose operators, calls and filters are bounded by `limits`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, limits: Limits | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits or Limits()
        self.globals.pop("lipsum", None)
        self.filters = {name: self._bounded_filter(f) for name, f in self.filters.items()}

    def bounded(self, value: Any) -> Any:
        """`value`, unless it is larger than `limits.value_chars`."""
        if _size(value) > self.limits.value_chars:
            raise LimitExceeded(f"a value grew beyond {self.limits.value_chars} characters or items")
        return value

    def _check_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > self.limits.value_chars:
                raise LimitExceeded(
                    f"number {arg} too large for a template (at most {self.limits.value_chars})"
                )

    def _check_format(self, spec: Any) -> None:
        if isinstance(spec, str) and _BIG_FORMAT.search(spec):
            raise LimitExceeded("format width or precision too large")

    def _bounded_filter(self, func: Any) -> Any:
        env = self

        @functools.wraps(func)
        def bounded_filter(*args: Any, **kwargs: Any) -> Any:
            env._check_args(args, kwargs)
            for arg in args:
                env._check_format(arg)
            return env.bounded(func(*args, **kwargs))

        return bounded_filter

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right > 0 and right * abs(left).bit_length() > self.limits.power_bits:
                raise LimitExceeded(f"{left} ** {right} is too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) and isinstance(n, int) and _size(seq) * n > self.limits.value_chars:
                    raise LimitExceeded(f"a repetition of {n} is too large")
        if operator == "%":
            self._check_format(left)
        return self.bounded(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self._check_args(args, kwargs)
        inner = getattr(__obj, "__wrapped__", __obj)
        if getattr(inner, "__name__", "") in ("format", "format_map"):
            __self._check_format(getattr(inner, "__self__", None))
            for arg in args:
                __self._check_format(arg)
        return __self.bounded(super().call(__context, __obj, *args, **kwargs))


class RootedLoader(jinja2.FileSystemLoader):
    """Jinja's file loader (which already refuses `..` and absolute names), also refusing a template
    that resolves (through a symbolic link) outside the folder it was found in, or that is too large."""

    def __init__(self, searchpath: list[str], max_bytes: int = 1_000_000) -> None:
        super().__init__(searchpath)
        self.max_bytes = max_bytes

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        from rolekit.persona.paths import contained

        source, filename, uptodate = super().get_source(environment, template)
        if not any(contained(Path(filename), Path(root)) for root in self.searchpath):
            raise jinja2.TemplateNotFound(f"{template} (resolves outside the persona folders)")
        if len(source) > self.max_bytes:
            raise jinja2.TemplateNotFound(f"{template} (larger than {self.max_bytes} bytes)")
        return source, filename, uptodate


class _Deadline:
    """A trace function that stops the template's code once `seconds` have passed, or when more
    than `depth` of the environment's template frames are nested (a macro or include that calls
    itself: stopped well before Python's recursion limit, whose C stack a traced recursion can
    overflow first, a crash instead of a RecursionError).

    Only frames of the environment's compiled templates are traced line by line; other frames are
    checked when they are entered. The thread's previous trace function is restored afterwards.
    """

    def __init__(self, env: jinja2.Environment, seconds: float, depth: int = 64) -> None:
        self.env = env
        self.seconds = seconds
        self.depth = depth
        self.end = 0.0

    def _check(self) -> None:
        if time.monotonic() > self.end:
            raise LimitExceeded(f"rendering took longer than {self.seconds:g} s (a loop too large?)")

    def _line(self, frame: Any, event: str, arg: Any) -> Any:
        self._check()
        return self._line

    def _call(self, frame: Any, event: str, arg: Any) -> Any:
        self._check()
        if frame.f_globals.get("environment") is not self.env:
            return None
        nested, f = 0, frame
        while f is not None:
            nested += f.f_globals.get("environment") is self.env
            f = f.f_back
        if nested > self.depth:
            raise LimitExceeded(
                f"template recursion too deep: more than {self.depth} nested macro calls, includes or"
                " blocks (a macro, include or extends that calls itself?)"
            )
        return self._line

    def __enter__(self) -> _Deadline:
        self.previous = sys.gettrace()
        self.end = time.monotonic() + self.seconds
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self.previous)


def render_bounded(
    env: BoundedEnvironment, source: str, values: dict[str, Any], file: str, first_line: int
) -> str:
    """Render `source` (the template text, which starts at line `first_line` of `file`) with `values`.

    Returns the rendered text; any failure is one TemplateError naming the file and line where it
    happened (a partial's own file and line when the error is inside an included template).
    """
    try:
        template = env.from_string(source)
        parts: list[str] = []
        total = 0
        with _Deadline(env, env.limits.seconds, env.limits.depth):
            for chunk in template.generate(**values):
                total += len(chunk)
                if total > env.limits.output_chars:
                    raise LimitExceeded(
                        f"the rendered prompt is longer than {env.limits.output_chars} characters"
                    )
                parts.append(chunk)
        return "".join(parts)
    except TemplateError:
        raise
    except (jinja2.TemplateSyntaxError, jinja2.TemplateNotFound, jinja2.exceptions.SecurityError):
        raise  # the caller words these
    except jinja2.UndefinedError as exc:
        where_file, where_line = error_line(exc.__traceback__, file, first_line)
        raise TemplateError(
            problems=[Problem(f"undefined in template: {exc.message}", where_file, where_line, "prompt")]
        ) from None
    except RecursionError:
        raise TemplateError(
            problems=[
                Problem(
                    "template recursion too deep (a macro, include or extends that calls itself?)",
                    file,
                    first_line,
                    "prompt",
                )
            ]
        ) from None
    except MemoryError:
        raise TemplateError(
            problems=[Problem("template ran out of memory", file, first_line, "prompt")]
        ) from None
    except Exception as exc:  # any runtime error of untrusted template code: one clear message
        where_file, where_line = error_line(exc.__traceback__, file, first_line)
        what = str(exc) if isinstance(exc, LimitExceeded) else f"{type(exc).__name__}: {exc}"
        raise TemplateError(
            problems=[Problem(f"template failed: {what}", where_file, where_line, "prompt")]
        ) from None


def error_line(tb: TracebackType | None, file: str, first_line: int) -> tuple[str, int]:
    """(file, line) of the innermost template frame of a Jinja-rewritten traceback."""
    found: tuple[str, int] | None = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if "__jinja_exception__" in tb.tb_frame.f_globals:  # a frame Jinja mapped to a template line
            found = (code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return file, first_line
    name, line = found
    if name == "<template>":
        return file, first_line + line - 1
    return name, line
