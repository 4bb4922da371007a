"""The engine's compiled step (`rolekit.engine.compiled`): equal to the eager step before, across and
after the ring wrap, with left-padded rows and sampling; traced at most twice; snapshots taken
between compiled steps stay valid although the ring is then written in place."""

from __future__ import annotations

import numpy as np
import pytest

from rolekit import models
from rolekit.engine import step as step_module
from rolekit.engine.compiled import CompiledStep, prefix_length
from rolekit.engine.engine import Engine
from rolekit.engine.offline import run_offline
from rolekit.lm.sampling import SamplingParams
from tests.engine.conftest import make_plan, user_frames, with_context

GREEDY = SamplingParams(greedy=True)
HOT = SamplingParams(text_temperature=1.0, audio_temperature=1.0)
WARM = SamplingParams(text_temperature=0.7, text_top_k=20, audio_temperature=0.8, audio_top_k=30)
CONTEXT = 80


@pytest.fixture(scope="module")
def ctx_bundle(tiny_bundle):
    """The tiny model with an 80-frame context: the prompts fit, the session then wraps the ring."""
    return with_context(tiny_bundle, CONTEXT)


def _run(engine: Engine, frames: np.ndarray):
    res = run_offline(engine, frames)
    return np.concatenate([res.text[..., None], res.audio], axis=-1), res.pcm


def _engine(bundle, plans, voices, params, seeds, compiled: bool) -> Engine:
    engine = Engine(bundle, len(plans), params, seeds, compiled=compiled)
    engine.prefill(plans, [models.load_voice(bundle, v) for v in voices])
    return engine


@pytest.mark.parametrize("min_prefix", [256, 8])
def test_compiled_equals_eager_across_the_wrap_with_padded_rows(ctx_bundle, monkeypatch, min_prefix):
    plans = [make_plan("NATF0", 2, 1), make_plan("VARM4", 9, 2), make_plan("NATM1", 5, 3)]
    voices = ["NATF0", "VARM4", "NATM1"]
    params, seeds = [HOT, GREEDY, WARM], [21, 22, 23]
    traces = []  # per call of lm_step: is its shape masked
    real = step_module.lm_step
    monkeypatch.setattr(
        step_module, "lm_step", lambda c, shape, *a: (traces.append(shape.masked), real(c, shape, *a))[1]
    )
    monkeypatch.setattr(CompiledStep, "MIN_PREFIX", min_prefix)
    eager = _engine(ctx_bundle, plans, voices, params, seeds, compiled=False)
    comp = _engine(ctx_bundle, plans, voices, params, seeds, compiled=True)
    start = eager.lm_cache.start
    assert start is not None and start.any() and eager.lm_cache.offset < CONTEXT  # padded, not wrapped
    n = CONTEXT + 10 - eager.lm_cache.offset + int(start.max())  # past the wrap and the padding
    frames = user_frames(n, 8, batch=3)
    te, pe = _run(eager, frames)
    assert len(traces) == n  # the eager step calls lm_step once a frame
    traces.clear()
    tc, pc = _run(comp, frames)
    np.testing.assert_array_equal(te, tc)
    np.testing.assert_allclose(pe, pc, atol=1e-5)
    assert comp.lm_cache.offset == eager.lm_cache.offset
    # one masked graph per attended ring prefix (before the wrap, or while padding is in the ring),
    # then one graph without a mask
    p0, last_masked = comp.lm_cache.offset - n, CONTEXT - 2 + int(start.max())
    lengths = {prefix_length(p + 1, CONTEXT, min_prefix) for p in range(p0, last_masked + 1)}
    assert len(lengths) == (1 if min_prefix == 256 else 2)  # [80], or [64, 80]
    assert traces.count(True) == len(lengths) and traces.count(False) == 1  # True: masked
    assert len(np.unique(tc[:, :, 0])) > 3  # really generating


def test_compiled_snapshot_is_not_overwritten_by_later_steps(ctx_bundle):
    engine = _engine(ctx_bundle, [make_plan("VARF1", 4, 5)], ["VARF1"], HOT, 4, compiled=True)
    frames = user_frames(12, 6)
    _run(engine, frames[:, :4])
    snap = engine.snapshot()
    keys_before = np.array(snap.lm["layers.0.keys"])
    t1, p1 = _run(engine, frames[:, 4:])
    np.testing.assert_array_equal(np.array(snap.lm["layers.0.keys"]), keys_before)
    engine.restore(snap)
    t2, p2 = _run(engine, frames[:, 4:])
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(p1, p2)
