"""YAML loading that remembers where each value sits, so errors name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rolekit.errors import DocumentError, Problem


class MarkedDocument:
    """Parsed YAML data plus the line of every mapping key / sequence item."""

    def __init__(self, data: Any, node: yaml.Node | None, file: str) -> None:
        self.data = data
        self.node = node
        self.file = file

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        """1-based line of the value at `loc` (pydantic-style path), or of its nearest parent."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            key_node, node = child
            line = (key_node or node).start_mark.line + 1
        return line


def _child(node: yaml.Node | None, part: Any) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                return k, v
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None


def load_marked_yaml(path: Path) -> MarkedDocument:
    """Read a YAML file; malformed YAML becomes a DocumentError with the line of the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(problems=[Problem(f"cannot read file ({exc.strerror})", str(path))]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        msg = getattr(exc, "problem", None) or str(exc)
        raise DocumentError(problems=[Problem(f"malformed YAML: {msg}", str(path), line)]) from None
    return MarkedDocument(data, node, str(path))


def field_name(loc: tuple[Any, ...]) -> str:
    """('user', 2, 'say') -> 'user[2].say'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
