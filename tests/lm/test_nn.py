"""Layers and LM API without the oracle: ring cache, snapshots, sampling, depformer options."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest

from rolekit.lm.config import tiny
from rolekit.lm.model import LM
from rolekit.lm.sampling import SamplingParams, sample
from rolekit.nn.attention import RingKV, context_mask, ring_positions
from rolekit.nn.multilinear import MultiLinear


@pytest.fixture(scope="module")
def lm():
    mx.random.seed(3)
    model = LM(tiny(context=8))
    mx.eval(model.parameters())
    return model


def test_ring_positions_and_mask():
    assert ring_positions(0, 4).tolist() == [-1, -1, -1, -1]
    assert ring_positions(2, 4).tolist() == [0, 1, -1, -1]
    assert ring_positions(6, 4).tolist() == [4, 5, 2, 3]
    m = context_mask(np.array([5]), ring_positions(6, 4), 4)
    assert m.tolist() == [[True, True, True, True]]  # 0 <= 5 - k < 4 for k in 2..5
    m = context_mask(np.array([5, 6]), np.array([2, 3, 4, 5, 6]), 4)
    assert m.tolist() == [[True, True, True, True, False], [False, True, True, True, True]]


def test_ring_write_wraps_and_keeps_last_capacity():
    ring = RingKV.empty(1, 1, 4, 1, mx.float32)
    ring = ring.write(mx.arange(3, dtype=mx.float32).reshape(1, 1, 3, 1), mx.zeros((1, 1, 3, 1)), 0)
    ring = ring.write(mx.arange(3, 9, dtype=mx.float32).reshape(1, 1, 6, 1), mx.zeros((1, 1, 6, 1)), 3)
    # positions 5..8 survive, at slots p % 4
    assert np.array(ring.keys).reshape(-1).tolist() == [8, 5, 6, 7]


def test_snapshot_restore_replays_identically(lm):
    toks = mx.array(np.random.default_rng(0).integers(0, 64, (2, 17, 20)).astype(np.int32))
    cache = lm.make_cache(2)
    lm.temporal(lm.embed(toks[:, :, :12]), cache)
    snap = cache.snapshot()
    a, _ = lm.temporal(lm.embed(toks[:, :, 12:]), cache)
    assert cache.offset == 20
    cache.restore(snap)
    assert cache.offset == 12
    b, _ = lm.temporal(lm.embed(toks[:, :, 12:]), cache)
    assert np.array_equal(np.array(a), np.array(b))


def test_multilinear_uses_one_slice_per_step():
    ml = MultiLinear(3, 4, 2)
    x = mx.ones((1, 4))
    w = np.array(ml.weight)
    for k in range(3):
        np.testing.assert_allclose(np.array(ml(x, k)), w[2 * k : 2 * k + 2].sum(1)[None], rtol=1e-5)


def test_sampling_greedy_topk_seeded_and_per_row():
    logits = mx.array(np.random.default_rng(1).normal(size=(4, 50)).astype(np.float32))
    greedy = np.array(mx.argmax(logits, axis=-1))
    assert np.array_equal(np.array(sample(logits, 0.0, 25, None)), greedy)
    key = mx.random.key(7)
    a = np.array(sample(logits, 0.8, 5, key))
    assert np.array_equal(a, np.array(sample(logits, 0.8, 5, key)))  # same key, same draw
    top5 = np.argsort(-np.array(logits), axis=-1)[:, :5]
    draws = np.stack([np.array(sample(logits, 5.0, 5, mx.random.key(i))) for i in range(200)], 1)
    assert all(set(draws[r]) <= set(top5[r]) for r in range(4))
    assert all(len(set(draws[r])) > 1 for r in range(4))
    # per-row: row 0 greedy (temperature 0), row 1 top-1, rows 2-3 free
    temps = mx.array([0.0, 1.0, 1.0, 1.0])
    ks = mx.array([0, 1, 0, 50])
    rows = np.stack([np.array(sample(logits, temps, ks, mx.random.key(i))) for i in range(50)], 1)
    assert (rows[0] == greedy[0]).all() and (rows[1] == greedy[1]).all()
    assert len(set(rows[2])) > 1


def test_depformer_provided_tokens_and_early_stop(lm):
    cfg = lm.cfg
    hidden = mx.array(np.random.default_rng(2).normal(size=(2, cfg.dim)).astype(np.float32))
    text = mx.array([5, 9], dtype=mx.int32)
    user = np.random.default_rng(3).integers(0, cfg.card, (2, 8)).astype(np.int32)
    provided = mx.array(np.concatenate([np.full((2, 8), -1, np.int32), user], 1))
    params = SamplingParams(greedy=True)
    full = np.array(lm.depformer(hidden, text, provided, params, None))
    assert np.array_equal(full[:, 8:], user)  # provided tokens are returned as given
    agent = np.array(lm.depformer(hidden, text, provided, params, None, steps=8))
    assert np.array_equal(agent[:, :8], full[:, :8]) and np.array_equal(agent[:, 8:], user)
    # greedy output equals the argmax of teacher-forced logits fed with its own tokens
    logits = np.array(lm.depformer_logits(hidden, text, mx.array(full)))
    assert np.array_equal(logits.argmax(-1)[:, :8], full[:, :8])
    # sampling with a key is reproducible and differs from greedy somewhere
    s1 = np.array(lm.depformer(hidden, text, provided, SamplingParams(), mx.random.key(1)))
    s2 = np.array(lm.depformer(hidden, text, provided, SamplingParams(), mx.random.key(1)))
    assert np.array_equal(s1, s2) and np.array_equal(s1[:, 8:], user)


def test_a_draw_keeps_the_top_k_scaled_logits_in_one_fused_chain(tmp_path):
    """A draw is argmax(logits / T + Gumbel) over the k largest scaled logits, as Kyutai's
    softmax(logits / T) restricted to the top k; the division is in the draw's one elementwise
    chain (a compiled step's fused kernels each cost a GPU run-time compile on a fresh machine)."""
    from rolekit.lm.sampling import _row_gumbel

    rng = np.random.default_rng(3)
    logits = mx.array(rng.normal(size=(3, 64)).astype(np.float32))
    keys = mx.stack([mx.random.key(s) for s in (4, 5, 6)])
    noise = np.array(_row_gumbel(keys, 64))
    for temps, ks in ((0.7, 9), ([0.5, 1.3, 2.0], [3, 0, 64])):
        t = np.broadcast_to(np.asarray(temps, np.float32), (3,))[:, None]
        k = np.broadcast_to(np.asarray(ks), (3,))
        scaled = np.array(logits) / t
        kth = -np.sort(-scaled, axis=-1)[np.arange(3), np.where((k <= 0) | (k > 64), 64, k) - 1]
        want = np.argmax(np.where(scaled >= kth[:, None], scaled, -np.inf) + noise, axis=-1)
        args = (temps, ks) if isinstance(temps, float) else (mx.array(temps), mx.array(ks))
        np.testing.assert_array_equal(np.array(sample(logits, *args, keys)), want)
    fn = mx.compile(lambda x, key: sample(x, 0.7, 9, key))
    mx.export_to_dot(str(tmp_path / "draw.dot"), fn(logits, keys))
    ops = re.findall(r'label ="(\w+)"', (tmp_path / "draw.dot").read_text())
    fused = [op for op in ops if op.startswith("Compiled")]
    assert len(fused) == 1 and "Divide" in fused[0] and "Divide" not in ops
