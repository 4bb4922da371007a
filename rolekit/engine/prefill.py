"""PersonaPlex's prompt phases as plain data: which inputs the temporal transformer sees, and the ring.

During the prompt phases every stream is provided (voice / silence codes on the agent stream, PAD or
a prompt token on the text stream, SINE codes on the user stream), so nothing the model samples is
ever kept: the token ring evolves independently of the model. We therefore simulate it in numpy
(same `ring` code as the MLX step) and feed the model all prefill inputs in one batched pass.

Order (NVIDIA `LMGen.step_system_prompts`): voice prompt, silence, text tokens, silence.
A voice preset is a replay of stored input embeddings followed by a restore of the ring `cache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rolekit.engine import ring as R
from rolekit.errors import ConfigError
from rolekit.frames import (
    N_CODEBOOKS,
    N_STREAMS,
    PAD,
    SILENCE_TOKENS,
    SINE_TOKENS,
    PrefillPlan,
)


@dataclass
class PrefillInputs:
    """What one conversation's prefill feeds the temporal transformer, in order."""

    embeddings: np.ndarray  # [E, D] float32 replayed voice embeddings (E may be 0)
    tokens: np.ndarray  # [N, 17] int32 token columns fed after the replay
    ring: R.Ring  # numpy ring after the prefill (batch 1)
    offset: int  # LMGen offset after the prefill

    @property
    def calls(self) -> int:
        """Forward passes the stepwise prefill makes (= temporal positions used)."""
        return len(self.embeddings) + len(self.tokens)


def _frame(text: int, agent: np.ndarray) -> np.ndarray:
    """[17] tokens of one prompt frame: text, agent audio, SINE on the user stream."""
    return np.concatenate([[text], agent, np.asarray(SINE_TOKENS)]).astype(np.int32)


def prompt_frames(plan: PrefillPlan, voice_codes: np.ndarray | None) -> np.ndarray:
    """[F, 17] provided tokens of every prompt frame after a preset replay (or from a voice WAV)."""
    silence = _frame(PAD, np.asarray(SILENCE_TOKENS))
    frames: list[np.ndarray] = []
    if voice_codes is not None:  # [8, T] Mimi codes of the voice WAV
        frames += [_frame(PAD, voice_codes[:N_CODEBOOKS, t]) for t in range(voice_codes.shape[1])]
    frames += [silence] * plan.silence_frames
    frames += [_frame(int(t), np.asarray(SILENCE_TOKENS)) for t in plan.text_ids]
    frames += [silence] * plan.silence_frames
    return np.stack(frames) if frames else np.zeros((0, N_STREAMS), np.int32)


def simulate(
    initial: np.ndarray,
    frames: np.ndarray,
    voice_embeddings: np.ndarray | None = None,
    voice_cache: np.ndarray | None = None,
) -> PrefillInputs:
    """Run NVIDIA's prompt calls on the numpy ring; collect the model inputs of each call.

    initial: [17] start tokens. frames: [F, 17] provided tokens. A preset voice replays
    `voice_embeddings` [E, D] (one forward each, the first call also primes) then restores
    `voice_cache` [17, CT] into the ring, like `LMGen._step_voice_prompt_core`.
    """
    ring = R.new_ring(np, 1)
    offset = 0
    all_mask = np.ones((1, N_STREAMS), bool)
    embeddings = np.zeros((0, 0), np.float32)
    if voice_embeddings is not None:
        embeddings = np.asarray(voice_embeddings, np.float32)
        dummy = initial.copy()
        dummy[0] = PAD  # step_embeddings: initial audio tokens, text = PAD
        for _ in range(len(embeddings)):
            if offset == 0:
                ring = R.prime(
                    np, R.provide(np, ring, dummy[None], all_mask, R.columns(np, offset), initial), initial
                )
                offset = 1
            ring = R.provide(np, ring, dummy[None], all_mask, R.columns(np, offset), initial)
            ring = _commit_provided(ring, offset)
            offset += 1
    if voice_cache is not None:
        ring = R.Ring(cache=np.asarray(voice_cache, np.int32)[None].copy(), provided=ring.provided)
    tokens = []
    for frame in frames:
        at = R.columns(np, offset)
        ring = R.provide(np, ring, frame[None], all_mask, at, initial)
        if offset == 0:
            ring = R.prime(np, ring, initial)
            offset = 1
            continue
        tokens.append(R.model_input(np, ring, at)[0])
        ring = _commit_provided(ring, offset)
        offset += 1
    token_arr = np.stack(tokens).astype(np.int32) if tokens else np.zeros((0, N_STREAMS), np.int32)
    return PrefillInputs(embeddings=embeddings, tokens=token_arr, ring=ring, offset=offset)


def _commit_provided(ring: R.Ring, offset: int) -> R.Ring:
    """Commit of a prompt call: everything is provided, so only the provided-mask moves."""
    at = R.columns(np, offset)
    target, _ = R.targets(np, ring, at)
    return R.commit(np, ring, at, target[:, 0], target[:, 1:])


def prefill_inputs(plan: PrefillPlan, voice: Any, initial: np.ndarray) -> PrefillInputs:
    """PrefillInputs of one conversation; `voice` has .embeddings [E, D] / .codes [8, T] / .cache."""
    embeddings = getattr(voice, "embeddings", None)
    codes = getattr(voice, "codes", None)
    cache = getattr(voice, "cache", None)
    if embeddings is None and codes is None:
        raise ConfigError(f"voice {plan.voice!r} has neither stored embeddings nor audio codes")
    if embeddings is not None:
        if cache is None:
            raise ConfigError(f"voice {plan.voice!r}: stored embeddings come without their token cache")
        cache = np.asarray(cache).reshape(N_STREAMS, R.CT)
        return simulate(initial, prompt_frames(plan, None), np.asarray(embeddings), cache)
    return simulate(initial, prompt_frames(plan, np.asarray(codes)))
