"""`rolekit bench engine` and `rolekit bench prefill`: the product path, timed as users run it.

The model is loaded by `loader(spec)` (the CLI passes the very loader `respond` uses: same
`--model` / `--dtype` / `--quant` / `--compat`, quantize-on-first-load included), a short persona
is prefilled, the engine is warmed up like `respond` does, then `steps` full-duplex steps (Mimi
encode -> LM -> Mimi decode, one host sync each) are timed on noise. Kyutai's LMGen at the same
size runs next, twice, each in its own process: with CUDA graphs (NO_TORCH_COMPILE=1) and with
torch.compile (NO_TORCH_COMPILE cleared; a run in which dynamo compiled nothing is an error).

`bench_prefill` times the same persona's prompt phases on the same kind of engine three ways: one
batched temporal pass (`Engine.prefill`), frame by frame (`stepwise=True`, what NVIDIA's LMGen
does), and through the on-disk prefill cache (`engine.snapshot.prefill_cached`, first run with its
save, then the restore).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from rolekit.bench.timing import peak_rss_gb, speedup, summarize
from rolekit.engine.engine import Engine
from rolekit.engine.warmup import warmup
from rolekit.frames import FRAME_SAMPLES
from rolekit.lm.sampling import SamplingParams

PROMPT = "You enjoy having a good conversation."


def weights_gb(lm: Any) -> float:
    """Bytes of `lm`'s parameters in GB."""
    return round(sum(v.nbytes for _, v in tree_flatten(lm.parameters())) / 1e9, 2)


def _persona(bundle: Any) -> tuple[Any, Any]:
    """(PrefillPlan, VoicePrompt) of the benchmark persona, compiled as `respond` compiles one."""
    from rolekit import models
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.schema import Persona

    plan = compile_persona(Persona(name="bench", prompt=PROMPT, voice="NATF2"), {}, bundle.tokenizer)
    return plan, models.load_voice(bundle, plan.voice)


def _size(bundle: Any) -> str:
    return f"{bundle.lm.cfg.dim}d-{bundle.lm.cfg.num_layers}L"


def bench_product(
    spec: str,
    loader: Callable[[str], Any],
    batch: int = 1,
    steps: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """ms per `Engine.step` of `spec` as loaded by `loader`, after a prefill and the warm-up."""
    from rolekit.lm.precision import device_kind

    mx.reset_peak_memory()
    t0 = time.perf_counter()
    bundle = loader(spec)
    load_s = time.perf_counter() - t0
    plan, voice = _persona(bundle)
    engine = Engine(bundle, batch=batch, params=SamplingParams(), seed=seed, kernels=bundle.kernels)
    t0 = time.perf_counter()
    engine.prefill([plan] * batch, [voice] * batch)
    mx.eval(*engine.lm_cache.arrays())
    prefill_ms = (time.perf_counter() - t0) * 1000.0
    warm = warmup(engine, frames=steps)
    rng = np.random.default_rng(seed)
    pcm = (0.1 * rng.standard_normal((steps, batch, FRAME_SAMPLES))).astype(np.float32)
    samples = []
    for i in range(steps):
        t0 = time.perf_counter()
        engine.step(pcm[i])
        samples.append((time.perf_counter() - t0) * 1000.0)
    stats = summarize(samples)
    return {
        "runtime": "rolekit-engine",
        "variant": "product",
        **bundle.describe(),
        "device": device_kind(),
        "size": _size(bundle),
        "batch": batch,
        "weights_gb": weights_gb(bundle.lm),
        "load_s": round(load_s, 2),
        "prefill_ms": round(prefill_ms, 1),
        "warmup_steps_ms": [round(ms, 1) for ms in warm.steps_ms],
        "warmup_graphs": warm.graphs,
        "warmup_graphs_s": round(warm.graphs_ms / 1000.0, 2),
        "rolekit_kernels": warm.kernel_report(),
        "step": stats,
        "rtf": round(stats["median"] / 80.0, 4),
        "first_steps_ms": [round(ms, 1) for ms in samples[:3]],
        "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
        "peak_rss_gb": peak_rss_gb(),
        "_lm_kwargs": bundle.lm.cfg.to_kyutai(),  # for the reference; popped by the caller
    }


def bench_product_with_reference(
    spec: str,
    loader: Callable[[str], Any],
    batch: int = 1,
    steps: int = 50,
    warmup_steps: int = 5,
    reference: bool = True,
) -> list[dict[str, Any]]:
    """[ours, LMGen with CUDA graphs, LMGen with torch.compile] from one command, ratios on ours."""
    from rolekit.bench.reference import reference_in_child

    ours = bench_product(spec, loader, batch, steps)
    lm_kwargs = ours.pop("_lm_kwargs")
    out = [ours]
    if not reference:
        return out
    for compile_ in (False, True):
        ref = reference_in_child(lm_kwargs, batch, steps, warmup_steps, compile_)
        key = "speedup_vs_lmgen_compile" if compile_ else "speedup_vs_lmgen"
        ours[key] = speedup(ref, ours)
        out.append(ref)
    ours["speedup_vs_reference"] = ours.get("speedup_vs_lmgen_compile") or ours.get("speedup_vs_lmgen")
    return out


def bench_prefill(
    spec: str,
    loader: Callable[[str], Any],
    batch: int = 1,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """ms of the persona's prefill of `batch` conversations on `spec` as loaded by `loader`: one
    batched pass (after one untimed pass that builds the kernels), stepwise, and through the
    prefill cache in `cache_dir` (a fresh temporary folder by default; with a folder that already
    holds this snapshot the first run is a restore too: `first_run_restored` says so). Each timing
    ends when the LM cache is evaluated."""
    from rolekit.engine.snapshot import prefill_cached
    from rolekit.lm.precision import device_kind

    mx.reset_peak_memory()
    bundle = loader(spec)
    plan, voice = _persona(bundle)
    plans, voices = [plan] * batch, [voice] * batch
    engine = Engine(bundle, batch=batch, params=SamplingParams(), seed=seed, kernels=bundle.kernels)
    frames = max(r.calls for r in engine.prefill_inputs(plans, voices))

    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        t0 = time.perf_counter()
        out = fn()
        mx.eval(*engine.lm_cache.arrays())
        return (time.perf_counter() - t0) * 1000.0, out

    timed(lambda: engine.prefill(plans, voices))  # builds the kernels and graphs: not timed
    batched, _ = timed(lambda: engine.prefill(plans, voices))
    stepwise, _ = timed(lambda: engine.prefill(plans, voices, stepwise=True))
    with tempfile.TemporaryDirectory(prefix="rolekit-bench-prefill-") as tmp:
        folder = cache_dir if cache_dir is not None else Path(tmp)
        first, first_hit = timed(lambda: prefill_cached(engine, plans, voices, folder))
        restored, hit = timed(lambda: prefill_cached(engine, plans, voices, folder))
    return {
        "runtime": "rolekit-engine",
        "variant": "prefill",
        **bundle.describe(),
        "device": device_kind(),
        "size": _size(bundle),
        "batch": batch,
        "frames": frames,
        "batched_ms": round(batched, 2),
        "stepwise_ms": round(stepwise, 2),
        "first_run_with_save_ms": round(first, 2),
        "restored_ms": round(restored, 2),
        "first_run_restored": bool(first_hit),
        "restored": bool(hit),
        "stepwise_over_batched": round(stepwise / batched, 2),
        "batched_over_restored": round(batched / max(restored, 1e-6), 1),
        "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
        "peak_rss_gb": peak_rss_gb(),
    }
