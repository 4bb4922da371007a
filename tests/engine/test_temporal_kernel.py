"""The engine with the temporal layers as one kernel (`lm.temporal_cuda`), run on the CPU through
the kernel's contract (`temporal_cuda.reference` in place of the CUDA launch; the step then writes
the returned keys into the rings itself): equal to the engine without it, before and after the
ring wraps, with left-padded rows and sampling; snapshots are copies (the kernel writes the rings
in place) and restore exactly, on either path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mlx.utils import tree_flatten

from rolekit import models
from rolekit.engine.compiled import CompiledStep, prefix_length
from rolekit.engine.engine import Engine
from rolekit.engine.offline import run_offline
from rolekit.lm import temporal_cuda as tc
from rolekit.lm.model import LM
from rolekit.lm.sampling import SamplingParams
from rolekit.nn.kernels import OPS, Kernels
from tests.engine.conftest import make_plan, user_frames

GREEDY = SamplingParams(greedy=True)
HOT = SamplingParams(text_temperature=1.0, audio_temperature=1.0)
CONTEXT = 80


@pytest.fixture(scope="module")
def kernel_bundle(tiny_bundle):
    """The tiny model's weights with one 64-wide head and an 80-frame context, packed."""
    lm = LM(dataclasses.replace(tiny_bundle.lm.cfg, num_heads=1, context=CONTEXT))
    lm.load_weights(list(tree_flatten(tiny_bundle.lm.parameters())))
    lm.eval()
    assert tc.pack(lm) is not None
    return dataclasses.replace(tiny_bundle, lm=lm, model_id=f"{tiny_bundle.model_id}-h1")


def _engine(bundle, plans, params, seeds, kernel: bool, launch=tc.reference) -> Engine:
    kernels = Kernels(temporal=True) if kernel else OPS
    engine = Engine(bundle, len(plans), params, seeds, compiled=True, kernels=kernels)
    if kernel:  # the kernel's contract in its place (it does not write the rings in place)
        engine.lm_step.temporal_kernel = tc.TemporalKernel(launch, writes_rings=False)
    engine.prefill(plans, [models.load_voice(bundle, p.voice) for p in plans])
    return engine


def _run(engine: Engine, frames: np.ndarray):
    res = run_offline(engine, frames)
    return np.concatenate([res.text[..., None], res.audio], axis=-1), res.pcm


def test_engine_through_the_kernel_contract_equals_the_op_path(kernel_bundle, monkeypatch):
    plans = [make_plan("NATF0", 2, 1), make_plan("VARM4", 9, 2), make_plan("NATM1", 5, 3)]
    params, seeds = [HOT, GREEDY, HOT], [31, 32, 33]
    monkeypatch.setattr(CompiledStep, "MIN_PREFIX", 8)  # several attended prefixes before the wrap
    calls = []  # the attended length of each trace through the kernel's stand-in
    ops = _engine(kernel_bundle, plans, params, seeds, kernel=False)
    ker = _engine(
        kernel_bundle,
        plans,
        params,
        seeds,
        kernel=True,
        launch=lambda *a: (calls.append(a[6]), tc.reference(*a))[1],
    )
    calls.clear()  # the prefill's ahead build traced a whole conversation's graphs (nothing ran)
    assert ker.lm_step.uses_kernel(ker.lm_cache) and not ops.lm_step.uses_kernel(ops.lm_cache)
    start = ops.lm_cache.start
    assert start is not None and start.any() and ops.lm_cache.offset < CONTEXT
    n = CONTEXT + 10 - ops.lm_cache.offset + int(start.max())  # past the wrap and the padding
    frames = user_frames(n, 9, batch=3)
    to, po = _run(ops, frames)
    tk, pk = _run(ker, frames)
    np.testing.assert_array_equal(to, tk)
    np.testing.assert_allclose(po, pk, atol=1e-5)
    # one trace per attended ring prefix before the wrap, then one for the whole ring
    p0 = ker.lm_cache.offset - n
    lengths = {prefix_length(p + 1, CONTEXT, 8) for p in range(p0, ker.lm_cache.offset)}
    assert len(lengths) >= 2 and sorted(calls) == sorted(lengths)
    for a, b in zip(ops.lm_cache.arrays(), ker.lm_cache.arrays(), strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    assert len(np.unique(tk[:, :, 0])) > 3  # really generating


def test_snapshot_is_a_copy_and_restores_exactly(kernel_bundle):
    engine = _engine(kernel_bundle, [make_plan("VARF1", 4, 5)], HOT, 4, kernel=True)
    frames = user_frames(14, 6)
    _run(engine, frames[:, :5])
    snap = engine.snapshot()
    assert snap.lm["layers.0.keys"] is not engine.lm_cache.rings[0].keys  # a copy, not the live ring
    keys_before = np.array(snap.lm["layers.0.keys"])
    t1, p1 = _run(engine, frames[:, 5:])
    np.testing.assert_array_equal(np.array(snap.lm["layers.0.keys"]), keys_before)  # not written through
    engine.restore(snap)
    t2, p2 = _run(engine, frames[:, 5:])
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(p1, p2)
    eager = _engine(kernel_bundle, [make_plan("VARF1", 4, 5)], HOT, 4, kernel=False)
    eager.restore(snap)  # the op path continues from the kernel path's snapshot
    t3, _ = _run(eager, frames[:, 5:])
    np.testing.assert_array_equal(t1, t3)
