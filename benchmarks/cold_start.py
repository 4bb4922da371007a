"""Where a process's path from prefill to its first real step goes: each phase of the first engine
steps split into building the graph on the host (Python tracing, `mx.compile`) and evaluating it
(kernel builds or cache loads, then the device work), and each later graph `Engine.prepare` builds.

Run it twice on one machine: the first process fills the kernel caches, the second reads them
(`rolekit warmup` is the product's own measurement of the same path).

    python -c "from benchmarks.cold_start import run; run('random-7b', 'q4', out='cold.jsonl')"
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from benchmarks.jsonl import emit
from rolekit.frames import FRAME_SAMPLES, N_CODEBOOKS


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    res = fn()
    return res, round((time.perf_counter() - t0) * 1000.0, 1)


def run(spec: str = "random-7b", quant: str = "q4", batch: int = 1, out: str | None = None) -> None:
    from rolekit import models
    from rolekit.engine import ring as R
    from rolekit.engine.engine import Engine
    from rolekit.lm.sampling import SamplingParams
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.schema import Persona

    path = Path(out) if out else None
    t_all = time.perf_counter()
    bundle, load_ms = _timed(lambda: models.load(spec, models.LoadOptions(quant=quant, batch=batch)))
    plan = compile_persona(
        Persona(name="cold", prompt="You enjoy having a good conversation.", voice="NATF2"),
        {},
        bundle.tokenizer,
    )
    voice = models.load_voice(bundle, plan.voice)
    engine, engine_ms = _timed(lambda: Engine(bundle, batch=batch, params=SamplingParams(), seed=0))
    _, prefill_ms = _timed(
        lambda: (engine.prefill([plan] * batch, [voice] * batch), mx.eval(*engine.lm_cache.arrays()))
    )
    emit(path, {"what": "load", "load_ms": load_ms, "engine_ms": engine_ms, "prefill_ms": prefill_ms})
    silence = np.zeros((batch, FRAME_SAMPLES), np.float32)
    t_first = time.perf_counter()
    for i in range(4):  # the phases of `Engine.step`, each built then evaluated
        row: dict[str, Any] = {"what": f"step{i}"}
        codes, row["encode_build_ms"] = _timed(
            lambda: engine.mimi_steps.encode_step(mx.array(silence)[:, None, :], engine.mimi_state)
        )
        _, row["encode_eval_ms"] = _timed(lambda c=codes: mx.eval(c, *engine.mimi_state.arrays()))
        user = codes[:, :N_CODEBOOKS, 0].astype(mx.int32)
        cols = engine.columns()
        if not engine.offsets.any():
            engine.step(silence)  # LMGen's first call only primes (no forward pass)
            emit(path, row)
            continue
        res, row["lm_build_ms"] = _timed(
            lambda u=user, o=cols: engine.lm_step(
                engine.ring.cache, engine.ring.provided, o, u, engine.keys, engine.lm_cache
            )
        )
        cache, provided, lm_out, engine.keys = res
        _, row["lm_eval_ms"] = _timed(lambda r=res: mx.eval(*r, *engine.lm_cache.arrays()))
        engine.ring = R.Ring(cache=cache, provided=provided)
        engine.offsets = engine.offsets + 1
        pcm, row["decode_build_ms"] = _timed(
            lambda o=lm_out: engine.mimi_steps.decode_step(o[:, 1:, None], engine.mimi_state)
        )
        _, row["decode_eval_ms"] = _timed(lambda p=pcm: mx.eval(p, *engine.mimi_state.arrays()))
        emit(path, row)
    first_ms = (time.perf_counter() - t_first) * 1000.0
    built, prepare_ms = _timed(lambda: engine.prepare(None))
    emit(path, {"what": "prepare", "graphs": built, "ms": prepare_ms})
    _, step_ms = _timed(lambda: engine.step(silence))
    emit(
        path,
        {
            "what": "total",
            "first_steps_ms": round(first_ms, 1),
            "prepare_ms": prepare_ms,
            "real_step_ms": step_ms,
            "prefill_to_real_step_s": round((first_ms + prepare_ms + step_ms) / 1000.0, 2),
            "wall_s": round(time.perf_counter() - t_all, 1),
        },
    )
