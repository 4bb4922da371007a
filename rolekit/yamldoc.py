"""YAML documents that remember where every key and value came from (file and line).

Errors in personas (and any other YAML document) can then name `file:line: field`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rolekit.errors import DocumentError, Problem

Loc = tuple[Any, ...]  # ("variables", "company", "default") or ("tags", 0)


@dataclass
class YamlDoc:
    """Parsed data plus the 1-based line of each location in it."""

    data: Any
    file: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of `loc`, or of its nearest enclosing location that has one."""
        loc = tuple(loc)
        while True:
            if loc in self.lines:
                return self.lines[loc]
            if not loc:
                return None
            loc = loc[:-1]


def parse_yaml(text: str, file: str) -> YamlDoc:
    """Parse one YAML document; syntax errors and duplicate keys become a DocumentError with lines."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(data=None, file=file, lines={})
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        if "mapping values are not allowed" in what:
            what += " (a value containing ': ' must be quoted, or written as a block: `prompt: |`)"
        raise DocumentError(problems=[Problem(f"YAML syntax error: {what}", file, line)]) from exc
    except yaml.YAMLError as exc:
        raise DocumentError(problems=[Problem(f"YAML error: {exc}", file)]) from exc
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {(): node.start_mark.line + 1}
    problems: list[Problem] = []
    _walk(node, (), lines, problems, file)
    if problems:
        raise DocumentError(problems=problems)
    return YamlDoc(data=data, file=file, lines=lines)


def load_yaml(path: Path) -> YamlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(problems=[Problem(f"cannot read: {exc}", str(path))]) from exc
    return parse_yaml(text, str(path))


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            key_line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join(str(p) for p in (*loc, key))
                problems.append(Problem(f"duplicate key (first at line {seen[key]})", file, key_line, where))
            seen[key] = key_line
            lines[(*loc, key)] = _value_line(value_node, key_line)
            _walk(value_node, (*loc, key), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _walk(item, (*loc, i), lines, problems, file)


def _value_line(node: yaml.Node, key_line: int) -> int:
    """Block scalars (`|`, `>`) start their text on the line after the key."""
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        return node.start_mark.line + 2
    if isinstance(node, yaml.ScalarNode):
        return node.start_mark.line + 1
    return key_line


def field_name(loc: Loc) -> str:
    """('user', 2, 'say') -> 'user[2].say' (how errors name a field)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
