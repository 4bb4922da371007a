"""Where the product path's batched step differs from the old harness's: one loaded model, four
engines in one process (so machine drift hits all alike), each timed the same way.

- `product`: `rolekit bench engine` exactly (persona prefill, the warm-up, then steps on noise);
- `fresh`: the same bundle, no prefill: the engine starts at position 0 (as the old harness did);
- `filled`: no prefill, but `start` frames of random context first (the ring as big as after a
  prefill, no per-row padding);
- `harness`: the old harness's own random model (`benchmarks.engine.build_bundle`), no prefill, and
  the two mixes of its LM and Mimi with the loaded model's.

With `profile=True` each of the first two is also profiled kernel by kernel (CUPTI, needs torch
with CUDA): categories and top kernels per step. Results are appended to `out` as JSON lines.

    python -c "from benchmarks.batch_gap import run; run('random-7b', 'bf16', 16, out='gap.jsonl')"
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from benchmarks.jsonl import emit
from rolekit.bench.timing import summarize
from rolekit.frames import FRAME_SAMPLES


def _steps(engine: Any, steps: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pcm = (0.1 * rng.standard_normal((steps, engine.batch, FRAME_SAMPLES))).astype(np.float32)
    ms = []
    for i in range(steps):
        t0 = time.perf_counter()
        engine.step(pcm[i])
        ms.append((time.perf_counter() - t0) * 1000.0)
    return {
        "step": summarize(ms[3:]),
        "offset": int(engine.offset),
        "capacity": int(engine.lm_cache.rings[0].capacity),
        "start": None if engine.lm_cache.start is None else [int(s) for s in engine.lm_cache.start][:2],
    }


def run(
    spec: str = "random-7b",
    quant: str = "bf16",
    batch: int = 16,
    steps: int = 60,
    start: int = 300,
    profile: bool = True,
    harness: bool = True,
    out: str | None = None,
) -> None:
    from benchmarks.engine import _fill_context, build_bundle
    from rolekit import models
    from rolekit.engine.engine import Engine
    from rolekit.engine.warmup import warmup
    from rolekit.lm.sampling import SamplingParams
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.schema import Persona
    from rolekit.randlm import QUANTS, default_quant

    path = Path(out) if out else None
    t0 = time.perf_counter()
    bundle = models.load(spec, models.LoadOptions(quant=quant, batch=batch))
    emit(path, {"what": "load", "s": round(time.perf_counter() - t0, 1), **bundle.describe()})
    plan = compile_persona(
        Persona(name="gap", prompt="You enjoy having a good conversation.", voice="NATF2"),
        {},
        bundle.tokenizer,
    )
    voice = models.load_voice(bundle, plan.voice)

    def product() -> Engine:
        e = Engine(bundle, batch=batch, params=SamplingParams(), seed=0, kernels=bundle.kernels)
        e.prefill([plan] * batch, [voice] * batch)
        warmup(e, frames=steps)
        return e

    def fresh() -> Engine:
        e = Engine(bundle, batch=batch, params=SamplingParams(), seed=0, kernels=bundle.kernels)
        for _ in range(5):
            e.step(np.zeros((batch, FRAME_SAMPLES), np.float32))
        return e

    def filled() -> Engine:
        e = Engine(bundle, batch=batch, params=SamplingParams(), seed=0, kernels=bundle.kernels)
        _fill_context(e, start, 0)
        for _ in range(5):
            e.step(np.zeros((batch, FRAME_SAMPLES), np.float32))
        return e

    engines = {"product": product, "fresh": fresh, "filled": filled}
    for name, make in engines.items():
        t0 = time.perf_counter()
        engine = make()
        built = time.perf_counter() - t0
        row = {
            "what": name,
            "quant": quant,
            "batch": batch,
            "build_s": round(built, 1),
            **_steps(engine, steps),
        }
        row["peak_gb"] = round(mx.get_peak_memory() / 1e9, 2)
        emit(path, row)
        if profile and name in ("product", "fresh"):
            from benchmarks.profile import _trace

            pcm = np.zeros((batch, FRAME_SAMPLES), np.float32)
            emit(path, {"what": f"{name}-profile", **_trace(lambda e=engine, p=pcm: e.step(p), 10)})
        del engine
        mx.clear_cache()
    if harness:  # the old harness's own random model, and each half of it with the other's
        own = build_bundle(
            "tiny" if spec == "tiny" else "full", quant if quant in QUANTS else default_quant()
        )
        mixes = {
            "harness": own,
            "product-lm+harness-mimi": dataclasses.replace(own, lm=bundle.lm),
            "harness-lm+product-mimi": dataclasses.replace(own, mimi=bundle.mimi),
        }
        for name, b in mixes.items():
            e = Engine(b, batch=batch, params=SamplingParams(), seed=0)
            for _ in range(5):
                e.step(np.zeros((batch, FRAME_SAMPLES), np.float32))
            emit(path, {"what": name, "quant": quant, "batch": batch, **_steps(e, steps)})
            del e
