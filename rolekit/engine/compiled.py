"""The engine's LM step compiled: `mx.compile` of `engine.step.lm_step`, one graph per `StepShape`.

Why: the eager step launches ~1000 small kernels from Python. Compiled, MLX fuses the elementwise
work; for a graph to be traced once and reused every 80 ms, nothing in it may depend on a Python
value that changes per step. `lm_step` takes the temporal position as a device scalar (RoPE per
row at position - start, the ring slot `pos % C` written with `put_along_axis`, in place, the
visibility mask built on the device), so what selects a graph is only the attended ring prefix:
before the ring wraps, a prefix whose length is a power of two (>= MIN_PREFIX; masked within):
a new trace per length, i.e. a handful per session (256, 512, 1024, 2048, C), each reused for
hundreds of steps, instead of attending to all C slots through a mask. Once the ring has wrapped
and no row's padding is still inside it, every slot is visible: one more graph without any mask
serves from then on.

On CUDA (`Kernels.temporal`, batch <= 4) the temporal layers in the graph are one kernel
(`lm.temporal_cuda`), which also writes the step's keys into the rings in place; else the layers
run with `nn.fused` blocks and `nn.ring_attention` as the `Kernels` policy says.

Mimi encode/decode stay outside (they have their own streaming state).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.engine import step as S
from rolekit.engine.step import EagerStep, StepConstants, StepShape
from rolekit.lm import temporal_cuda
from rolekit.lm.temporal import LmCache
from rolekit.nn.attention import attended, prefix_length, ring_capacity

__all__ = ["CompiledStep", "prefix_length"]


class CompiledStep(EagerStep):
    """`lm_step` as compiled graphs, one per `StepShape` (explicit state stays with the caller)."""

    MIN_PREFIX = 256  # shortest attended ring prefix (fewer traces; SDPA cost is flat below it)

    def __init__(self, constants: StepConstants) -> None:
        super().__init__(constants)
        self.graphs: dict[StepShape, Any] = {}
        # the temporal layers as one launch where the policy asks for it; the CPU tests put
        # `temporal_cuda.REFERENCE` here (the kernel's contract with MLX ops)
        self.temporal_kernel = temporal_cuda.KERNEL

    def uses_kernel(self, lm_cache: LmCache) -> bool:
        """The temporal kernel serves the next step (`Kernels.temporal` and it applies)."""
        c = self.constants
        if not c.kernels.temporal:
            return False
        if not self.temporal_kernel.writes_rings:  # a stand-in: any device
            return temporal_cuda.packed_weights(c.lm) is not None and c.batch <= temporal_cuda.MAX_ROWS
        return temporal_cuda.covers(c.lm, c.batch, lm_cache.rings[0].keys.dtype)

    def shape(self, lm_cache: LmCache) -> StepShape:
        cap = lm_cache.rings[0].capacity
        return self.shape_at(lm_cache.offset, cap, lm_cache.start, self.uses_kernel(lm_cache))

    def shape_at(self, offset: int, capacity: int, start: np.ndarray | None, kernel: bool) -> StepShape:
        """The `StepShape` of the step at global position `offset` in rings of `capacity` slots."""
        c = self.constants
        length, masked = attended(offset, capacity, c.lm.context, start, self.MIN_PREFIX)
        if kernel:  # the kernel evaluates the visibility rule itself
            return StepShape(length, False, temporal=self.temporal_kernel)
        return StepShape(length, masked, c.kernels.blocks, c.kernels.ring_attention)

    def function(self, shape: StepShape) -> Any:
        if shape not in self.graphs:
            c = self.constants
            self.graphs[shape] = mx.compile(lambda *a: S.lm_step(c, shape, *a))
        return self.graphs[shape]

    def upcoming(
        self, lm_cache: LmCache, horizon: int | None, begin: int | None = None
    ) -> list[tuple[int, int, StepShape]]:
        """(position, ring capacity, shape) of the first step of every graph that the steps at
        global positions begin (None: the cache's offset) .. horizon - 1 run, in order (None:
        every graph of the conversation, past the ring's wrap). The rings grow as
        `LmCache.reserve` grows them."""
        context = self.constants.lm.context
        first = 0 if lm_cache.start is None else int(np.max(lm_cache.start))
        last = context + first + 1  # from here on every step has the same shape
        end = last if horizon is None else min(horizon, last)
        kernel = self.uses_kernel(lm_cache)
        cap, out, seen = lm_cache.rings[0].capacity, [], set()
        for pos in range(lm_cache.offset if begin is None else begin, end):
            if lm_cache.context is not None and cap < lm_cache.context and pos + 1 > cap:
                cap = ring_capacity(pos + 1, lm_cache.context, lm_cache.floor)
            shape = self.shape_at(pos, cap, lm_cache.start, kernel)
            if (cap, shape) not in seen:
                seen.add((cap, shape))
                out.append((pos, cap, shape))
        return out

    def build_lazily(
        self, lm_cache: LmCache, args: tuple[mx.array, ...], horizon: int | None, begin: int | None = None
    ) -> int:
        """Build, never evaluate, the uncompiled step of every graph `upcoming(lm_cache, horizon,
        begin)` runs, on scratch rings that are never allocated: inside `nn.cuda.compiling_ahead` this
        compiles each CUDA kernel those graphs launch. No trace is cached; nothing of the caller's
        state changes. `args` as `prepare` takes them. Returns the graphs built."""
        start = self._start_array(lm_cache.start)
        shapes = self.upcoming(lm_cache, horizon, begin)
        for pos, cap, shape in shapes:
            kv = _scratch_rings(lm_cache, cap)
            S.lm_step(self.constants, shape, *args, mx.array(pos, dtype=mx.int32), start, *kv)
        return len(shapes)

    def run_placeholders(
        self, lm_cache: LmCache, args: tuple[mx.array, ...], begin: int | None, budget: int
    ) -> list[mx.array]:
        """The outputs (lazy) of the first step graph of `upcoming(lm_cache, None, begin)`,
        compiled as the steps compile it but in a throwaway `mx.compile` (no trace kept), on
        scratch rings: inside `nn.cuda.compiling_ahead` rolekit's kernels this process cannot
        launch yet are placeholders (those it can really run, on the scratch state), so
        evaluating them runs MLX's own work, and builds MLX's fused kernels of the step,
        which every graph of the engine shares (MLX names them by ops, dtypes and layout, not
        sizes). [] when the scratch rings would take more than `budget` bytes. `args` as
        `prepare` takes them."""
        graphs = self.upcoming(lm_cache, None, begin)
        if not graphs:  # `begin` past every graph's first position (a prompt longer than the context)
            return []
        pos, cap, shape = graphs[0]
        if _scratch_bytes(lm_cache, cap) > budget:
            return []
        c = self.constants
        step = mx.compile(lambda *a: S.lm_step(c, shape, *a))
        kv = _scratch_rings(lm_cache, cap)
        return list(step(*args, mx.array(pos, dtype=mx.int32), self._start_array(lm_cache.start), *kv))

    def prepare(
        self, lm_cache: LmCache, args: tuple[mx.array, ...], horizon: int | None, budget: int | None
    ) -> int:
        """Trace every graph of `upcoming(lm_cache, horizon)` this engine has not built, and run
        each once on scratch rings where they take at most `budget` bytes (None: trace only): a
        graph's first run builds its kernels (MLX's CPU and GPU kernels, rolekit's CUDA ones),
        which then serve the whole process, so a graph some engine of this process already ran
        with the same shapes is only traced. Then no step of the conversation waits for a trace
        or a compile. `args`: the step's (ring cache, ring provided, cols, user, keys) as
        `__call__` takes them; nothing of the caller's state changes, and the scratch rings are
        given back to the device (MLX's buffer cache emptied). Returns the graphs built."""
        ring = lm_cache.rings[0].keys
        b = ring.shape[0]
        start = self._start_array(lm_cache.start)
        built, ran = 0, False
        for pos, cap, shape in self.upcoming(lm_cache, horizon):
            if (cap, shape) in self.built:
                continue
            key = (id(self.constants.lm), b, ring.dtype, cap, shape)
            run = budget is not None and _scratch_bytes(lm_cache, cap) <= budget and key not in _RUN
            kv = _scratch_rings(lm_cache, cap)
            res = self.function(shape)(*args, mx.array(pos, dtype=mx.int32), start, *kv)
            kv = None
            if run:
                mx.eval(*res)
                _RUN.add(key)
                ran = True
            res = None  # unevaluated: the trace is kept, the scratch rings are never allocated
            self.built.add((cap, shape))
            built += 1
        if ran:
            mx.clear_cache()  # the scratch rings go back to the device, not to this process's cache
        return built


def _scratch_bytes(lm_cache: LmCache, capacity: int) -> int:
    """Bytes of `_scratch_rings(lm_cache, capacity)` once evaluated."""
    b, h, _, d = lm_cache.rings[0].keys.shape
    return 2 * len(lm_cache.rings) * b * h * capacity * d * lm_cache.rings[0].keys.dtype.size


def _scratch_rings(lm_cache: LmCache, capacity: int) -> list[mx.array]:
    """Zero keys and values of every layer at `capacity` slots (lazy: allocated only if evaluated)."""
    b, h, _, d = lm_cache.rings[0].keys.shape
    dtype = lm_cache.rings[0].keys.dtype
    return [mx.zeros((b, h, capacity, d), dtype) for _ in range(2 * len(lm_cache.rings))]


# (model, rows, ring dtype, ring capacity, shape) of every step graph some engine of this process
# has run: its kernels exist process-wide, so another engine's `prepare` only traces its own copy
_RUN: set[tuple[int, int, mx.Dtype, int, StepShape]] = set()
