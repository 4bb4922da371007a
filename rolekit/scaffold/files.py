"""`rolekit init`, `persona new`, `scenario new`: starting files that load, lint clean and run.

Nothing existing is ever overwritten: `init` keeps files that are already there (and says so);
`persona new` / `scenario new` refuse an existing file. Every YAML written starts with the
`yaml-language-server` line pointing at `schemas/<kind>.schema.json`, written next to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rolekit.atomic import write_text
from rolekit.errors import ConfigError
from rolekit.persona.schema import ROLES
from rolekit.scaffold.schema import schema_line, write_schema

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SCHEMAS = "schemas"

# NVIDIA's trained prompt forms per role (see persona lint), with declared variables.
_ROLE_PROMPTS = {
    "customer-service": (
        "NATF2",
        {
            "company": "Northwind Outfitters",
            "business": "an online clothing shop",
            "agent_name": "Maya",
            "facts": "orders ship in two days and refunds are accepted within thirty days of delivery",
        },
        "You work for {{ company }} which is {{ business }} and your name is {{ agent_name }}.\n"
        "Information: {{ facts }}.\n",
    ),
    "assistant": (
        "NATM1",
        {"agent_name": "Sam"},
        "You are {{ agent_name }}, a wise and friendly assistant. Answer questions or provide advice in a\n"
        "clear and engaging way, and keep your answers short.\n",
    ),
    "tutor": (
        "VARF1",
        {"tutor_name": "Lucia", "subject": "everyday English phrases", "level": "beginner"},
        "You are {{ tutor_name }}, a wise and friendly tutor who teaches {{ subject }} to a {{ level }}\n"
        "learner. Explain one idea at a time, ask the learner to practise it, praise good attempts and\n"
        "correct mistakes gently with one simple example.\n",
    ),
    "casual": (
        "NATF0",
        {"topic": "weekend plans"},
        "You enjoy having a good conversation. Have a relaxed chat about {{ topic }}, share your own\n"
        "opinions and ask one question at a time.\n",
    ),
    "outbound-caller": (
        "NATM0",
        {"caller_name": "Jordan", "company": "Bright Smile Dental", "callee": "the patient",
         "purpose": "confirm tomorrow's appointment"},
        "You are {{ caller_name }}, and you are making an outbound phone call on behalf of {{ company }}\n"
        "to {{ callee }}. You placed this call; the person who answers did not call you. Introduce\n"
        "yourself, say that you are calling to {{ purpose }}, and say goodbye once it is settled.\n",
    ),
}  # fmt: skip


@dataclass
class Written:
    """What a scaffold command did: files written and files kept as they were."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{what} name {name!r}: use lowercase letters, digits, '-', '_', '.'")
    return name


def persona_text(name: str, role: str, voice: str | None, schema: str) -> str:
    """A persona document for `role` in NVIDIA's trained form for it."""
    if role not in _ROLE_PROMPTS:
        raise ConfigError(f"--role {role!r}: use one of {', '.join(ROLES)}")
    default_voice, variables, prompt = _ROLE_PROMPTS[role]
    lines = [
        schema.rstrip("\n"),
        f"name: {name}",
        f"description: A {role} persona (edit me).",
        f"role: {role}",
        f"voice: {voice or default_voice}",
        "language: en",
        "tags: [draft]",
        "variables:",
    ]
    lines += [f"  {k}: {{default: {_quote(v)}}}" for k, v in variables.items()]
    lines.append("prompt: |")
    lines += [f"  {line}" for line in prompt.rstrip("\n").split("\n")]
    return "\n".join(lines) + "\n"


def scenario_text(name: str, persona: str, schema: str) -> str:
    """A scenario with a greeting window, a reactive turn, a barge-in and a few checks."""
    return f"""{schema.rstrip()}
name: {name}
description: A first conversation with {persona} (edit me).
persona: {persona}
seed: 0
repeats: 1
lead_in: 3.0          # silence before the user speaks: the agent's greeting window
tail: 8.0             # room for the agent's last reply
tags: [draft]
user:
  - say: "Hi, I have a quick question."
  - after: agent_done   # when the agent has been silent 0.8 s (gives up after timeout: 10)
    silence: 0.8
    say: "Can you tell me a little more about that?"
  - interrupt: {{after_agent_starts: 1.5}}   # barge in 1.5 s after the agent starts answering
    say: "Sorry, one more thing."
expect:
  - max_response_latency: 2.0
  - must_yield: {{within: 1.5}}
  - must_not_interrupt: {{max_overlap: 0.3}}
  - metric: {{name: dead_air_ratio, max: 0.6}}
"""


_CONFTEST = '''"""pytest runs the scenarios in scenarios/ (rolekit's plugin is installed with rolekit).

    pytest scenarios/ --rolekit-model tiny --rolekit-no-transcribe   # quick, random weights
    pytest scenarios/                                               # $ROLEKIT_MODEL or PersonaPlex 7B
"""

# Run folders are written under transcripts/: never collect them as tests.
collect_ignore = ["transcripts"]
'''

_GITIGNORE = """# rolekit run folders (audio, transcripts, reports) and its history snapshots
transcripts/
"""


def write_new(path: Path, text: str) -> Path:
    """Write a file that must not exist yet (ConfigError otherwise: nothing is overwritten)."""
    if path.exists():
        raise ConfigError(f"{path}: already exists (not overwritten); pick another name or delete it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, text)


def ensure_schema(kind: str, folder: Path, done: Written) -> Path:
    """`folder/schemas/<kind>.schema.json`, always regenerated (it is derived from rolekit's models)."""
    path = folder / SCHEMAS / f"{kind}.schema.json"
    write_schema(kind, path)
    done.written.append(path)
    return path


def new_persona(name: str, role: str, voice: str | None = None, folder: Path = Path("personas")) -> Written:
    return _new_document("persona", name, folder, lambda schema: persona_text(name, role, voice, schema))


def new_scenario(name: str, persona: str, folder: Path = Path("scenarios")) -> Written:
    return _new_document("scenario", name, folder, lambda schema: scenario_text(name, persona, schema))


def _new_document(kind: str, name: str, folder: Path, text: Callable[[str], str]) -> Written:
    """`folder/<name>.yaml` (never overwritten) from `text(schema line)`, plus the kind's schema."""
    check_name(name, kind)
    done = Written()
    path = folder / f"{name}.yaml"
    if path.exists():
        raise ConfigError(f"{path}: already exists (not overwritten); pick another name or delete it")
    schema = ensure_schema(kind, folder.parent, done)
    done.written.append(write_new(path, text(schema_line(schema, path))))
    return done


def init_project(root: Path, persona: str = "my-agent", role: str = "customer-service") -> Written:
    """personas/, scenarios/, schemas/, a sample persona and scenario, conftest.py, .gitignore."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: exists and is not a folder")
    done = Written()
    persona_schema = ensure_schema("persona", root, done)
    scenario_schema = ensure_schema("scenario", root, done)
    p_path = root / "personas" / f"{persona}.yaml"
    s_path = root / "scenarios" / f"{persona}-first-call.yaml"
    files = {
        p_path: persona_text(persona, role, None, schema_line(persona_schema, p_path)),
        s_path: scenario_text(f"{persona}-first-call", persona, schema_line(scenario_schema, s_path)),
        root / "conftest.py": _CONFTEST,
        root / ".gitignore": _GITIGNORE,
    }
    for path, text in files.items():
        if path.name == ".gitignore" and path.is_file():
            old = path.read_text(encoding="utf-8")
            if "transcripts/" in old.split():
                done.kept.append(path)
            else:  # keep what is there, add the line
                sep = "" if old.endswith("\n") or not old else "\n"
                done.written.append(write_text(path, old + sep + text))
        elif path.exists():
            done.kept.append(path)
        else:
            done.written.append(write_new(path, text))
    return done


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
