"""One step of `nn.attention` at a device position: `RingKV.update_and_fetch` writes exactly what
the whole-sequence `write` does, and `attended` (the attended prefix and whether it is masked, for
the eager and the compiled step) agrees with the host visibility rule (`padded_mask`)."""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest

from rolekit.nn.attention import RingKV, attended, padded_mask, prefix_length, ring_positions


@pytest.mark.parametrize("pos", [0, 3, 7, 8, 21])
def test_update_and_fetch_writes_slot_pos_mod_c_like_write(pos):
    rng = np.random.default_rng(pos)
    keys, values = (mx.array(rng.standard_normal((2, 3, 8, 4)).astype(np.float32)) for _ in range(2))
    k, v = (mx.array(rng.standard_normal((2, 3, 1, 4)).astype(np.float32)) for _ in range(2))
    want = RingKV(keys, values).write(k, v, pos)
    ring = RingKV(keys, values)
    got_k, got_v = ring.update_and_fetch(k, v, mx.array(pos, dtype=mx.int32))
    assert got_k is ring.keys and got_v is ring.values  # the cache holds what it returned
    np.testing.assert_array_equal(np.array(got_k), np.array(want.keys))
    np.testing.assert_array_equal(np.array(got_v), np.array(want.values))
    changed = np.any(np.array(got_k) != np.array(keys), axis=(0, 1, 3))
    assert changed.nonzero()[0].tolist() == [pos % 8]


def _hidden(offset: int, cap: int, context: int, start: list[int], length: int) -> bool:
    """Some attended slot is hidden from some row (host rule of the whole-sequence attention)."""
    k_pos = ring_positions(offset + 1, cap)[:length]
    return not padded_mask(np.array([offset]), k_pos, context, np.array(start)).all()


def test_attended_matches_the_host_visibility_rule():
    cases = itertools.product(range(0, 40), (8, 16), (8, 12, 16), ([0], [0, 3], [5, 0], [0, 30]))
    for offset, cap, context, start in cases:
        if cap > context:
            continue  # the ring never outlives the context (LM.make_cache: C = context)
        written = min(offset + 1, cap)
        length, masked = attended(offset, cap, context, np.array(start))  # eager: the written slots
        assert length == written
        assert masked == _hidden(offset, cap, context, start, length), (offset, cap, context, start)
        length, masked = attended(offset, cap, context, np.array(start), floor=4)  # compiled
        assert written <= length <= cap and (length == cap or length & (length - 1) == 0)
        if masked:
            assert length == prefix_length(offset + 1, cap, 4)
        else:  # unmasked only once the ring has wrapped and every slot is visible
            assert length == cap and offset + 1 >= cap and not _hidden(offset, cap, context, start, cap)
    assert attended(5, 16, 16) == (6, False) and attended(5, 16, 16, floor=4) == (8, True)
