"""One LM step around the temporal transformer, as pure functions of explicit state.

`model_input` puts the user's codes into the token ring and embeds the model's input column;
`sample_and_commit` samples the text token from the temporal output, runs the depformer and
commits text and audio to the ring. The eager step (`Engine`), the compiled step
(`engine.compiled.CompiledStep`, which traces both) and its CUDA variant (the temporal kernel
between them) all call these two, so the token logic exists once. Arrays are `mx.array`; B rows,
each with its own ring offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from rolekit.engine import ring as R
from rolekit.frames import N_CODEBOOKS
from rolekit.lm.sampling import SamplingParams, sample
from rolekit.nn.kernels import Kernels


@dataclass(frozen=True)
class StepConstants:
    """What every step of one engine shares: the LM, the batch, the user-stream mask [B, 17], the
    ring's initial tokens, sampling ([B] values or scalars), depformer steps, the kernel policy."""

    lm: Any
    batch: int
    user_mask: mx.array
    initial: mx.array
    sampling: SamplingParams
    greedy: bool
    dep_steps: int
    kernels: Kernels


def model_input(
    c: StepConstants, cache: mx.array, provided: mx.array, off: mx.array, user: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    """User codes [B, 8] into the ring at offset + delay -> (ring cache, ring provided, model input
    embeddings [B, 1, D]); off [B] the rows' LMGen offsets."""
    tokens = mx.concatenate([mx.zeros((c.batch, 1 + N_CODEBOOKS), mx.int32), user], axis=1)
    ring = R.provide(mx, R.Ring(cache, provided), tokens, c.user_mask, off, c.initial)
    x = c.lm.embed(R.model_input(mx, ring, off)[:, :, None], c.kernels)  # [B, 1, D]
    return ring.cache, ring.provided, x


def sample_and_commit(
    c: StepConstants,
    hidden: mx.array,
    text_logits: mx.array,
    cache: mx.array,
    provided: mx.array,
    off: mx.array,
    text_keys: mx.array,
    dep_keys: mx.array,
) -> tuple[mx.array, mx.array, mx.array]:
    """Text sampling, depformer, ring commit: hidden [B, D] (after the final norm), text_logits
    [B, V], per-row keys [B, 2] -> (ring cache, ring provided, out [B, 9] = text + 8 agent codes)."""
    ring = R.Ring(cache=cache, provided=provided)
    text = sample_text(c, text_logits, text_keys)  # [B]
    forced = R.forced_text(mx, ring, off, text)
    dep_given = R.depformer_provided(mx, ring, off, c.lm.cfg.dep_q)  # [B, dep_q]
    # One depformer pass for all rows: per-row keys keep each row equal to its batch-1 run.
    keys = None if c.greedy else dep_keys
    audio = c.lm.depformer(hidden, forced, dep_given, c.sampling, keys, c.dep_steps, c.kernels)
    ring = R.commit(mx, ring, off, text, audio[:, : c.dep_steps])
    return ring.cache, ring.provided, R.output(mx, ring, off)


def sample_text(c: StepConstants, logits: mx.array, keys: mx.array) -> mx.array:
    """logits [B, V], keys [B, 2] -> text tokens [B] int32 (argmax when every row is greedy)."""
    if c.greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    p = c.sampling
    return sample(logits, p.text_temperature, p.text_top_k, keys)
