"""JSON Schema of the persona and scenario documents, generated from their pydantic models.

Editors that speak the YAML language server complete and check a file that starts with
`# yaml-language-server: $schema=<path or URL of the schema>`. The generated schema is widened
where the models accept shorthands before validation (`max_response_latency: 1.5`,
`must_yield: true`, `not_contains: ...`), so every file rolekit accepts also passes the schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rolekit.errors import ConfigError

KINDS = ("persona", "scenario")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a `persona` or `scenario` document."""
    if kind == "persona":
        from rolekit.persona.schema import Persona

        schema = Persona.model_json_schema()
        schema["properties"]["name"].setdefault("description", "default: the file name")
        schema["required"] = [r for r in schema.get("required", []) if r != "name"]  # the loader fills it
    elif kind == "scenario":
        from rolekit.scenario.schema import Scenario

        schema = Scenario.model_json_schema()
        _widen_expectations(schema)
    else:
        raise ConfigError(f"unknown schema {kind!r}: use one of {', '.join(KINDS)}")
    schema["$schema"] = SCHEMA_DIALECT
    schema["title"] = f"rolekit {kind}"
    return schema


def _widen_expectations(schema: dict[str, Any]) -> None:
    """The shorthands `Expectation._shorthands` accepts, as schema alternatives."""
    exp = schema["$defs"]["Expectation"]
    props = exp["properties"]

    def also(key: str, extra: dict[str, Any]) -> None:
        props[key] = {"anyOf": [props[key], extra]}

    also("max_response_latency", {"type": "number", "exclusiveMinimum": 0})
    also("must_yield", {"const": True})
    also("must_not_interrupt", {"const": True})
    props["yields_on_interrupt"] = {"anyOf": [{"$ref": "#/$defs/YieldCheck"}, {"const": True}]}
    text = {"$ref": "#/$defs/TextCheck"}
    strings = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    props["not_contains"] = {"anyOf": [text, strings]}


def write_schema(kind: str, path: Path) -> Path:
    """Write the schema as JSON (atomically: a reader never sees half a file)."""
    from rolekit.atomic import write_text

    return write_text(Path(path), json.dumps(json_schema(kind), indent=1) + "\n")


def schema_line(schema_path: Path, document: Path) -> str:
    """The editor comment that points `document` at `schema_path` (relative when possible)."""
    import os

    try:
        rel = os.path.relpath(Path(schema_path).resolve(), Path(document).resolve().parent)
    except ValueError:  # another drive on Windows
        rel = str(Path(schema_path).resolve())
    return f"# yaml-language-server: $schema={Path(rel).as_posix()}\n"
