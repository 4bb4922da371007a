"""Persona lint: problems PersonaPlex users actually hit, each with severity, file:line and a fix hint.

Rules (see RULES): invalid documents, leftover placeholders, prompt length, non-English text,
role kind vs wording (outbound callers that sound like receptionists), missing facts block for
customer service, distance from NVIDIA's recommended prompt forms, unused variables, name mismatch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rolekit.errors import RolekitError
from rolekit.frames import CONTEXT_FRAMES, FRAME_RATE, PROMPT_SILENCE_FRAMES, SYSTEM_TAG
from rolekit.persona.compile import wrap_system
from rolekit.persona.loader import load_persona, persona_files
from rolekit.persona.render import render_prompt, template_variables
from rolekit.persona.schema import Persona
from rolekit.text import Tokenizer

TYPICAL_VOICE_FRAMES = 50  # NVIDIA presets are about 4 s (NATF1: 48 frames)
MAX_PROMPT_TOKENS = 400  # 32 s of prefill before the agent can speak
MIN_CONVERSATION_FRAMES = 1500  # 120 s left for the conversation

RULES: dict[str, tuple[str, str]] = {
    "invalid": ("error", "the persona does not load or render"),
    "placeholder": ("error", "leftover placeholder such as X, {name}, <company>, [name] or TODO"),
    "empty": ("error", "the prompt renders to empty text"),
    "too-long": ("error", "the prefill does not fit the 240 s context"),
    "length": ("warning", "long prompt: slow prefill or little context left for the conversation"),
    "language": ("warning", "not English: PersonaPlex understands and speaks English only"),
    "role-wording": ("warning", "the wording contradicts the role kind"),
    "facts": ("warning", "customer service without an `Information:` facts block"),
    "template-form": ("warning", "differs from NVIDIA's recommended prompt form for this role"),
    "unused-variable": ("warning", "a declared variable is never used by the template"),
    "name-mismatch": ("warning", "the persona name differs from its file name"),
}

_PLACEHOLDERS = (
    (re.compile(r"\b(TODO|TBD|FIXME|XXX+)\b"), "a TODO marker"),
    (re.compile(r"(?<![\w'’.-])[XYZ](?![\w'’-])"), "a single-letter placeholder"),
    (re.compile(r"\{\s*[A-Za-z_][\w ]*\}"), "a {placeholder}"),
    (re.compile(r"<(?!system>)[A-Za-z_][\w -]*>"), "an <placeholder>"),
    (re.compile(r"\[[A-Za-z_][\w ]*\]"), "a [placeholder]"),
    (re.compile(r"(?i)lorem ipsum"), "filler text"),
)
_FUNCTION_WORDS = set(
    "a an the and or but if of to in on at for with by from as is are was were be been you your i we "
    "it this that these those not no do does can will would should may must have has had he she they "
    "them his her its our their who what when where why how which one all any each then than so".split()
)
_INBOUND = re.compile(
    r"(?i)\b(thanks? (you )?for calling|how (can|may) i help|answer(s|ing)? (the )?(calls|phone)|receptionist|you work for)\b"
)
_OUTBOUND = re.compile(
    r"(?i)\b(you are (calling|making (a|an outbound) (phone )?call)|you placed (this|the) call|outbound)\b"
)
_TUTOR = re.compile(r"(?i)\b(teach\w*|tutor\w*|learn\w*|practi[cs]e\w*|lesson\w*|explain\w*)\b")
_CS_FORM = re.compile(r"^You work for .+? which is .+? and your name is .+?\.")
_CS_EXAMPLE = "You work for X which is a Y and your name is Z. Information: ..."
_ASSISTANT_EXAMPLE = (
    "You are a wise and friendly teacher. Answer questions or provide advice in a clear and engaging way."
)
_CASUAL_EXAMPLE = "You enjoy having a good conversation. ..."


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # "error" | "warning"
    message: str
    file: str | None = None
    line: int | None = None
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: " if self.file else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{self.severity} [{self.rule}] {self.message}{hint}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lint_paths(paths: list[Path], search: list[Path] | None, tokenizer: Tokenizer) -> list[Finding]:
    """Lint every persona file in `paths` (files or folders)."""
    findings: list[Finding] = []
    for path in paths:
        for file in persona_files(path) if path.is_dir() else [path]:
            findings.extend(lint_file(file, search, tokenizer))
    return findings


def lint_file(path: Path, search: list[Path] | None, tokenizer: Tokenizer) -> list[Finding]:
    """Every finding of one file at once: a persona that does not load still gets its prompt's
    placeholders reported, so one lint run shows everything to fix."""
    try:
        persona = load_persona(path, search)
    except RolekitError as exc:
        return _invalid(exc, str(path)) + _raw_prompt_findings(path)
    return lint_persona(persona, tokenizer)


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def _neutral(src: str) -> str:
    """Template source with Jinja expressions, tags and comments replaced by a neutral word."""
    return _JINJA.sub("value", src)


def _raw_prompt_findings(path: Path) -> list[Finding]:
    """Placeholder findings on the `prompt:` text of a document that does not load."""
    from rolekit.yamldoc import load_yaml

    try:
        doc = load_yaml(path)
    except RolekitError:
        return []
    src = doc.data.get("prompt") if isinstance(doc.data, dict) else None
    if not isinstance(src, str):
        return []
    first = doc.line_of(("prompt",)) or 1  # the line where the text starts
    out = []
    for pattern, what in _PLACEHOLDERS:
        for match in pattern.finditer(_neutral(src)):
            line = first + _neutral(src).count("\n", 0, match.start())
            hint = "replace it with the real value or a declared {{ variable }}"
            message = f"{what} left in the prompt: {match.group(0)!r}"
            out.append(Finding("placeholder", RULES["placeholder"][0], message, str(path), line, hint))
    return out


def lint_persona(persona: Persona, tokenizer: Tokenizer) -> list[Finding]:
    """All findings for one loaded persona, rendered with its defaults (sample values for required vars)."""
    samples = {name: _sample(name, v.type) for name, v in persona.variables.items() if v.default is None}
    src = persona.prompt or ""
    out: list[Finding] = []
    try:
        text = render_prompt(persona, samples, origin="sample")
        used = template_variables(persona)
    except RolekitError as exc:  # report it, and go on with the other rules on the template text
        out.extend(_invalid(exc, persona.template_file))
        text = wrap_system(_neutral(src))
        used = set(persona.variables)

    def add(
        rule: str, message: str, hint: str = "", at: str | None = None, loc: tuple[str, ...] = ()
    ) -> None:
        if loc:
            file, line = persona.where(*loc)
        else:
            file, line = _template_line(persona, src, at)
        out.append(Finding(rule, RULES[rule][0], message, file, line, hint))

    for pattern, what in _PLACEHOLDERS:
        for match in pattern.finditer(text):
            hint = "replace it with the real value or a declared {{ variable }}"
            add("placeholder", f"{what} left in the prompt: {match.group(0)!r}", hint, match.group(0))
    if not text.removeprefix(SYSTEM_TAG).removesuffix(SYSTEM_TAG).strip():
        add("empty", "the prompt renders to empty text", "write what the agent is and does")
    n_tokens = len(tokenizer.encode(wrap_system(text)))
    frames = TYPICAL_VOICE_FRAMES + 2 * PROMPT_SILENCE_FRAMES + n_tokens
    if frames >= CONTEXT_FRAMES:
        add(
            "too-long",
            f"{n_tokens} prompt tokens: the prefill ({frames} frames with a typical voice) does not fit "
            f"the {CONTEXT_FRAMES}-frame context",
            "shorten the prompt",
        )
    elif n_tokens > MAX_PROMPT_TOKENS or CONTEXT_FRAMES - frames < MIN_CONVERSATION_FRAMES:
        secs, left = n_tokens / FRAME_RATE, (CONTEXT_FRAMES - frames) / FRAME_RATE
        add(
            "length",
            f"{n_tokens} prompt tokens = {secs:.0f} s of prefill; about {left:.0f} s of the 240 s context left",
            "keep the prompt to the facts the agent needs",
        )
    if persona.language not in ("en", "en-us", "en-gb", "english"):
        add(
            "language",
            f"language is {persona.language!r}",
            "write the prompt in English; ask the agent to quote foreign phrases instead",
            loc=("language",),
        )
    elif _looks_non_english(text):
        add(
            "language",
            "the prompt does not read as English",
            "PersonaPlex was trained on English prompts only",
        )
    inner = text.removeprefix(SYSTEM_TAG).removesuffix(SYSTEM_TAG).strip()
    _role_rules(persona, inner, add)
    for name in persona.variables:
        if name not in used:
            add(
                "unused-variable",
                f"variable {name!r} is declared but not used",
                "use it in the prompt or remove it",
                loc=("variables", name),
            )
    if persona.source is not None and persona.name != persona.source.stem:
        add(
            "name-mismatch",
            f"name {persona.name!r} but file {persona.source.name}",
            "rename one so `persona show NAME` finds it",
            loc=("name",),
        )
    return out


def _role_rules(persona: Persona, text: str, add: Any) -> None:
    role = persona.role
    if role == "outbound-caller":
        for match in _INBOUND.finditer(text):
            add(
                "role-wording",
                f"outbound caller worded like a receptionist: {match.group(0)!r}",
                "say who the agent calls and why: 'You are Z, calling Y on behalf of X to ...'",
                match.group(0),
            )
        if not re.search(r"(?i)\bcall", text):
            add(
                "role-wording",
                "an outbound caller's prompt never says it is making a call",
                "state 'you are making a phone call to ...'",
            )
        if not text.startswith("You are "):
            add(
                "template-form",
                "an outbound prompt should start by saying who the agent is",
                "'You are Z, and you are calling Y on behalf of X ...'",
            )
        return
    if role in ("customer-service", "assistant", "tutor"):
        for match in _OUTBOUND.finditer(text):
            add(
                "role-wording",
                f"{role} prompt worded like an outbound call: {match.group(0)!r}",
                "use role: outbound-caller, or describe answering calls",
                match.group(0),
            )
    if role == "customer-service":
        if "Information:" not in text:
            add(
                "facts",
                "no 'Information:' block with the facts the agent may use",
                f"NVIDIA's form: {_CS_EXAMPLE}",
            )
        if not _CS_FORM.match(text):
            add("template-form", "customer service does not use NVIDIA's trained form", _CS_EXAMPLE)
    elif role in ("assistant", "tutor"):
        if not text.startswith("You are "):
            add("template-form", f"{role} prompt does not start with 'You are ...'", _ASSISTANT_EXAMPLE)
        if role == "tutor" and not _TUTOR.search(text):
            add(
                "role-wording",
                "a tutor prompt that never mentions teaching, practice or learning",
                "say what the learner practises and how to correct them",
            )
    elif role == "casual" and not text.startswith("You enjoy having a good conversation"):
        add("template-form", "casual prompt does not start with NVIDIA's casual form", _CASUAL_EXAMPLE)


def _looks_non_english(text: str) -> bool:
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 12:
        return False
    letters = [c for c in text if c.isalpha()]
    non_ascii = sum(1 for c in letters if not c.isascii()) / max(1, len(letters))
    function = sum(1 for w in words if w in _FUNCTION_WORDS) / len(words)
    return non_ascii > 0.15 or function < 0.15


def _template_line(persona: Persona, src: str, needle: str | None) -> tuple[str, int]:
    offset = 0
    if needle:
        at = src.find(needle)
        offset = src.count("\n", 0, at) if at >= 0 else 0
    return persona.template_file, persona.template_line + offset


def _invalid(exc: RolekitError, file: str) -> list[Finding]:
    problems = getattr(exc, "problems", []) or []
    if not problems:
        return [Finding("invalid", "error", str(exc), file)]
    out = []
    for p in problems:
        message = f"{p.field}: {p.message}" if p.field else p.message
        out.append(Finding("invalid", "error", message, p.file or file, p.line))
    return out


def _sample(name: str, var_type: str) -> Any:
    return {"int": 1, "float": 1.0, "bool": True, "list": ["one", "two"]}.get(
        var_type, name.replace("_", " ").title()
    )
