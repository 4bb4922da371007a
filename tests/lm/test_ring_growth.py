"""A ring KV cache that grows with the conversation (`nn.attention.ring_capacity`, `RingKV.grow`,
`LmCache.reserve`): capacities double before the ring would wrap and stop at the context, and the
temporal transformer over a growing ring equals it over a full-size ring, whole-sequence and step
by step, with left-padded rows, across the wrap; batch-1 rows of different sizes assemble."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.lm.config import tiny
from rolekit.lm.model import LM
from rolekit.lm.temporal import pad_rows, unpad_row
from rolekit.nn.attention import MIN_RING, RingKV, grow_slots, ring_capacity

CTX = 24  # not a power of two: the last growth goes to the context itself


@pytest.mark.parametrize(
    "written, context, floor, want",
    [
        (0, 3000, 256, 256),
        (1, 3000, 256, 256),
        (256, 3000, 256, 256),
        (257, 3000, 256, 512),
        (2048, 3000, 256, 2048),
        (2049, 3000, 256, 3000),
        (9000, 3000, 256, 3000),
        (0, 24, 256, 24),  # a context below the floor: full size at once
        (5, 24, 2, 8),
        (17, 24, 2, 24),
    ],
)
def test_ring_capacity(written, context, floor, want):
    assert ring_capacity(written, context, floor) == want


def test_default_floor_is_the_compiled_steps_shortest_prefix():
    from rolekit.engine.compiled import CompiledStep

    assert MIN_RING == CompiledStep.MIN_PREFIX  # so a grown ring is exactly the attended prefix


def test_grow_keeps_every_slot_and_zeroes_the_new_ones():
    keys = mx.array(np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5))
    ring = RingKV(keys, -keys)
    grown = ring.grow(8)
    assert grown.capacity == 8 and grown.keys.dtype == keys.dtype
    np.testing.assert_array_equal(np.array(grown.keys[:, :, :4]), np.array(keys))
    np.testing.assert_array_equal(np.array(grown.values[:, :, :4]), -np.array(keys))
    assert not np.array(grown.keys[:, :, 4:]).any() and not np.array(grown.values[:, :, 4:]).any()
    assert ring.grow(4) is ring
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_slots(keys, 2)


@pytest.fixture(scope="module")
def lm():
    mx.random.seed(11)
    model = LM(tiny(context=CTX))
    mx.eval(model.parameters())
    return model


def _tokens(seed: int, batch: int, n: int) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 64, (batch, 17, n)).astype(np.int32))


def test_cache_starts_at_the_floor_and_grows_before_the_wrap(lm):
    cache = lm.make_cache(2, floor=2)
    assert cache.rings[0].capacity == 2 and cache.context == CTX
    seen = []
    for t in range(CTX + 5):
        lm.temporal(lm.embed(_tokens(t, 2, 1)), cache)
        seen.append(cache.rings[0].capacity)
        assert all(r.capacity == seen[-1] for r in cache.rings)
    assert seen[:9] == [2, 2, 4, 4, 8, 8, 8, 8, 16] and seen[16] == 24 and set(seen[16:]) == {24}
    assert lm.make_cache(1).rings[0].capacity == CTX  # the default floor (256) is above this context
    assert LM(tiny(context=3000)).make_cache(1).rings[0].capacity == MIN_RING  # the 7B's context
    assert lm.make_cache(1, floor=CTX).rings[0].capacity == CTX


@pytest.mark.parametrize("stepwise", [False, True])
def test_growing_ring_equals_the_full_ring_with_padded_rows_across_the_wrap(lm, stepwise):
    prompt = _tokens(1, 3, 6)
    steps = _tokens(2, 3, CTX + 6)  # past the wrap
    start = np.array([0, 3, 5])
    out = {}
    for floor in (2, CTX):
        cache = lm.make_cache(3, floor=floor)
        cache.start = start
        if stepwise:
            hs = [lm.temporal(lm.embed(prompt[:, :, t : t + 1]), cache)[0] for t in range(prompt.shape[2])]
        else:
            hs = [lm.temporal(lm.embed(prompt), cache)[0]]
        for t in range(steps.shape[2]):
            hs.append(lm.temporal(lm.embed(steps[:, :, t : t + 1]), cache)[0])
        out[floor] = (np.concatenate([np.array(h) for h in hs], axis=1), cache)
    np.testing.assert_allclose(out[2][0], out[CTX][0], atol=2e-5, rtol=1e-4)
    grown, full = out[2][1], out[CTX][1]
    assert grown.rings[0].capacity == full.rings[0].capacity == CTX
    for a, b in zip(grown.arrays(), full.arrays(), strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-5, rtol=1e-4)


def test_a_long_prefill_grows_the_ring_once(lm):
    cache = lm.make_cache(1, floor=2)
    lm.temporal(lm.embed(_tokens(3, 1, 9)), cache)
    assert cache.rings[0].capacity == 16 and cache.offset == 9


def test_rows_of_different_ring_sizes_assemble_and_resume(lm):
    """Batch-1 snapshots of 3, 13 and 6 positions (rings of 4, 16, 8 slots) become one padded
    batch whose rows continue exactly like their batch-1 runs."""
    lengths = [3, 13, 6]
    rows, refs = [], []
    for i, n in enumerate(lengths):
        cache = lm.make_cache(1, floor=2)
        lm.temporal(lm.embed(_tokens(10 + i, 1, n)), cache)
        rows.append(unpad_row(cache.snapshot(), 0))
        ref = []
        for t in range(8):
            ref.append(np.array(lm.temporal(lm.embed(_tokens(20 + 100 * i + t, 1, 1)), cache)[0][0]))
        refs.append(ref)
    assert [r["layers.0.keys"].shape[2] for r in rows] == [4, 16, 8]
    cache = lm.make_cache(3, floor=2)
    cache.restore(pad_rows(rows))
    assert cache.start.tolist() == [10, 0, 7] and cache.offset == 13 and cache.rings[0].capacity == 16
    for t in range(8):
        toks = mx.concatenate([_tokens(20 + 100 * i + t, 1, 1) for i in range(3)])
        h, _ = lm.temporal(lm.embed(toks), cache)
        for b in range(3):
            np.testing.assert_allclose(np.array(h[b]), refs[b][t], atol=2e-5, rtol=1e-4)
    assert cache.rings[0].capacity == CTX  # grown past 16 on the way (offset 21)
