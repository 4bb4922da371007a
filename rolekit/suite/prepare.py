"""Everything a run needs before the model loads: persona plan, user timeline, meta, context check.

All bad input (unknown persona, bad variables, missing audio, no TTS, too long for the context)
surfaces here, before anything is written or the model is loaded.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rolekit.errors import DocumentError, ModelError, Problem, RolekitError
from rolekit.frames import CONTEXT_FRAMES, FRAME_SECONDS, VOICES, PrefillPlan
from rolekit.persona.schema import VOICE_FILE_SUFFIXES
from rolekit.persona.voices import is_voice_file, voice_frames
from rolekit.scenario.timeline import Synthesizer, Timeline, build_timeline
from rolekit.suite.plan import RunSpec


@dataclass
class PreparedRun:
    spec: RunSpec
    plan: PrefillPlan
    timeline: Timeline
    meta: dict[str, Any]


def persona_search(spec: RunSpec) -> list[Path]:
    """`personas/` next to the scenario folder, then the default search (./personas, packaged samples)."""
    from rolekit.persona.loader import default_search

    near = spec.loaded.path.resolve().parent.parent / "personas"
    out = [near] + [p for p in default_search() if p.resolve() != near]
    return out


def _persona_ref(spec: RunSpec, loc: tuple[str, ...]) -> str | Path:
    """A persona name as is; a path relative to the scenario's folder, checked to lie inside it."""
    ref = spec.persona
    if ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref:
        return spec.loaded.named_path(ref, loc)
    return ref


def prepare_run(spec: RunSpec, tokenizer: Any, synth: Synthesizer | None = None) -> PreparedRun:
    """Compile the persona (voice frames unknown yet) and render the user timeline for one run."""
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.loader import load_persona

    loaded = spec.loaded
    persona_loc = ("matrix", "persona") if "persona" in spec.cell else ("persona",)
    try:
        persona = load_persona(_persona_ref(spec, persona_loc), persona_search(spec))
    except RolekitError as exc:
        problems = [loaded.problem(f"persona {spec.persona!r} cannot be used", persona_loc)]
        raise DocumentError(problems=problems + (exc.problems or [Problem(str(exc))])) from None
    if spec.voice:
        voice = str(spec.voice)
        voice = voice.upper() if voice.upper() in VOICES else voice
        loc = ("matrix", "voice") if "voice" in spec.cell else ("voice",)
        if voice not in VOICES:
            path = loaded.named_path(voice, loc)  # a voice file: inside the scenario's folder
            if not path.is_file() or not path.name.lower().endswith(VOICE_FILE_SUFFIXES):
                msg = f"unknown voice {spec.voice!r}: use one of {', '.join(VOICES)} or a voice file"
                raise DocumentError(problems=[loaded.problem(msg, loc)])
            voice = str(path)
        persona = persona.model_copy(update={"voice": voice})
    try:
        plan = compile_persona(persona, spec.vars, tokenizer, None, origin="vars")
    except RolekitError as exc:
        problems = [loaded.problem(f"persona {spec.persona!r} does not compile with these vars", ("vars",))]
        raise DocumentError(problems=problems + (exc.problems or [Problem(str(exc))])) from None
    if is_voice_file(plan.voice):  # a damaged voice file is bad input, found before the model loads
        try:
            voice_frames(Path(plan.voice))
        except ModelError as exc:
            file, line = persona.where("voice")
            loc = ("matrix", "voice") if "voice" in spec.cell else ("voice",)
            where = loaded.problem(str(exc), loc) if spec.voice else Problem(str(exc), file, line, "voice")
            raise DocumentError(problems=[where]) from None
    timeline = build_timeline(loaded, synth) if synth is not None else build_timeline(loaded)
    check_context(spec, plan, timeline)
    return PreparedRun(spec, plan, timeline, run_meta(spec, plan, timeline))


def prefill_frames(plan: PrefillPlan, voice_frames: int | None = None) -> int:
    """LM positions the prefill of `plan` takes, with the voice prompt's `voice_frames` (None: as
    the plan knows them)."""
    return (
        plan.frames if voice_frames is None else dataclasses.replace(plan, voice_frames=voice_frames).frames
    )


def check_context(
    spec: RunSpec, plan: PrefillPlan, timeline: Timeline, voice_frames: int | None = None
) -> None:
    """A scenario (worst case: every reactive wait times out) must fit in the context after the prefill."""
    prefill = prefill_frames(plan, voice_frames)
    left = CONTEXT_FRAMES - prefill
    need = timeline.max_frames()
    if need > left:
        msg = (
            f"scenario longer than the model's context: up to {need * FRAME_SECONDS:.1f} s "
            f"(lead-in, turns, waits at their timeouts, tail) but only {left * FRAME_SECONDS:.1f} s remain "
            f"after the persona prefill of {prefill} frames; shorten the turns, timeouts or tail"
        )
        raise DocumentError(problems=[spec.loaded.problem(msg, ("user",))])


def run_meta(spec: RunSpec, plan: PrefillPlan, timeline: Timeline) -> dict[str, Any]:
    from rolekit import __version__

    sc = spec.loaded.scenario
    return {
        "scenario": spec.scenario,
        "scenario_file": str(spec.loaded.path),
        "run_id": spec.run_id,
        "persona": plan.persona or spec.persona,
        "persona_hash": plan.content_hash,
        "vars": spec.vars,
        "matrix": spec.cell,
        "repeat": spec.repeat,
        "seed": spec.seed,
        "voice": plan.voice,
        "sampling": dict(plan.sampling),
        "lead_in": sc.lead_in,
        "tail": sc.tail,
        "tts": sc.tts.model_dump(),
        "agent_vad_threshold_db": sc.vad_threshold_db,
        "prefill_frames": plan.frames,
        "static_timeline": timeline.is_static,
        "rolekit_version": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
