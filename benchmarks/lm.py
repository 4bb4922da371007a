"""Lab LM benchmark: one 80 ms generation step (embed + temporal + text sampling + depformer).

Not the product path (`rolekit bench engine` times that): the model is `rolekit.randlm.build_lm`,
random weights built directly in MLX at the requested size (no checkpoint), cast to the activation
dtype and optionally affine-quantized (linears only, as `convert --quant` does).
The step mirrors Kyutai's LMGen: every frame feeds back the tokens it generated, and by default the
depformer samples all dep_q codebooks (like the reference); `dep_steps=8` with the user stream
provided is what rolekit's engine runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from rolekit.bench.timing import peak_rss_gb, speedup, summarize
from rolekit.engine import ring as R
from rolekit.engine.compiled import CompiledStep
from rolekit.engine.engine import device_columns
from rolekit.engine.step import StepConstants
from rolekit.frames import N_CODEBOOKS
from rolekit.lm.model import LM
from rolekit.lm.sampling import SamplingParams, sample
from rolekit.nn.kernels import Kernels
from rolekit.randlm import build_lm, default_quant, lm_config


def param_count_b(lm: LM) -> float:
    """Parameters of `lm` in billions (a quantized weight counts its packed words)."""
    return round(sum(p.size for _, p in tree_flatten(lm.parameters())) / 1e9, 3)


def weight_gb(lm: LM) -> float:
    """Bytes of `lm`'s parameters in GB."""
    return round(sum(p.nbytes for _, p in tree_flatten(lm.parameters())) / 1e9, 2)


class LmStepper:
    """Explicit state of the benchmark loop: LM cache, the tokens fed next, the RNG key."""

    def __init__(
        self, lm: LM, batch: int, dep_steps: int | None = None, greedy: bool = False, seed: int = 0
    ) -> None:
        cfg = lm.cfg
        self.lm = lm
        self.batch = batch
        self.dep_steps = cfg.dep_q if dep_steps is None else dep_steps
        self.params = SamplingParams(greedy=greedy)
        self.cache = lm.make_cache(batch)
        first = [cfg.text_card] + [cfg.card] * cfg.n_q  # Kyutai's initial tokens
        self.tokens = mx.broadcast_to(mx.array(first, dtype=mx.int32)[None, :, None], (batch, 1 + cfg.n_q, 1))
        provided = mx.full((batch, cfg.dep_q), -1, dtype=mx.int32)
        if self.dep_steps < cfg.dep_q:  # the engine's case: the user codebooks are given
            user = mx.random.randint(0, cfg.card, (batch, cfg.dep_q - self.dep_steps)).astype(mx.int32)
            provided = mx.concatenate([provided[:, : self.dep_steps], user], axis=1)
        self.provided = provided
        self.key = mx.random.key(seed)
        self.kernels = Kernels.for_device()  # as the engine picks them

    def temporal(self) -> tuple[mx.array, mx.array]:
        """Embed the fed tokens, run one temporal step, sample text -> (hidden [B, D], text [B])."""
        self.key, k_text = mx.random.split(self.key, 2)
        h, logits = self.lm.temporal(self.lm.embed(self.tokens, self.kernels), self.cache)
        p = self.params
        text = (
            mx.argmax(logits[:, -1], axis=-1).astype(mx.int32)
            if p.greedy
            else sample(logits[:, -1], p.text_temperature, p.text_top_k, k_text)
        )
        return h[:, -1], text

    def depformer(self, hidden: mx.array, text: mx.array) -> mx.array:
        """-> next tokens [B, 17, 1] (text + dep_q codebooks)."""
        self.key, k_dep = mx.random.split(self.key, 2)
        audio = self.lm.depformer(
            hidden, text, self.provided, self.params, k_dep, steps=self.dep_steps, kernels=self.kernels
        )
        self.tokens = mx.concatenate([text[:, None], audio], axis=1)[:, :, None]
        return self.tokens

    def step(self) -> mx.array:
        hidden, text = self.temporal()
        return self.depformer(hidden, text)

    def sync_arrays(self) -> list[mx.array]:
        return [self.tokens, self.key, *self.cache.arrays()]


def _header(
    lm: LM, size: str, quant: str, batch: int, dep_steps: int, build_s: float, variant: str
) -> dict[str, Any]:
    return {
        "runtime": "rolekit-mlx",
        "variant": variant,
        "device": str(mx.default_device()),
        "size": size,
        "quant": quant,
        "batch": batch,
        "dep_steps": dep_steps,
        "params_b": param_count_b(LM(lm.cfg)),  # built lazily, never evaluated
        "weights_gb": weight_gb(lm),
        "build_s": round(build_s, 2),
    }


class CompiledLmStepper:
    """The engine's LM step as `Engine.step` runs it (`engine.step.lm_step`, compiled per attended
    ring prefix, the `Kernels` policy of the device), without Mimi: the same random user codes
    every frame, the generated tokens fed back through the token ring."""

    def __init__(self, lm: LM, batch: int, dep_steps: int, params: SamplingParams, seed: int = 0) -> None:
        cfg = lm.cfg
        initial = R.initial_tokens(mx, cfg.text_card, cfg.card)
        c = StepConstants(lm, batch, initial, params, params.greedy, dep_steps, Kernels.for_device())
        self.step_fn = CompiledStep(c)
        self.cache = lm.make_cache(batch)
        self.user = mx.random.randint(0, cfg.card, (batch, N_CODEBOOKS), key=mx.random.key(seed)).astype(
            mx.int32
        )
        tokens = mx.concatenate([mx.zeros((batch, 1 + N_CODEBOOKS), mx.int32), self.user], axis=1)
        ring = R.provide(mx, R.new_ring(mx, batch), tokens, None, R.step_columns(mx, 0), initial)
        self.ring = R.prime(mx, ring, initial)  # LMGen's first call (offset 0) only primes
        self.offset = 1
        self.keys = mx.stack([mx.random.key(seed + i) for i in range(batch)])  # [B, 2]
        self.out = mx.zeros((batch, 1 + N_CODEBOOKS), mx.int32)

    def step(self) -> mx.array:
        """One frame -> out [B, 9] (text + agent codes), not yet evaluated."""
        cols = device_columns(np.full(self.ring.cache.shape[0], self.offset))  # as Engine.step
        cache, provided, self.out, self.keys = self.step_fn(
            self.ring.cache, self.ring.provided, cols, self.user, self.keys, self.cache
        )
        self.ring = R.Ring(cache, provided)
        self.offset += 1
        return self.out

    def sync_arrays(self) -> list[mx.array]:
        return [self.out, self.keys, self.ring.cache, self.ring.provided, *self.cache.arrays()]


def _bench_compiled(
    lm: LM,
    st: LmStepper,
    size: str,
    quant: str,
    batch: int,
    steps: int,
    warmup: int,
    seed: int,
    build_s: float,
) -> dict[str, Any]:
    cs = CompiledLmStepper(lm, batch, st.dep_steps, st.params, seed)

    def one() -> list[mx.array]:
        cs.step()
        return cs.sync_arrays()

    variant = "compiled-greedy" if st.params.greedy else "compiled"
    result = _header(lm, size, quant, batch, st.dep_steps, build_s, variant)
    result["step"] = summarize(_loop(one, steps, max(warmup, 2)))  # the first call traces and compiles
    result["peak_gb"] = round(mx.get_peak_memory() / 1e9, 2)
    result["peak_rss_gb"] = peak_rss_gb()
    return result


def _loop(step: Callable[[], list[mx.array]], steps: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        mx.eval(*step())
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000.0)
    return out


def bench_lm(
    size: str = "tiny",
    quant: str | None = None,
    batch: int = 1,
    steps: int = 50,
    warmup: int = 5,
    dep_steps: int | None = None,
    breakdown: bool = True,
    seed: int = 0,
    lm: LM | None = None,
    compiled: bool = False,
    greedy: bool = False,
) -> dict[str, Any]:
    """Median/p10/p90 ms of one LM step at `size`/`quant`/`batch`; optional temporal/depformer split.

    Default: the eager LM (`LM.temporal` and `LM.depformer` called op by op), with the split.
    `compiled`: the engine's compiled LM step (`CompiledLmStepper`), no split.
    """
    quant = quant or default_quant()
    cfg = lm_config(size)
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    lm = lm if lm is not None else build_lm(cfg, quant, seed)
    build_s = time.perf_counter() - t0
    st = LmStepper(lm, batch, dep_steps, greedy=greedy, seed=seed)
    if compiled:
        return _bench_compiled(lm, st, size, quant, batch, steps, warmup, seed, build_s)

    def whole() -> list[mx.array]:
        st.step()
        return st.sync_arrays()

    result = _header(lm, size, quant, batch, st.dep_steps, build_s, "eager")
    result["step"] = summarize(_loop(whole, steps, warmup))
    if breakdown:
        _eager_breakdown(st, steps, warmup, result)
    result["peak_gb"] = round(mx.get_peak_memory() / 1e9, 2)
    result["peak_rss_gb"] = peak_rss_gb()
    return result


def _eager_breakdown(st: LmStepper, steps: int, warmup: int, result: dict[str, Any]) -> None:
    """temporal (+ text sampling) and depformer timed apart, a host sync after each."""
    temporal_ms: list[float] = []
    dep_ms: list[float] = []
    for i in range(max(warmup, 1) + max(steps // 2, 1)):
        t0 = time.perf_counter()
        hidden, text = st.temporal()
        mx.eval(hidden, text, *st.cache.arrays())
        t1 = time.perf_counter()
        mx.eval(st.depformer(hidden, text))
        t2 = time.perf_counter()
        if i >= max(warmup, 1):
            temporal_ms.append((t1 - t0) * 1000.0)
            dep_ms.append((t2 - t1) * 1000.0)
    result["temporal"] = summarize(temporal_ms)
    result["depformer"] = summarize(dep_ms)


def bench_lm_with_reference(
    size: str = "tiny",
    quant: str | None = None,
    batch: int = 1,
    steps: int = 50,
    warmup: int = 5,
    dep_steps: int | None = None,
    compiled: bool = False,
) -> list[dict[str, Any]]:
    """[ours (`bench_lm`), Kyutai's LMGen at the same size in this process], the ratio on ours; an
    unavailable reference is reported as its `error`, not raised."""
    from rolekit.bench.reference import bench_reference_lm

    ours = bench_lm(size, quant, batch, steps, warmup, dep_steps, compiled=compiled)
    try:
        ref = bench_reference_lm(lm_config(size).to_kyutai(), batch=batch, steps=steps, warmup=warmup)
    except Exception as exc:  # noqa: BLE001 - an unavailable reference is reported, not fatal
        ref = {"runtime": "kyutai-moshi-torch", "error": f"{type(exc).__name__}: {exc}"}
    ours["speedup_vs_reference"] = speedup(ref, ours)
    return [ours, ref]
