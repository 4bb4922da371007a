"""Warm-up: build an engine's compiled graphs and kernels before the first step that counts.

A fresh process compiles every MLX graph and CUDA kernel on the first steps that need them (the
first two calls only prime the delays; the depformer and the Mimi decoder start on the third).
`warmup` first starts compiling rolekit's own CUDA kernels of the whole conversation, each in a
process of its own (or reads them from the kernel cache: `nn.cubins`), runs those steps on silence
beside them and puts the whole engine state back, then builds the step
graphs that later steps would compile mid-conversation (the LM's as the ring grows and the
attended prefix doubles: 256, 512, 1024, 2048 slots, the full context; Mimi's once its caches are
full; `Engine.prepare`), so the conversation that follows is exactly the one it would have been,
minus the compile stalls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rolekit import notices
from rolekit.frames import FRAME_SAMPLES
from rolekit.nn import cubins, cuda, jitlink

WARMUP_STEPS = 4  # every phase of a step has run once by the fourth call


@dataclass
class WarmupResult:
    steps_ms: list[float] = field(default_factory=list)  # per warm-up step
    graphs: int = 0  # later step graphs built ahead (`Engine.prepare`)
    graphs_ms: float = 0.0  # their time
    ahead: int = 0  # rolekit kernels compiled (or read) at once, beside the steps
    ahead_ms: float = 0.0  # from their start until the steps and every compile were done
    # rolekit's CUDA kernels the warm-up needed (`nn.cubins.Stats`): compiled now (and the
    # seconds that took), read from the kernel cache, reused from this process
    kernels: dict[str, float] = field(default_factory=dict)

    def kernel_report(self) -> dict[str, float | str | bool]:
        """`kernels` with the ahead build's count and seconds, how cubins launch
        (`nn.cuda.launch_path`) and how kernels in parts are linked (`nn.jitlink.tag`: "none"
        without CUDA; `link_failed`: some compiled whole after a failed link), as the JSON
        summaries give them."""
        ahead = {"ahead": self.ahead, "ahead_s": round(self.ahead_ms / 1000.0, 2)}
        launch = cuda.launch_path()
        link = "none" if launch == "none" else jitlink.tag()
        failed = "kernel-link" in notices.said()
        return {**self.kernels, **ahead, "launch": launch, "link": link, "link_failed": failed}

    @property
    def seconds(self) -> float:
        return ((self.ahead_ms or sum(self.steps_ms)) + self.graphs_ms) / 1000.0


def warmup(
    engine: Any,
    steps: int = WARMUP_STEPS,
    on_step: Callable[[int, float], None] | None = None,
    frames: int | None = None,
) -> WarmupResult:
    """Compile rolekit's CUDA kernels of the next `frames` frames at once (None: of a whole
    conversation; `Engine.compile_kernels_ahead`), step `engine` `steps` times on silence, restore
    its state (snapshot / restore), then build the step graphs of those frames (`Engine.prepare`).

    Outputs, RNG keys, caches and offsets afterwards equal those before: only process-wide caches
    (compiled graphs, kernels, allocator) keep what the steps built. `on_step(i, ms)` after each."""
    before = cubins.CACHE.stats.as_dict()
    result = WarmupResult()
    t_ahead = time.perf_counter()
    # rolekit's kernels compile in processes of their own while the first step builds MLX's
    ahead = engine.compile_kernels_ahead(frames)
    snap = engine.snapshot()
    silence = np.zeros((engine.batch, FRAME_SAMPLES), np.float32)
    try:
        for i in range(steps):
            t0 = time.perf_counter()
            engine.step(silence)
            result.steps_ms.append((time.perf_counter() - t0) * 1000.0)
            if on_step is not None:
                on_step(i, result.steps_ms[-1])
    except BaseException:
        if ahead is not None:
            ahead.cancel()  # an interrupt does not wait for the compiles still queued
        raise
    finally:
        engine.restore(snap)
    if ahead is not None:
        result.ahead = ahead.wait()
        result.ahead_ms = (time.perf_counter() - t_ahead) * 1000.0
    if engine.kernel_build is not None:  # the prefill's: what these frames skip
        engine.kernel_build.cancel()
        engine.kernel_build = None
    t0 = time.perf_counter()
    result.graphs = engine.prepare(frames)
    result.graphs_ms = (time.perf_counter() - t0) * 1000.0
    after = cubins.CACHE.stats.as_dict()
    result.kernels = {k: round(after[k] - before[k], 3) for k in after}
    return result
