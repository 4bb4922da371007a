"""Compile a persona to a PrefillPlan: NVIDIA's `<system>` wrapping, real SentencePiece ids, a content hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rolekit.errors import DocumentError, Problem
from rolekit.frames import CONTEXT_FRAMES, FRAME_RATE, PROMPT_SILENCE_FRAMES, SYSTEM_TAG, PrefillPlan
from rolekit.persona.render import render_prompt
from rolekit.persona.schema import Persona
from rolekit.persona.voices import is_voice_file
from rolekit.text import Tokenizer

HASH_VERSION = "prefill-v1"  # bump when the meaning of a plan changes


def wrap_system(text: str) -> str:
    """NVIDIA's `wrap_with_system_tags`: `"<system> " + text + " <system>"`, unless already wrapped."""
    text = text.strip()
    if text.startswith(SYSTEM_TAG) and text.endswith(SYSTEM_TAG):
        return text
    return f"{SYSTEM_TAG} {text} {SYSTEM_TAG}"


def content_hash(
    voice: str,
    voice_frames: int | None,
    text_ids: list[int] | tuple[int, ...],
    silence_frames: int,
    tokenizer_id: str,
) -> str:
    """sha256 of everything that changes the prefill; a voice file counts by its bytes, a preset by name."""
    voice_id = _file_digest(Path(voice)) if is_voice_file(voice) else voice
    doc = {
        "version": HASH_VERSION,
        "voice": voice_id,
        "voice_frames": voice_frames,
        "silence_frames": silence_frames,
        "tokenizer": tokenizer_id,
        "text_ids": list(text_ids),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def compile_persona(
    persona: Persona,
    vars: dict[str, Any] | None,
    tokenizer: Tokenizer,
    voice_frames: int | None = None,
    *,
    origin: str = "--var",
) -> PrefillPlan:
    """Render, wrap and tokenize the prompt; fail on an empty prompt or one that does not fit the context.

    `origin` names where `vars` came from in error messages (e.g. "--var", or "vars" of a scenario).
    """
    rendered = render_prompt(persona, vars or {}, origin)
    file, line = persona.template_file, persona.template_line
    inner = rendered.removeprefix(SYSTEM_TAG).removesuffix(SYSTEM_TAG).strip()
    if not inner:
        raise DocumentError(problems=[Problem("the prompt renders to empty text", file, line, "prompt")])
    text_ids = tuple(tokenizer.encode(wrap_system(rendered)))
    frames = (voice_frames or 0) + 2 * PROMPT_SILENCE_FRAMES + len(text_ids)
    if frames >= CONTEXT_FRAMES:
        raise DocumentError(
            problems=[
                Problem(
                    f"the prefill needs {frames} frames ({len(text_ids)} text tokens), but the context holds "
                    f"{CONTEXT_FRAMES} ({CONTEXT_FRAMES / FRAME_RATE:.0f} s) and the conversation needs room: shorten the prompt",
                    file,
                    line,
                    "prompt",
                )
            ]
        )
    return PrefillPlan(
        voice=persona.voice,
        text_ids=text_ids,
        silence_frames=PROMPT_SILENCE_FRAMES,
        voice_frames=voice_frames,
        content_hash=content_hash(
            persona.voice, voice_frames, text_ids, PROMPT_SILENCE_FRAMES, tokenizer.identity
        ),
        rendered_text=rendered,
        persona=persona.name,
        sampling=persona.sampling.overrides(),
    )


def _file_digest(path: Path) -> str:
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return str(path)
