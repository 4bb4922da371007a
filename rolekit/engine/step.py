"""The LM's 80 ms step as ONE pure function of explicit state: `lm_step`.

token ring + user codes [B, 8] + RNG keys [B, 2] + the LM cache's rings + a device position ->
`model_input` (the user's codes into the ring, the model's input column embedded) -> the temporal
layers (the model's own `Transformer.step`, or the CUDA kernel in their place) -> final norm, text
head -> `sample_and_commit` (text sampling, depformer, ring commit) -> (ring, out [B, 9], next keys,
updated rings). Everything that changes per step is an array, and what selects a trace (the
attended ring prefix, the kernels) is a `StepShape`, so the eager step calls `lm_step` directly and
the compiled step (`engine.compiled.CompiledStep`) is `mx.compile` of it, one graph per shape: one
step to read and to test. Arrays are `mx.array`; B rows, each with its own ring offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.engine import ring_cuda
from rolekit.lm.sampling import SamplingParams, sample
from rolekit.lm.temporal import LmCache
from rolekit.lm.temporal_cuda import TemporalKernel
from rolekit.nn.attention import RingKV, attended, step_view
from rolekit.nn.kernels import Blocks, Kernels


@dataclass(frozen=True)
class StepConstants:
    """What every step of one engine shares: the LM, the batch, the ring's initial tokens,
    sampling ([B] values or scalars), depformer steps, the kernel policy. (Which streams a step
    provides is in its ring columns: `R.step_columns`.)"""

    lm: Any
    batch: int
    initial: mx.array
    sampling: SamplingParams
    greedy: bool
    dep_steps: int
    kernels: Kernels


def model_input(
    c: StepConstants, cache: mx.array, provided: mx.array, cols: mx.array, user: mx.array
) -> tuple[mx.array, mx.array, mx.array, tuple[mx.array, ...]]:
    """User codes [B, 8] into the ring at offset + delay -> (ring cache, ring provided, model input
    embeddings [B, 1, D], what the call's targets force: text target [B], text provided [B],
    depformer codes [B, dep_q]); `cols` the rows' packed ring columns of this call."""
    fn = ring_cuda.ring_in if _ring_kernels(c, cache, provided, cols) else ring_cuda.reference_in
    cache, provided, tokens, *forced = fn(cache, provided, cols, user, c.initial, c.lm.cfg.dep_q)
    x = c.lm.embed(tokens[:, :, None], c.kernels)  # [B, 1, D]
    return cache, provided, x, tuple(forced)


def sample_and_commit(
    c: StepConstants,
    hidden: mx.array,
    text_logits: mx.array,
    cache: mx.array,
    provided: mx.array,
    cols: mx.array,
    forced: tuple[mx.array, ...],
    text_keys: mx.array,
    dep_keys: mx.array,
) -> tuple[mx.array, mx.array, mx.array]:
    """Text sampling, depformer, ring commit: hidden [B, D] (after the final norm), text_logits
    [B, V], `forced` from `model_input`, per-row keys [B, 2] -> (ring cache, ring provided, out
    [B, 9] = text + 8 agent codes)."""
    text_target, text_given, dep_given = forced
    text = sample_text(c, text_logits, text_keys)  # [B]
    # One depformer pass for all rows: per-row keys keep each row equal to its batch-1 run.
    keys = None if c.greedy else dep_keys
    forced_text = mx.where(text_given, text_target, text)  # a provided text token wins
    audio = c.lm.depformer(hidden, forced_text, dep_given, c.sampling, keys, c.dep_steps, c.kernels)
    fn = ring_cuda.ring_out if _ring_kernels(c, cache, provided, cols) else ring_cuda.reference_out
    return fn(cache, provided, cols, text, audio[:, : c.dep_steps])


def _ring_kernels(c: StepConstants, cache: mx.array, provided: mx.array, cols: mx.array) -> bool:
    return c.kernels.token_ring and ring_cuda.covers(cache, provided, cols, c.lm.cfg.dep_q)


def sample_text(c: StepConstants, logits: mx.array, keys: mx.array) -> mx.array:
    """logits [B, V], keys [B, 2] -> text tokens [B] int32 (argmax when every row is greedy)."""
    if c.greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    p = c.sampling
    return sample(logits, p.text_temperature, p.text_top_k, keys)


@dataclass(frozen=True)
class StepShape:
    """What selects one trace of `lm_step` (hashable: the compiled step keeps a graph per value).

    length: ring slots attended (a power-of-two prefix before the wrap in a compiled step, the
    written slots in an eager one; C after the wrap); masked: some attended slot is hidden (the
    device builds the mask from the position and the rows' padding); fused (a `Blocks` value) /
    ring_kernel: the `nn.fused` block kernels and the `nn.ring_attention` kernels in the temporal
    layers; temporal: the temporal
    layers as one kernel launch instead of the model's layers (None: the layers)."""

    length: int
    masked: bool
    fused: Blocks = Blocks.NONE
    ring_kernel: bool = False
    temporal: TemporalKernel | None = None


def lm_step(
    c: StepConstants,
    shape: StepShape,
    ring_cache: mx.array,
    ring_provided: mx.array,
    cols: mx.array,
    user: mx.array,
    keys: mx.array,
    pos: mx.array,
    start: mx.array,
    *kv: mx.array,
) -> tuple[mx.array, ...]:
    """One LM step: ring_cache / ring_provided [B, 17, CT], cols [B, R.PACKED, CT] bool the rows'
    ring columns of this call (`R.pack` of `R.step_columns` of their LMGen offsets, made on the host:
    `Engine.columns`; `write` limited to the user's streams, the only ones a step provides), user
    [B, 8] user codes, keys [B, 2] RNG keys, pos int32 scalar (the LM cache's global position),
    start [B] int32 (each row's left padding), kv = the cache's rings K0, V0, K1, V1, ... each
    [B, H, C, Dh] (`LmCache.release`) -> (ring cache, ring provided, out [B, 9] = text + 8 agent
    codes, next keys [B, 2], K0', V0', ...: the rings with position `pos` written)."""
    lm = c.lm
    ring_cache, ring_provided, x, forced = model_input(
        c, ring_cache, ring_provided, cols, user
    )  # x [B, 1, D]
    rings = [RingKV(k, v) for k, v in zip(kv[0::2], kv[1::2], strict=True)]
    cap = rings[0].capacity
    view = step_view(pos, start, cap, lm.context, shape.length, shape.masked, shape.ring_kernel, shape.fused)
    if shape.temporal is None:
        x = lm.transformer.step(x, rings, view)  # [B, 1, D]
    else:
        x = shape.temporal.step(lm, x, rings, view, c.kernels.temporal_tuning)
    hidden = lm.out_norm(x)  # [B, 1, D]
    logits = lm.text_linear(hidden)  # [B, 1, text_card]
    split = mx.vmap(lambda k: mx.random.split(k, 3))(keys)  # [B, 3, 2] per-row key streams
    ring_cache, ring_provided, out = sample_and_commit(
        c, hidden[:, 0], logits[:, 0], ring_cache, ring_provided, cols, forced, split[:, 1], split[:, 2]
    )
    return (ring_cache, ring_provided, out, split[:, 0], *(a for r in rings for a in (r.keys, r.values)))


class EagerStep:
    """`lm_step` called directly for the next position of an `LmCache`: the temporal layers as
    MLX ops over exactly the written ring slots (the reference the compiled step is checked
    against; `Kernels` still picks the embedding and depformer kernels)."""

    def __init__(self, constants: StepConstants) -> None:
        self.constants = constants
        self._start_np: np.ndarray | None = None
        self._start = mx.zeros((constants.batch,), dtype=mx.int32)  # [B]
        # (ring capacity, shape) of the graphs this engine has built: run by a step, or ahead by
        # `CompiledStep.prepare`
        self.built: set[tuple[int, StepShape]] = set()

    def prepare(
        self, lm_cache: LmCache, args: tuple[mx.array, ...], horizon: int | None, budget: int | None
    ) -> int:
        """Nothing to build ahead for the eager step (see `CompiledStep.prepare`): 0 graphs."""
        return 0

    def shape(self, lm_cache: LmCache) -> StepShape:
        """The `StepShape` of the cache's next position."""
        cap = lm_cache.rings[0].capacity
        return StepShape(*attended(lm_cache.offset, cap, self.constants.lm.context, lm_cache.start))

    def function(self, shape: StepShape) -> Any:
        """What runs `lm_step` for `shape` (same arguments after `shape`)."""
        return partial(lm_step, self.constants, shape)

    def __call__(
        self,
        ring_cache: mx.array,
        ring_provided: mx.array,
        cols: mx.array,
        user: mx.array,
        keys: mx.array,
        lm_cache: LmCache,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        """One frame: -> (ring cache, ring provided, out [B, 9], next RNG keys [B, 2]); lm_cache
        advanced by one position. cols [B, R.PACKED, CT] the rows' ring columns (`lm_step`), user
        [B, 8], keys [B, 2]."""
        lm_cache.reserve(lm_cache.offset + 1)  # a growing ring gets room first, outside any graph
        shape = self.shape(lm_cache)
        self.built.add((lm_cache.rings[0].capacity, shape))
        run = self.function(shape)
        pos = mx.array(lm_cache.offset, dtype=mx.int32)
        kv = lm_cache.release()
        res = run(ring_cache, ring_provided, cols, user, keys, pos, self._start_array(lm_cache.start), *kv)
        kv = None  # only the step holds the old rings now: its writes may update them in place
        lm_cache.adopt(list(res[4:]))
        return res[0], res[1], res[2], res[3]

    def _start_array(self, start: np.ndarray | None) -> mx.array:
        """[B] int32 left padding on the device, rebuilt only when the cache's padding changes."""
        if start is not self._start_np:
            b = self.constants.batch
            host = np.zeros(b, np.int32) if start is None else np.asarray(start, np.int32)
            self._start_np, self._start = start, mx.array(host)
        return self._start
