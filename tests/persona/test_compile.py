"""Compile to a PrefillPlan: NVIDIA's exact wrapping, real token ids, frame counts, the content hash."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rolekit.errors import DocumentError
from rolekit.frames import CONTEXT_FRAMES, PROMPT_SILENCE_FRAMES
from rolekit.persona.compile import compile_persona, content_hash, wrap_system
from rolekit.persona.loader import load_persona
from rolekit.text import TOKENIZER_FILE, Tokenizer

PROMPT = """
name: desk
voice: NATF2
variables:
  company: {default: Contoso}
sampling: {text_temperature: 0.6}
prompt: |
  You work for {{ company }} which is a bank and your name is Sam.
  Information: the branch opens at nine.
"""
TEACHER = (
    "You are a wise and friendly teacher. Answer questions or provide advice in a clear and engaging way."
)
# NVIDIA's ids for the wrapped teacher prompt (reference test of the Swift port, real 32k tokenizer).
TEACHER_IDS = [607, 4831, 578, 493, 298, 272, 11821, 267, 7514, 3290, 263, 506, 1292, 307, 775, 3574, 271, 272, 1195, 267, 12250, 488, 263, 607, 4831, 578]  # fmt: skip


def real_tokenizer() -> Tokenizer | None:
    """NVIDIA's tokenizer when this machine has it (ROLEKIT_REAL_TOKENIZER or the HF cache)."""
    candidates = [os.environ.get("ROLEKIT_REAL_TOKENIZER", "")]
    cache = Path(os.environ.get("HF_HUB_CACHE", Path.home() / ".cache" / "huggingface" / "hub"))
    candidates += [str(p) for p in cache.glob(f"models--*personaplex*/snapshots/*/{TOKENIZER_FILE}")]
    found = [c for c in candidates if c and Path(c).is_file()]
    return Tokenizer(found[0]) if found else None


def tokenizers(trained: Tokenizer) -> list[Tokenizer]:
    real = real_tokenizer()
    return [trained] + ([real] if real else [])


@pytest.mark.parametrize(
    ("text", "wrapped"),
    [
        ("Hello there.", "<system> Hello there. <system>"),
        ("  Hello there.\n", "<system> Hello there. <system>"),
        ("<system> Already wrapped. <system>", "<system> Already wrapped. <system>"),
        ("<system>Tight<system>", "<system>Tight<system>"),
        ("<system> only at the start", "<system> <system> only at the start <system>"),
    ],
)
def test_wrap_system_is_nvidias(text: str, wrapped: str) -> None:
    assert wrap_system(text) == wrapped


def test_plan_ids_are_the_tokenizers_encoding(
    write: Callable[..., Path], pdir: Path, tokenizer: Tokenizer
) -> None:
    persona = load_persona(write("desk", PROMPT), [pdir])
    for tok in tokenizers(tokenizer):
        plan = compile_persona(persona, {"company": "Fabrikam"}, tok, voice_frames=48)
        wrapped = "<system> You work for Fabrikam which is a bank and your name is Sam. Information: the branch opens at nine. <system>"
        assert plan.rendered_text == wrapped.removeprefix("<system> ").removesuffix(" <system>")
        assert list(plan.text_ids) == tok.encode(wrapped)
        assert tok.decode(list(plan.text_ids)) == wrapped
        assert plan.voice == "NATF2" and plan.persona == "desk" and plan.sampling == {"text_temperature": 0.6}
        assert plan.silence_frames == PROMPT_SILENCE_FRAMES == 6
        assert plan.frames == 48 + 12 + len(plan.text_ids)
        assert plan.remaining_frames == CONTEXT_FRAMES - plan.frames


def test_teacher_prompt_matches_nvidia_ids_with_the_real_tokenizer(
    write: Callable[..., Path], tokenizer: Tokenizer
) -> None:
    persona = load_persona(write("teacher", f"role: assistant\nprompt: {TEACHER}\n"))
    for tok in tokenizers(tokenizer):
        ids = list(compile_persona(persona, {}, tok).text_ids)
        assert ids == tok.encode(f"<system> {TEACHER} <system>")
        tag = len(tok.encode("<system>"))
        assert ids[:tag] == ids[-tag:]  # " <system>" at the end tokenizes like the opening tag
        assert ids[:tag] != tok.encode(f"{TEACHER}<system>")[-tag:]  # which needs the space before it
        if tok.vocab_size == 32000:
            assert ids == TEACHER_IDS


def test_already_wrapped_prompt_is_not_rewrapped(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    persona = load_persona(write("w", "prompt: <system> You are kind. <system>\n"))
    plan = compile_persona(persona, {}, tokenizer)
    assert list(plan.text_ids) == tokenizer.encode("<system> You are kind. <system>")


def test_empty_and_too_long_prompts(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    empty = load_persona(write("e", "variables:\n  x: {default: ''}\nprompt: |\n  {{ x }}\n"))
    with pytest.raises(DocumentError, match="empty"):
        compile_persona(empty, {}, tokenizer)
    tags_only = load_persona(write("t", "prompt: <system> <system>\n"))
    with pytest.raises(DocumentError, match="empty"):
        compile_persona(tags_only, {}, tokenizer)
    long = load_persona(
        write("long", "prompt: |\n  You are kind.\n  " + "Please hold the line. " * 500 + "\n")
    )
    with pytest.raises(DocumentError) as err:
        compile_persona(long, {}, tokenizer)
    (p,) = err.value.problems
    assert "3000" in p.message and p.line == 2 and p.field == "prompt"


def test_hash_changes_with_what_affects_the_prefill_only(
    write: Callable[..., Path], pdir: Path, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    base_path = write("desk", PROMPT)
    persona = load_persona(base_path)
    base = compile_persona(persona, {}, tokenizer, voice_frames=48).content_hash
    assert len(base) == 64
    assert compile_persona(persona, {}, tokenizer, voice_frames=48).content_hash == base  # deterministic
    # Irrelevant: name, description, sampling, tags, template whitespace, how the value was given.
    same = PROMPT.replace("name: desk", "name: other\ndescription: changed\ntags: [x]").replace("0.6", "0.9")
    same = same.replace("is Sam.\n", "is Sam.\n\n   ")
    other = load_persona(write("other", same))
    assert compile_persona(other, {"company": "Contoso"}, tokenizer, voice_frames=48).content_hash == base
    # Relevant: the text, the voice, its length, the tokenizer.
    assert compile_persona(persona, {"company": "Fabrikam"}, tokenizer, voice_frames=48).content_hash != base
    assert compile_persona(persona, {}, tokenizer, voice_frames=50).content_hash != base
    assert compile_persona(persona, {}, tokenizer, voice_frames=None).content_hash != base
    voice = load_persona(write("v", PROMPT.replace("NATF2", "NATM1")))
    assert compile_persona(voice, {}, tokenizer, voice_frames=48).content_hash != base
    from rolekit.assets.build_tiny_tokenizer import corpus_lines, train

    other_tok = tmp_path / "o.model"
    other_tok.write_bytes(train(corpus_lines(), vocab_size=900))
    assert compile_persona(persona, {}, Tokenizer(other_tok), voice_frames=48).content_hash != base


def test_hash_of_a_voice_file_follows_its_bytes(tmp_path: Path) -> None:
    voice = tmp_path / "me.safetensors"
    voice.write_bytes(b"one")
    first = content_hash(str(voice), 10, [1, 2], 6, "tok")
    assert content_hash(str(voice), 10, [1, 2], 6, "tok") == first
    voice.write_bytes(b"two")
    assert content_hash(str(voice), 10, [1, 2], 6, "tok") != first
    assert content_hash("NATF2", 10, [1, 2], 6, "tok") != content_hash("NATF2", 10, [2, 1], 6, "tok")
    assert content_hash("NATF2", 10, [1, 2], 6, "tok") != content_hash("NATF2", 10, [1, 2], 5, "tok")


def test_plan_is_plain_data(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    plan = compile_persona(load_persona(write("desk", PROMPT)), {}, tokenizer)
    assert isinstance(plan.text_ids, tuple) and all(isinstance(i, int) for i in plan.text_ids)
    assert plan.voice_frames is None and plan.frames == 12 + len(plan.text_ids)
    assert np.asarray(plan.text_ids).dtype.kind == "i"


def test_vars_origin_is_named_in_errors(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    from rolekit.errors import TemplateError

    persona = load_persona(write("desk", PROMPT))
    with pytest.raises(TemplateError) as err:
        compile_persona(persona, {"colour": "red"}, tokenizer, origin="scenario vars")
    (p,) = err.value.problems
    assert p.field == "scenario vars colour" and "not declared by persona desk" in p.message
