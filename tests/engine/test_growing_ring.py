"""The engine over a growing ring KV cache (`LM.make_cache`, `LmCache.reserve`): the same tokens
and audio as over a full-size ring, on the compiled op path, the eager path and the temporal
kernel's contract (`temporal_cuda.reference` in place of the CUDA launch), before, across and
after the wrap, with left-padded rows; snapshots taken while the ring is small restore into an
engine whose ring has grown since, and the prefill cache assembles rows of different ring sizes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mlx.utils import tree_flatten

from rolekit import models
from rolekit.engine import step as S
from rolekit.engine.compiled import CompiledStep
from rolekit.engine.engine import Engine
from rolekit.engine.snapshot import prefill_cached, state_equal
from rolekit.engine.warmup import warmup
from rolekit.lm import temporal_cuda as tc
from rolekit.lm.model import LM
from rolekit.lm.sampling import SamplingParams
from rolekit.nn.kernels import OPS, Kernels
from tests.engine.conftest import make_plan, user_frames

GREEDY = SamplingParams(greedy=True)
HOT = SamplingParams(text_temperature=1.0, audio_temperature=1.0)
CONTEXT = 80  # rings of 8, 16, 32, 64, then 80 slots
PLANS = [make_plan("NATF0", 2, 1), make_plan("VARM4", 9, 2), make_plan("NATM1", 5, 3)]
PARAMS, SEEDS = [HOT, GREEDY, HOT], [41, 42, 43]


def _bundle(tiny_bundle, floor: int, heads: int | None = None):
    """The tiny model's weights with an 80-frame context, rings starting at `floor` slots."""
    cfg = dataclasses.replace(
        tiny_bundle.lm.cfg, context=CONTEXT, num_heads=heads or tiny_bundle.lm.cfg.num_heads
    )
    lm = LM(cfg)
    lm.load_weights(list(tree_flatten(tiny_bundle.lm.parameters())))
    lm.eval()
    lm.ring_floor = floor
    return dataclasses.replace(tiny_bundle, lm=lm, model_id=f"{tiny_bundle.model_id}-ring{floor}")


@pytest.fixture(scope="module")
def growing(tiny_bundle):
    return _bundle(tiny_bundle, 8)


@pytest.fixture(scope="module")
def full(tiny_bundle):
    return _bundle(tiny_bundle, CONTEXT)


def _engine(bundle, plans=PLANS, params=PARAMS, seeds=SEEDS, compiled=True, kernels=OPS) -> Engine:
    engine = Engine(bundle, len(plans), params, seeds, compiled=compiled, kernels=kernels)
    if kernels.temporal:  # the kernel's contract in its place, looked up per trace (tests wrap it)
        engine.lm_step.temporal_kernel = tc.TemporalKernel(lambda *a: tc.reference(*a), writes_rings=False)
    engine.prefill(plans, [models.load_voice(bundle, p.voice) for p in plans])
    return engine


def _run(engine: Engine, frames: np.ndarray, capacities: list[int] | None = None):
    tokens, pcm = [], []
    for i in range(frames.shape[1]):
        out = engine.step(frames[:, i])
        if capacities is not None:
            capacities.append(engine.lm_cache.rings[0].capacity)
        if out.ready:
            tokens.append(np.concatenate([out.text[:, None], out.audio], axis=1))
            pcm.append(out.pcm)
    return np.stack(tokens, axis=1), np.stack(pcm, axis=1)


def _frames(engine: Engine) -> np.ndarray:
    start = engine.lm_cache.start
    n = CONTEXT + 10 - engine.lm_cache.offset + int(start.max())  # past the wrap and the padding
    return user_frames(n, 8, batch=3)


@pytest.mark.parametrize("compiled", [True, False])
def test_growing_ring_equals_the_full_ring(growing, full, compiled, monkeypatch):
    monkeypatch.setattr(CompiledStep, "MIN_PREFIX", 8)  # the compiled step's prefixes as on the GPU
    ref = _engine(full, compiled=compiled)
    eng = _engine(growing, compiled=compiled)
    assert ref.lm_cache.rings[0].capacity == CONTEXT
    first = eng.lm_cache.rings[0].capacity
    assert 8 < first < CONTEXT and eng.lm_cache.offset <= first  # grown by the prefill, not to full size
    assert eng.lm_cache.start is not None and eng.lm_cache.start.any()
    frames = _frames(ref)
    caps: list[int] = []
    t_ref, p_ref = _run(ref, frames)
    t_eng, p_eng = _run(eng, frames, caps)
    np.testing.assert_array_equal(t_ref, t_eng)
    np.testing.assert_allclose(p_ref, p_eng, atol=1e-5)
    assert sorted(set(caps)) == [c for c in (16, 32, 64, CONTEXT) if c >= first] and caps == sorted(caps)
    assert len(set(caps)) >= 2
    assert len(np.unique(t_eng[:, :, 0])) > 3  # really generating


def test_temporal_kernel_contract_over_a_growing_ring(tiny_bundle, monkeypatch):
    """The kernel indexes the ring by its own capacity (C = the buffer's slots, CTX = min(context,
    C)): over a growing ring it gives the op path's full-ring tokens."""
    monkeypatch.setattr(CompiledStep, "MIN_PREFIX", 8)
    ref = _engine(_bundle(tiny_bundle, CONTEXT, heads=1))
    ker_bundle = _bundle(tiny_bundle, 8, heads=1)
    assert tc.pack(ker_bundle.lm) is not None
    shapes = []
    real = tc.reference
    monkeypatch.setattr(tc, "reference", lambda *a: (shapes.append((a[4][0].shape[2], a[6])), real(*a))[1])
    ker = _engine(ker_bundle, kernels=Kernels(temporal=True))
    assert ker.lm_step.uses_kernel(ker.lm_cache)
    frames = _frames(ref)
    t_ref, p_ref = _run(ref, frames)
    t_ker, p_ker = _run(ker, frames)
    np.testing.assert_array_equal(t_ref, t_ker)
    np.testing.assert_allclose(p_ref, p_ker, atol=1e-5)
    assert {(64, 64), (CONTEXT, CONTEXT)} <= set(shapes)  # (C, attended length)
    assert all(c == n for c, n in shapes)  # before the wrap the attended prefix is the whole ring


def test_snapshot_of_a_small_ring_restores_after_growth(growing):
    engine = _engine(growing, PLANS[:1], HOT, 4)
    frames = user_frames(60, 6)
    _run(engine, frames[:, :3])
    snap = engine.snapshot()
    small = snap.lm["layers.0.keys"].shape[2]
    t1, p1 = _run(engine, frames[:, 3:])
    assert engine.lm_cache.rings[0].capacity > small
    engine.restore(snap)
    assert engine.lm_cache.rings[0].capacity == small
    t2, p2 = _run(engine, frames[:, 3:])
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(p1, p2)
    # the warm-up runs steps (the ring may grow) and puts the small ring back
    before = engine.snapshot()
    warmup(engine, steps=4)
    assert state_equal(before, engine.snapshot())


def test_prefill_cache_assembles_rows_of_different_ring_sizes(growing, full, tmp_path):
    """Rows cached from batch-1 prefills (rings of different sizes) restore into one padded batch
    that generates what a full-size ring generates."""
    voices = [models.load_voice(growing, p.voice) for p in PLANS]
    for p, v, q, s in zip(PLANS, voices, PARAMS, SEEDS, strict=True):
        assert prefill_cached(Engine(growing, 1, q, s), [p], [v], tmp_path) is False
    restored = Engine(growing, 3, PARAMS, SEEDS)
    assert prefill_cached(restored, PLANS, voices, tmp_path)
    ref = _engine(full)
    assert state_equal(
        ref.snapshot(), restored.snapshot(), atol=2e-5
    )  # 80 slots vs fewer: compared as one size
    frames = _frames(ref)
    np.testing.assert_array_equal(_run(ref, frames)[0], _run(restored, frames)[0])


@pytest.mark.parametrize(
    "kernel,room",
    [(False, "free"), (False, "none"), (False, "trace"), (True, "free")],
    ids=["ops", "ops-no-room", "ops-trace-only", "temporal-kernel"],
)
def test_warmup_builds_every_later_step_graph_ahead(growing, kernel, room, monkeypatch):
    """`warmup(frames=N)` builds every graph that the next N steps need (each ring size, each
    prefix, the full ring after the wrap): traced, and run once on scratch rings where they fit
    in half the free memory (their kernels are built on that run); the conversation then traces
    nothing, and its tokens and audio equal those of an engine that compiled as it went."""
    from rolekit.engine import compiled as compiled_module
    from rolekit.engine import engine as engine_module

    monkeypatch.setattr(CompiledStep, "MIN_PREFIX", 8)
    monkeypatch.setattr(compiled_module, "_RUN", set())  # nothing run yet in this "process"
    if room == "none":
        monkeypatch.setattr(engine_module, "free_memory_bytes", lambda: 0.0)
    kernels = Kernels(temporal=True) if kernel else OPS
    bundle = _bundle(growing, 8, heads=1) if kernel else growing
    shared = tc.TemporalKernel(lambda *a: tc.reference(*a), writes_rings=False)  # one, as tc.KERNEL

    def engine():
        e = _engine(bundle, kernels=kernels)
        if kernel:
            e.lm_step.temporal_kernel = shared
        return e

    lazy, eager = engine(), engine()
    frames = _frames(lazy)
    plan = eager.lm_step.upcoming(eager.lm_cache, None)
    caps = [cap for _, cap, _ in plan]
    assert caps == sorted(caps) and caps[-1] == CONTEXT and 64 in caps
    if kernel:  # one launch per ring size: the kernel evaluates visibility itself
        assert len(set(caps)) == len(caps) and not any(s.masked for _, _, s in plan)
    else:  # masked prefixes, then the full ring without a mask after the wrap
        assert caps[-2:] == [CONTEXT, CONTEXT]
        assert [s.masked for _, _, s in plan] == [True] * (len(plan) - 1) + [False]
    assert [pos for pos, _, _ in plan] == sorted(pos for pos, _, _ in plan)
    if room == "trace":
        assert eager.prepare(frames.shape[1], evaluate=False) == len(plan)
        assert warmup(eager, frames=frames.shape[1]).graphs == 0  # all built already
    else:
        result = warmup(eager, frames=frames.shape[1])
        assert result.graphs == len(plan) - 1 and result.seconds > 0  # its own steps built one
    ran = len(compiled_module._RUN)
    assert ran == (len(plan) - 1 if room == "free" else 0)
    graphs, built = dict(eager.lm_step.graphs), set(eager.lm_step.built)
    traces = []  # lm_step itself runs only while a graph is traced
    real_step = S.lm_step
    monkeypatch.setattr(S, "lm_step", lambda *a: (traces.append(a[1]), real_step(*a))[1])
    t_eager, p_eager = _run(eager, frames)
    assert traces == []  # nothing traced mid-conversation
    assert eager.lm_step.graphs == graphs and eager.lm_step.built == built
    monkeypatch.setattr(S, "lm_step", real_step)
    t_lazy, p_lazy = _run(lazy, frames)
    assert lazy.lm_step.built == built  # the same graphs, built as the steps needed them
    np.testing.assert_array_equal(t_lazy, t_eager)
    np.testing.assert_array_equal(p_lazy, p_eager)
    assert warmup(eager, frames=frames.shape[1]).graphs == 0  # all built: nothing more to do
    # another engine of this process traces its own copies; it runs only graphs none has run
    other = engine()
    assert warmup(other, frames=frames.shape[1]).graphs == len(plan) - 1
    assert len(compiled_module._RUN) == {"free": ran, "none": 0, "trace": len(plan) - 1}[room]


def test_a_growing_ring_full_for_one_step_keeps_its_masked_graph():
    """Before the wrap a compiled step over a growing ring attends to a masked power-of-two
    prefix, also on the one step where the ring is full just before it grows; only a full-size
    ring (C = context) switches to the unmasked graph."""
    from rolekit.nn.attention import attended

    assert attended(15, 16, 80, floor=8) == (16, True)  # 16 of 16 written, the ring then grows
    assert attended(79, 80, 80, floor=8) == (80, False)  # full size and full: every slot visible
    assert attended(15, 16, 16, floor=8) == (16, False)
