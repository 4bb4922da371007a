"""Lab engine and prefill benchmarks on the harness's own random model (`build_bundle`: an LM from
`rolekit.randlm.build_lm` and a random Mimi, not loaded the way `respond` loads a model): the whole
full-duplex step (Mimi encode -> LM -> Mimi decode, one host sync), the step split into phases, a
step deep into a conversation, and the prompt prefill, at full or tiny size.
The product path a user times to choose a runtime is `rolekit bench engine|prefill`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from benchmarks.lm import weight_gb
from rolekit.bench.timing import peak_rss_gb, summarize
from rolekit.codec.config import mimi_202407
from rolekit.codec.mimi import Mimi
from rolekit.engine import engine as engine_module
from rolekit.engine.engine import Engine
from rolekit.frames import FRAME_SAMPLES
from rolekit.lm.sampling import SamplingParams
from rolekit.models import ModelBundle, tiny_configs
from rolekit.randlm import build_lm, default_quant, lm_config


def build_bundle(size: str, quant: str, seed: int = 0) -> ModelBundle:
    """Random-weight LM + Mimi of `size` (codebooks stay as initialised: timing only, not speech)."""
    if size == "tiny":
        lm_cfg, mimi_cfg = tiny_configs()  # the `tiny` model's sizes: LM card = Mimi bins
    else:
        lm_cfg, mimi_cfg = lm_config(size), mimi_202407()
    lm = build_lm(lm_cfg, quant, seed)
    mimi = Mimi(mimi_cfg)
    mimi.prepare()
    mx.eval(mimi.parameters())
    return ModelBundle(lm, mimi, None, Path("."), f"random-{size}-{quant}", True)


def bench_engine(
    size: str = "tiny",
    quant: str | None = None,
    batch: int = 1,
    steps: int = 50,
    warmup: int = 5,
    compiled: bool = False,
    greedy: bool = False,
    seed: int = 0,
    bundle: ModelBundle | None = None,
    start: int = 0,
    hold: bool = False,
    cache: int = -1,
) -> dict[str, Any]:
    """ms per `Engine.step` (user pcm in, agent pcm + tokens out as numpy), median and spread.

    Diagnostics of MLX's CUDA memory (an array the host reads moves into managed memory, and the
    allocator's cache later hands that buffer to a GPU kernel's output): `hold` keeps every array
    the step reads on the host alive for the whole run (no such buffer is reused), `cache` >= 0
    sets MLX's buffer-cache limit in bytes for the run (0: nothing is reused).

    `compiled`: the engine's whole-step compiled graph (`rolekit.engine.compiled`).
    `start`: frames already in the LM context before the first step (one batched temporal pass
    over random embeddings, as a prompt prefill is), e.g. past the 3000-frame ring to time the
    steps of a conversation older than 4 minutes. Mimi starts fresh either way."""
    quant = quant or default_quant()
    mx.reset_peak_memory()
    bundle = bundle or build_bundle(size, quant, seed)
    params = SamplingParams(greedy=greedy)
    engine = Engine(bundle, batch=batch, params=params, seed=seed, compiled=compiled)
    if start:
        _fill_context(engine, start, seed)
    rng = np.random.default_rng(seed)
    pcm = (0.1 * rng.standard_normal((warmup + steps + 3, batch, FRAME_SAMPLES))).astype(np.float32)
    samples, first = [], []
    held: list[Any] = []
    saved_np, saved_cache = engine_module.np, None
    if hold:
        engine_module.np = _Holding(np, held)
    if cache >= 0:
        saved_cache = mx.set_cache_limit(cache)
    try:
        for i in range(pcm.shape[0]):
            t0 = time.perf_counter()
            engine.step(pcm[i])
            ms = (time.perf_counter() - t0) * 1000.0
            if i >= warmup + 3:  # the first two calls prime the delays and skip the depformer/decoder
                samples.append(ms)
            elif i < 4:
                first.append(round(ms, 1))  # the compiled graph is traced on the first LM call
    finally:
        engine_module.np = saved_np
        if saved_cache is not None:
            mx.set_cache_limit(saved_cache)
    return {
        "runtime": "rolekit-engine",
        "variant": "compiled-step" if compiled else "eager",
        "hold": hold,
        "cache": cache,
        "held": len(held),
        "start": start,
        "device": str(mx.default_device()),
        "size": size,
        "quant": quant,
        "batch": batch,
        "greedy": greedy,
        "dep_steps": engine.dep_steps,
        "weights_gb": weight_gb(bundle.lm),
        "step": summarize(samples),
        "first_steps_ms": first,
        "slowest_ms": sorted(((round(ms, 1), i + warmup + 3) for i, ms in enumerate(samples)), reverse=True)[
            :3
        ],
        "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
        "peak_rss_gb": peak_rss_gb(),
    }


class _Holding:
    """numpy for `rolekit.engine.engine` in `bench_engine(hold=True)`: `array` keeps each MLX array
    it converts referenced in `held`."""

    def __init__(self, module: Any, held: list[Any]) -> None:
        self._module, self._held = module, held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def array(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, mx.array):
            self._held.append(value)
        return self._module.array(value, *args, **kwargs)


def _fill_context(engine: Engine, frames: int, seed: int) -> None:
    """Put `frames` positions into the engine's LM context (random embeddings, one pass)."""
    lm = engine.lm
    x = 0.1 * mx.random.normal((engine.batch, frames, lm.cfg.dim), key=mx.random.key(seed))
    _, logits = lm.temporal(x.astype(lm.dtype), engine.lm_cache)
    mx.eval(logits, *engine.lm_cache.arrays())
    engine.offsets = np.full(engine.batch, frames + 1, np.int64)  # primed, past the delays


def bench_prefill(
    size: str = "tiny",
    quant: str | None = None,
    batch: int = 1,
    frames: int = 250,
    steps: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """One batched temporal pass over `frames` prompt frames from an empty cache (voice + text)."""
    quant = quant or default_quant()
    cfg = lm_config(size)
    mx.reset_peak_memory()
    lm = build_lm(cfg, quant, seed)
    tokens = mx.random.randint(0, cfg.card, (batch, 1 + cfg.n_q, frames)).astype(mx.int32)  # [B, 17, T]
    x = lm.embed(tokens)  # [B, T, D]
    mx.eval(x)
    samples = []
    for i in range(warmup + steps):
        cache = lm.make_cache(batch)
        cache.reserve(frames)  # the ring's growth is allocation, not the timed pass
        mx.eval(*cache.arrays())
        t0 = time.perf_counter()
        _, logits = lm.temporal(x, cache)
        mx.eval(logits, *cache.arrays())
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1000.0)
    stats = summarize(samples)
    return {
        "runtime": "rolekit-mlx",
        "variant": "prefill",
        "device": str(mx.default_device()),
        "size": size,
        "quant": quant,
        "batch": batch,
        "frames": frames,
        "step": stats,
        "frames_per_s": round(batch * frames / (stats["median"] / 1000.0), 1),
        "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
        "peak_rss_gb": peak_rss_gb(),
    }


def bench_engine_pair(
    size: str = "tiny",
    quant: str | None = None,
    batch: int = 1,
    steps: int = 100,
    warmup: int = 5,
    greedy: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Eager and compiled `Engine.step` on one bundle, stepped alternately (eager, compiled, eager,
    ...) on the same audio, so that drifts of a shared or throttling machine hit both alike."""
    quant = quant or default_quant()
    mx.reset_peak_memory()
    bundle = build_bundle(size, quant, seed)
    params = SamplingParams(greedy=greedy)
    engines = {
        name: Engine(bundle, batch=batch, params=params, seed=seed, compiled=name == "compiled")
        for name in ("eager", "compiled")
    }
    rng = np.random.default_rng(seed)
    pcm = (0.1 * rng.standard_normal((warmup + steps + 3, batch, FRAME_SAMPLES))).astype(np.float32)
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for i in range(pcm.shape[0]):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            engine.step(pcm[i])
            if i >= warmup + 3:
                samples[name].append((time.perf_counter() - t0) * 1000.0)
    ratio = [e / c for e, c in zip(samples["eager"], samples["compiled"], strict=True)]
    return {
        "runtime": "rolekit-engine",
        "variant": "eager-vs-compiled",
        "device": str(mx.default_device()),
        "size": size,
        "quant": quant,
        "batch": batch,
        "eager": summarize(samples["eager"]),
        "compiled": summarize(samples["compiled"]),
        "step": summarize(samples["compiled"]),
        "eager_over_compiled": round(float(np.median(ratio)), 3),
        "peak_gb": round(mx.get_peak_memory() / 1e9, 2),
    }


def bench_prefill_modes(
    size: str = "tiny",
    quant: str | None = None,
    batch: int = 1,
    voice_frames: int = 48,
    text_frames: int = 180,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """The engine's prompt phases (voice replay, silence, text, silence) three ways: one batched pass,
    frame by frame (what NVIDIA's LMGen does), and restored from the on-disk prefill cache."""
    import tempfile

    from rolekit.engine.snapshot import prefill_cached
    from rolekit.frames import N_STREAMS, PrefillPlan
    from rolekit.models import VoicePrompt

    quant = quant or default_quant()
    bundle = build_bundle(size, quant, seed)
    dim = bundle.lm.cfg.dim
    rng = np.random.default_rng(seed)
    voices = [
        VoicePrompt(
            embeddings=(0.02 * rng.standard_normal((voice_frames - 1, dim))).astype(np.float32),
            codes=None,
            cache=np.full((N_STREAMS, 4), 3, np.int32),
            source=f"random-voice-{b}",
        )
        for b in range(batch)
    ]
    plans = [
        PrefillPlan(voice=f"random-{b}", text_ids=tuple(int(t) for t in rng.integers(4, 1000, text_frames)))
        for b in range(batch)
    ]
    engine = Engine(bundle, batch=batch, params=SamplingParams(), seed=seed)

    def timed(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        mx.eval(*engine.lm_cache.arrays())
        return (time.perf_counter() - t0) * 1000.0

    timed(lambda: engine.prefill(plans, voices))  # warm-up (kernels, graph)
    batched = timed(lambda: engine.prefill(plans, voices))
    stepwise = timed(lambda: engine.prefill(plans, voices, stepwise=True))
    with tempfile.TemporaryDirectory() as tmp:
        folder = cache_dir or Path(tmp)
        first = timed(lambda: prefill_cached(engine, plans, voices, folder))
        restored = timed(lambda: prefill_cached(engine, plans, voices, folder))
    return {
        "runtime": "rolekit-engine",
        "variant": "prefill-modes",
        "device": str(mx.default_device()),
        "size": size,
        "quant": quant,
        "batch": batch,
        "frames": plans[0].frames + voice_frames,
        "batched_ms": round(batched, 2),
        "stepwise_ms": round(stepwise, 2),
        "first_run_with_save_ms": round(first, 2),
        "restored_ms": round(restored, 2),
        "stepwise_over_batched": round(stepwise / batched, 2),
        "batched_over_restored": round(batched / max(restored, 1e-6), 1),
        "peak_rss_gb": peak_rss_gb(),
    }


class _Timed:
    """Wraps one phase of `Engine.step` (a callable): records ms per call; `sync` waits for it."""

    def __init__(self, fn: Any, sync: bool) -> None:
        self.fn, self.sync, self.ms = fn, sync, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        res = self.fn(*args, **kwargs)
        if self.sync:
            mx.eval(res)
        self.ms.append((time.perf_counter() - t0) * 1000.0)
        return res


def bench_engine_phases(
    size: str = "tiny",
    quant: str | None = None,
    batch: int = 1,
    steps: int = 30,
    warmup: int = 5,
    seed: int = 0,
    bundle: ModelBundle | None = None,
) -> dict[str, Any]:
    """Where a compiled `Engine.step` spends its wall time, in two runs of the same engine kind.

    `overlapped` (the engine as it runs): ms to build each phase's graph on the host (Mimi encode,
    LM step, Mimi decode: Python + MLX graph construction, no device work) and the rest of the
    step (`wait`: MLX launching the kernels and the device finishing them). `serialized`: each
    phase evaluated before the next starts (build + launch + device), so their sum minus the
    overlapped step is the overlap that one graph per frame gains."""
    quant = quant or default_quant()
    bundle = bundle or build_bundle(size, quant, seed)
    out: dict[str, Any] = {"runtime": "rolekit-engine-phases", "size": size, "quant": quant, "batch": batch}
    rng = np.random.default_rng(seed)
    pcm = (0.1 * rng.standard_normal((warmup + steps + 3, batch, FRAME_SAMPLES))).astype(np.float32)
    for mode in ("overlapped", "serialized"):
        engine = Engine(bundle, batch=batch, params=SamplingParams(), seed=seed, compiled=True)
        sync = mode == "serialized"
        mimi = engine.mimi_steps
        enc = _Timed(mimi.encode_step, sync)
        dec = _Timed(mimi.decode_step, sync)
        lm = _Timed(engine.lm_step, sync)
        mimi.encode_step, mimi.decode_step, engine.lm_step = enc, dec, lm
        total = []
        for i in range(pcm.shape[0]):
            t0 = time.perf_counter()
            engine.step(pcm[i])
            total.append((time.perf_counter() - t0) * 1000.0)
        n = pcm.shape[0] - (warmup + 3)  # the first two calls prime the delays (no LM / decode)
        step = total[-n:]
        phases = {"encode": enc.ms[-n:], "lm": lm.ms[-n:], "decode": dec.ms[-n:]}
        res = {"step": summarize(step)}
        res.update({k: summarize(v)["median"] for k, v in phases.items()})
        if not sync:
            res["wait"] = summarize([s - sum(p) for s, *p in zip(step, *phases.values(), strict=True)])[
                "median"
            ]
        out[mode] = res
    return out
