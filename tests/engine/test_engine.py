"""Engine behaviour on the tiny model: batched == stepwise prefill, compiled == plain step, depformer
early stop, sessions past the context, batched conversations == batch-1 runs, snapshots.
Batches of prompts of unequal length: test_mixed_batch.py."""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import numpy as np
import pytest

from rolekit import models
from rolekit.engine.engine import Engine
from rolekit.engine.offline import run_offline
from rolekit.engine.snapshot import prefill_cached, snapshot_path, state_equal, state_id
from rolekit.errors import ConfigError
from rolekit.lm.sampling import SamplingParams
from tests.engine.conftest import make_plan, user_frames

GREEDY = SamplingParams(greedy=True)


def _run(engine: Engine, frames: np.ndarray):
    res = run_offline(engine, frames)
    return np.concatenate([res.text[..., None], res.audio], axis=-1), res.pcm


def _prefilled(bundle, plans, voices, **kw) -> Engine:
    engine = Engine(bundle, len(plans), kw.pop("params", GREEDY), **kw)
    engine.prefill(plans, [models.load_voice(bundle, v) for v in voices])
    return engine


@pytest.mark.parametrize("context", ["full", "short"])
def test_batched_prefill_equals_stepwise(tiny_bundle, short_context, context):
    bundle = tiny_bundle if context == "full" else short_context
    plans = [make_plan("NATF1", 9, 1), make_plan("VARM3", 9, 2)]
    voices = ["NATF1", "VARM3"]
    a = _prefilled(bundle, plans, voices)
    b = Engine(bundle, 2, GREEDY)
    b.prefill(plans, [models.load_voice(bundle, v) for v in voices], stepwise=True)
    sa, sb = a.snapshot(), b.snapshot()
    assert sa.offsets == sb.offsets == (15 + 12 + 9,) * 2
    np.testing.assert_array_equal(np.array(sa.ring_cache), np.array(sb.ring_cache))
    np.testing.assert_array_equal(np.array(sa.ring_provided), np.array(sb.ring_provided))
    for k in sa.lm:
        np.testing.assert_allclose(np.array(sa.lm[k]), np.array(sb.lm[k]), atol=2e-5, rtol=1e-4, err_msg=k)
    frames = user_frames(12, 4, batch=2)
    ta, pa = _run(a, frames)
    tb, pb = _run(b, frames)
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_allclose(pa, pb, atol=1e-5)


def test_compiled_step_equals_uncompiled(tiny_bundle):
    plans, voices = [make_plan("NATM0", 6, 3)], ["NATM0"]
    frames = user_frames(15, 5)
    t_plain, p_plain = _run(_prefilled(tiny_bundle, plans, voices, compiled=False), frames)
    compiled = _prefilled(tiny_bundle, plans, voices, compiled=True)
    assert compiled.compiled
    t_comp, p_comp = _run(compiled, frames)
    np.testing.assert_array_equal(t_plain, t_comp)
    np.testing.assert_allclose(p_plain, p_comp, atol=1e-5)
    # sampling too: the compiled graph takes the RNG keys as inputs
    params = SamplingParams(text_temperature=0.9, audio_temperature=0.9)
    t1, _ = _run(_prefilled(tiny_bundle, plans, voices, params=params, seed=7, compiled=False), frames)
    t2, _ = _run(_prefilled(tiny_bundle, plans, voices, params=params, seed=7, compiled=True), frames)
    np.testing.assert_array_equal(t1, t2)


def test_depformer_stop_at_8_is_exact_for_agent_output(tiny_bundle):
    plans, voices = [make_plan("VARF2", 7, 4)], ["VARF2"]
    frames = user_frames(20, 6)
    t8, p8 = _run(_prefilled(tiny_bundle, plans, voices, dep_stop=True), frames)
    e16 = _prefilled(tiny_bundle, plans, voices, dep_stop=False)
    assert e16.dep_steps == 16
    t16, p16 = _run(e16, frames)
    np.testing.assert_array_equal(t8, t16)
    np.testing.assert_array_equal(p8, p16)


def test_session_runs_ten_times_the_context(short_context):
    ctx = short_context.lm.cfg.context
    engine = _prefilled(short_context, [make_plan("NATF3", 5, 6)], ["NATF3"])
    assert engine.frames_left == 0  # the prefill alone fills an 8-frame context
    tokens, pcm = _run(engine, user_frames(10 * ctx, 7))
    assert tokens.shape == (1, 10 * ctx, 9)
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 0
    assert (tokens[0, :, 1:] >= 0).all() and (tokens[0, :, 1:] < short_context.lm.cfg.card).all()
    assert len(np.unique(tokens[0, 2 * ctx :, 0])) > 3  # still generating after many wraps
    assert engine.lm_cache.offset == engine.offset - 1 > 10 * ctx


def test_batched_conversations_equal_their_batch1_runs(tiny_bundle):
    voices = ["NATF0", "VARM4", "NATM2"]
    plans = [make_plan(v, 8, 10 + i) for i, v in enumerate(voices)]
    params = [
        GREEDY,
        SamplingParams(text_temperature=0.7, text_top_k=25, audio_temperature=0.8, audio_top_k=250),
        SamplingParams(text_temperature=1.2, text_top_k=5, audio_temperature=0.5, audio_top_k=20),
    ]
    seeds = [1, 2, 3]
    frames = np.concatenate([user_frames(16, 20 + i) for i in range(3)])  # different user audio
    batch = _prefilled(tiny_bundle, plans, voices, params=params, seed=seeds)
    tb, pb = _run(batch, frames)
    for i in range(3):
        single = _prefilled(tiny_bundle, [plans[i]], [voices[i]], params=params[i], seed=seeds[i])
        ts, ps = _run(single, frames[i : i + 1])
        np.testing.assert_array_equal(tb[i], ts[0], err_msg=f"conversation {i}")
        np.testing.assert_allclose(pb[i], ps[0], atol=1e-5)
    assert not np.array_equal(tb[0], tb[1])


def test_snapshot_restore_replays_the_same_conversation(tiny_bundle):
    params = SamplingParams(text_temperature=0.8, audio_temperature=0.8)
    engine = _prefilled(tiny_bundle, [make_plan("NATF2", 6, 8)], ["NATF2"], params=params, seed=3)
    frames = user_frames(20, 9)
    _run(engine, frames[:, :5])
    snap = engine.snapshot()
    t1, p1 = _run(engine, frames[:, 5:])
    engine.restore(snap)
    t2, p2 = _run(engine, frames[:, 5:])
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(p1, p2)


def test_greedy_is_deterministic_and_seeds_matter(tiny_bundle):
    plans, voices = [make_plan("VARF0", 6, 2)], ["VARF0"]
    frames = user_frames(10, 3)
    g1, _ = _run(_prefilled(tiny_bundle, plans, voices, seed=1), frames)
    g2, _ = _run(_prefilled(tiny_bundle, plans, voices, seed=2), frames)
    np.testing.assert_array_equal(g1, g2)  # greedy ignores the seed
    hot = SamplingParams(text_temperature=1.0, audio_temperature=1.0)
    s1, _ = _run(_prefilled(tiny_bundle, plans, voices, params=hot, seed=1), frames)
    s1b, _ = _run(_prefilled(tiny_bundle, plans, voices, params=hot, seed=1), frames)
    s2, _ = _run(_prefilled(tiny_bundle, plans, voices, params=hot, seed=2), frames)
    np.testing.assert_array_equal(s1, s1b)
    assert not np.array_equal(s1, s2)


def test_step_rejects_wrong_shapes(tiny_bundle):
    engine = _prefilled(tiny_bundle, [make_plan("NATF0", 4, 1)], ["NATF0"])
    with pytest.raises(ConfigError):
        engine.step(np.zeros((2, 1920), np.float32))
    with pytest.raises(ConfigError):
        Engine(tiny_bundle, 2, [GREEDY])


def test_one_host_sync_per_step(tiny_bundle, monkeypatch):
    engine = _prefilled(tiny_bundle, [make_plan("NATF0", 4, 1)], ["NATF0"])
    frames = user_frames(3, 1)
    engine.step(frames[:, 0])
    calls = []
    real_eval = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *a: (calls.append(len(a)), real_eval(*a))[1])
    engine.step(frames[:, 1])
    assert len(calls) == 1


def test_first_calls_only_prime_without_prefill(tiny_bundle):
    """NVIDIA LMGen: call 0 primes (no forward), call 1 has no output yet (max_delay 1), then frames."""
    engine = Engine(tiny_bundle, 1, GREEDY)
    frames = user_frames(4, 2)
    ready = [engine.step(frames[:, i]).ready for i in range(4)]
    assert ready == [False, False, True, True]
    assert engine.offset == 4 and engine.lm_cache.offset == 3


def test_prefill_snapshots_on_disk_assemble_any_batch(tiny_bundle, tmp_path):
    voices = ["NATF0", "VARM1"]
    plans = [make_plan(v, 7, 30 + i) for i, v in enumerate(voices)]
    prompts = [models.load_voice(tiny_bundle, v) for v in voices]
    fresh = Engine(tiny_bundle, 2, GREEDY)
    assert prefill_cached(fresh, plans, prompts, tmp_path) is False  # computed and saved, one file per row
    for p, v in zip(plans, prompts, strict=True):
        assert snapshot_path(tmp_path, state_id(fresh), p, v).is_file()
    again = Engine(tiny_bundle, 2, GREEDY)
    assert prefill_cached(again, plans, prompts, tmp_path) is True
    assert state_equal(fresh.snapshot(), again.snapshot())
    swapped = Engine(tiny_bundle, 2, GREEDY)  # rows in another order: still served from the cache
    assert prefill_cached(swapped, plans[::-1], prompts[::-1], tmp_path) is True
    frames = user_frames(6, 3, batch=2)
    t_fresh, _ = _run(fresh, frames)
    t_swapped, _ = _run(swapped, frames[::-1])
    np.testing.assert_array_equal(t_fresh, t_swapped[::-1])
    other_model = dataclasses.replace(tiny_bundle, model_id="another-model")
    assert prefill_cached(Engine(other_model, 2, GREEDY), plans, prompts, tmp_path) is False


def test_prefill_snapshots_are_kept_apart_by_dtype_and_compat(tiny_bundle, tmp_path):
    """A bf16 or `--compat nvidia` load of the same model never restores the default load's prefill."""
    plan = make_plan("NATF0", 7, 30)
    voice = models.load_voice(tiny_bundle, "NATF0")
    assert prefill_cached(Engine(tiny_bundle, 1, GREEDY), [plan], [voice], tmp_path) is False
    assert prefill_cached(Engine(tiny_bundle, 1, GREEDY), [plan], [voice], tmp_path) is True
    ids = {state_id(Engine(tiny_bundle, 1, GREEDY))}
    for options in (models.LoadOptions(dtype="bf16"), models.LoadOptions(compat="nvidia")):
        other = models.load("tiny", options)
        assert other.model_id == tiny_bundle.model_id
        engine = Engine(other, 1, GREEDY)
        assert prefill_cached(engine, [plan], [voice], tmp_path) is False  # computed, not restored
        ids.add(state_id(engine))
    assert len(ids) == 3
