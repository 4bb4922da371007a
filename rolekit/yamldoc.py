"""YAML documents that remember where every key and value came from (file and line).

Errors in personas (and any other YAML document) can then name `file:line: field`.

Documents come from other people, so loading is bounded: at most MAX_DOCUMENT_BYTES of text, at most
MAX_VALUES values once aliases are expanded (a YAML "alias bomb" is refused before anything walks it),
at most MAX_DEPTH levels of nesting, and no recursive aliases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rolekit.errors import DocumentError, Problem

Loc = tuple[Any, ...]  # ("variables", "company", "default") or ("tags", 0)

MAX_DOCUMENT_BYTES = 1_000_000  # a persona or scenario is a few KB
MAX_VALUES = 100_000  # scalars, sequences and mappings, counting every alias expansion
MAX_DEPTH = 64  # nesting of sequences and mappings


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
    """Parse one YAML document; syntax errors, duplicate keys and oversized documents become a
    DocumentError with lines."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DocumentError(
            problems=[Problem(f"document too large: more than {MAX_DOCUMENT_BYTES} characters", file)]
        )
    try:
        loader = yaml.SafeLoader(text)  # checks the characters at once (ReaderError)
    except yaml.YAMLError as exc:
        raise DocumentError(problems=[Problem(f"YAML error: {exc}", file)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(data=None, file=file, lines={})
        _check_size(node, file)
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
    except RecursionError:
        raise DocumentError(
            problems=[Problem(f"YAML nested too deeply (at most {MAX_DEPTH} levels)", file)]
        ) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {(): node.start_mark.line + 1}
    problems: list[Problem] = []
    _walk(node, (), lines, problems, file)
    if problems:
        raise DocumentError(problems=problems)
    return YamlDoc(data=data, file=file, lines=lines)


def load_yaml(path: Path) -> YamlDoc:
    """Read and parse a YAML file (at most MAX_DOCUMENT_BYTES; a larger file is refused unread)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_DOCUMENT_BYTES + 1)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise DocumentError(
                problems=[Problem(f"document too large: more than {MAX_DOCUMENT_BYTES} bytes", str(path))]
            )
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(problems=[Problem(f"cannot read: {exc}", str(path))]) from exc
    return parse_yaml(text, str(path))


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse documents whose alias-expanded size exceeds MAX_VALUES, nest deeper than MAX_DEPTH or
    contain recursive aliases. Sizes are memoized per node, so an alias bomb costs its node count."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        line = node.start_mark.line + 1
        if key in open_nodes:
            raise DocumentError(
                problems=[Problem("recursive YAML alias (a value contains itself)", file, line)]
            )
        if depth > MAX_DEPTH:
            raise DocumentError(
                problems=[Problem(f"YAML nested too deeply (at most {MAX_DEPTH} levels)", file, line)]
            )
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            open_nodes.add(key)
            children = (
                node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            )
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_VALUES:
                    raise DocumentError(
                        problems=[
                            Problem(
                                f"YAML document too large: more than {MAX_VALUES} values once aliases "
                                "(*name) are expanded",
                                file,
                                line,
                            )
                        ]
                    )
            open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], file: str) -> None:
    if isinstance(node, yaml.ScalarNode):
        try:
            node.value.encode("utf-8")
        except UnicodeEncodeError:  # "\ud800" escapes: not text any later step can encode
            where = field_name(loc) or None
            line = node.start_mark.line + 1
            problems.append(
                Problem("invalid text: a lone surrogate escape such as \\ud800", file, line, where)
            )
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
