"""Find persona files, merge `extends:` chains and validate them, naming file:line for every problem.

`extends` merge rules (child = the file that says `extends: parent`):
- every top-level key of the child replaces the parent's, except `variables` and `sampling`;
- `variables` merge per variable and per field (a child may change only a default);
- `sampling` merges per key;
- `prompt` and `prompt_file` are one slot: whichever the child gives replaces the parent's;
- `name` is never inherited (it defaults to the file name); `extends` chains may be any depth, no cycles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rolekit.errors import DocumentError, Problem
from rolekit.persona.paths import resolve_named
from rolekit.persona.schema import VOICE_FILE_SUFFIXES, Persona
from rolekit.yamldoc import YamlDoc, load_yaml

PACKAGED_PERSONAS = Path(__file__).resolve().parent.parent / "assets" / "personas"
SUFFIXES = (".yaml", ".yml")
PARTIALS = "partials"
MAX_TEMPLATE_BYTES = 1_000_000  # a prompt template is a few KB


def default_search() -> list[Path]:
    """`./personas` first, then the sample personas shipped with rolekit."""
    return _unique([Path.cwd() / "personas", PACKAGED_PERSONAS])


def find_persona(name_or_path: str | Path, search: list[Path] | None = None) -> Path:
    """The file of a persona given by name (looked up in `search`) or by path."""
    try:
        return _find_persona(name_or_path, search)
    except (OSError, ValueError) as exc:  # a name the file system refuses (too long, NUL byte, ...)
        raise DocumentError(
            problems=[Problem(f"not a usable persona name or path ({exc})", str(name_or_path)[:200])]
        ) from None


def _find_persona(name_or_path: str | Path, search: list[Path] | None) -> Path:
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith(SUFFIXES) or "/" in text or path.is_file():
        if path.is_file():
            return path.resolve()
        raise DocumentError(problems=[Problem("persona file not found", text)])
    dirs = [d for d in (search if search is not None else default_search()) if d.is_dir()]
    for folder in dirs:
        for suffix in SUFFIXES:
            if (folder / f"{text}{suffix}").is_file():
                return (folder / f"{text}{suffix}").resolve()
    known = sorted({p.stem for folder in dirs for p in persona_files(folder)})
    hint = f"known personas: {', '.join(known)}" if known else "no personas found"
    where = ", ".join(str(d) for d in dirs) or "(no persona folders)"
    raise DocumentError(problems=[Problem(f"no persona named {text!r} in {where}; {hint}", field="persona")])


def persona_files(folder: Path) -> list[Path]:
    """Persona YAML files directly in `folder` (partials/ holds templates, not personas)."""
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def list_personas(search: list[Path] | None = None) -> list[Path]:
    """Every persona file on the search path; an earlier folder hides a later one with the same name."""
    seen: dict[str, Path] = {}
    for folder in search if search is not None else default_search():
        if folder.is_dir():
            for path in persona_files(folder):
                seen.setdefault(path.stem, path.resolve())
    return list(seen.values())


def load_persona(name_or_path: str | Path, search: list[Path] | None = None) -> Persona:
    """Load, merge (`extends`) and validate a persona; every problem is reported at once."""
    search = search if search is not None else default_search()
    path = find_persona(name_or_path, search)
    merged, origins, chain = _load_chain(path, search, [])
    data = dict(merged)
    data.setdefault("name", path.stem)
    try:
        persona = Persona.model_validate(data)
    except ValidationError as exc:
        raise DocumentError(problems=[_problem(err, origins, path) for err in exc.errors()]) from exc
    persona._source = path
    persona._lines = origins
    persona._chain = [str(p) for p in chain]
    persona._template_dirs = _unique([p.parent for p in chain] + list(search))
    _attach_template(persona, merged, origins, path)
    _resolve_voice_path(persona, origins, path)
    return persona


def _load_chain(
    path: Path, search: list[Path], stack: list[Path]
) -> tuple[dict[str, Any], dict[tuple[Any, ...], tuple[str, int]], list[Path]]:
    """Raw merged mapping of `path` and its ancestors, with (file, line) of every location."""
    if path in stack:
        cycle = " -> ".join(p.name for p in (*stack, path))
        raise DocumentError(problems=[Problem(f"extends cycle: {cycle}", str(stack[-1]), None, "extends")])
    doc = load_yaml(path)
    if doc.data is None:
        raise DocumentError(
            problems=[Problem("empty document: a persona needs at least a prompt", str(path), 1)]
        )
    if not isinstance(doc.data, dict):
        raise DocumentError(
            problems=[Problem("a persona is a mapping of keys (name:, voice:, prompt:, ...)", str(path), 1)]
        )
    own = {loc: (doc.file, line) for loc, line in doc.lines.items()}
    parent_name = doc.data.get("extends")
    if parent_name is None:
        return dict(doc.data), own, [path]
    if not isinstance(parent_name, str) or not parent_name.strip():
        raise DocumentError(
            problems=[
                Problem(
                    "extends must be a persona name or path", doc.file, doc.line_of(("extends",)), "extends"
                )
            ]
        )
    line = doc.line_of(("extends",))
    try:
        parent_path = _find_parent(parent_name, path, search, line)
    except DocumentError as exc:
        if any(p.field == "extends" for p in exc.problems):
            raise
        raise DocumentError(
            problems=[Problem(f"parent persona {parent_name!r} not found ({exc})", doc.file, line, "extends")]
        ) from exc
    parent, parent_origins, chain = _load_chain(parent_path, search, [*stack, path])
    merged, origins = _merge(parent, parent_origins, doc)
    return merged, origins, [path, *chain]


def _find_parent(name: str, child: Path, search: list[Path], line: int | None) -> Path:
    """A path (relative to the child, inside its folder) or a name on the search path."""
    if name.endswith(SUFFIXES) or "/" in name or "\\" in name:
        candidate = resolve_named(child, name, "extends", line, "extends")
        if not candidate.is_file():
            raise DocumentError(
                problems=[Problem(f"no such persona file: {candidate}", str(child), line, "extends")]
            )
        return candidate
    return find_persona(name, _unique([child.parent, *search]))


def _merge(
    parent: dict[str, Any], parent_origins: dict[tuple[Any, ...], tuple[str, int]], child: YamlDoc
) -> tuple[dict[str, Any], dict[tuple[Any, ...], tuple[str, int]]]:
    merged = {k: v for k, v in parent.items() if k not in ("name", "extends")}
    origins = {
        loc: where for loc, where in parent_origins.items() if loc[:1] not in (("name",), ("extends",))
    }
    data: dict[str, Any] = child.data
    if "prompt" in data or "prompt_file" in data:
        for slot in ("prompt", "prompt_file"):
            merged.pop(slot, None)
            origins = {loc: w for loc, w in origins.items() if loc[:1] != (slot,)}
    for key, value in data.items():
        if key == "variables" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            variables = dict(merged[key])
            for var, spec in value.items():
                old = variables.get(var)
                both_maps = isinstance(old, dict) and isinstance(spec, dict)
                variables[var] = {**old, **spec} if both_maps else spec
            merged[key] = variables
        elif key == "sampling" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
            origins = {loc: w for loc, w in origins.items() if loc[:1] != (key,)}
    origins.update({loc: (child.file, line) for loc, line in child.lines.items()})
    return merged, origins


def _problem(err: dict[str, Any], origins: dict[tuple[Any, ...], tuple[str, int]], path: Path) -> Problem:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(Persona.model_fields) if len(loc) == 1 else None
        msg = "unknown key" + (f" (allowed: {allowed})" if allowed else "")
    else:
        msg = err["msg"].removeprefix("Value error, ")
    key = loc
    while key and key not in origins:
        key = key[:-1]
    file, line = origins.get(key, (str(path), None))
    if not loc and line is None:
        line = 1
    return Problem(msg, file, line, ".".join(str(p) for p in loc) or None)


def _attach_template(persona: Persona, merged: dict[str, Any], origins: dict, path: Path) -> None:
    """Record where the template text starts, reading `prompt_file` relative to the file that named it."""
    if persona.prompt is not None:
        file, line = origins.get(("prompt",), (str(path), 1))
        persona._template_file, persona._template_line = file, line
        return
    file, line = origins.get(("prompt_file",), (str(path), None))
    template = resolve_named(file, str(persona.prompt_file), "prompt_file", line, "prompt_file")
    try:
        with open(template, "rb") as f:
            raw = f.read(MAX_TEMPLATE_BYTES + 1)
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise DocumentError(
                problems=[
                    Problem(
                        f"prompt file {template} is larger than {MAX_TEMPLATE_BYTES} bytes",
                        file,
                        line,
                        "prompt_file",
                    )
                ]
            )
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(
            problems=[Problem(f"cannot read prompt file {template}: {exc}", file, line, "prompt_file")]
        ) from exc
    persona.prompt = text
    persona._template_file, persona._template_line = str(template.resolve()), 1
    persona._template_dirs = _unique([template.parent, *persona._template_dirs])


def _resolve_voice_path(persona: Persona, origins: dict, path: Path) -> None:
    if not persona.voice.lower().endswith(VOICE_FILE_SUFFIXES):
        return
    file, line = origins.get(("voice",), (str(path), None))
    voice = resolve_named(file, persona.voice, "voice", line, "voice")
    if not voice.is_file():
        raise DocumentError(problems=[Problem(f"voice file not found: {voice}", file, line, "voice")])
    persona.voice = str(voice.resolve())


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        rp = p.resolve() if p.exists() else p
        if rp not in out:
            out.append(rp)
    return out
