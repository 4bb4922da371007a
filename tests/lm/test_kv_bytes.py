"""`LM.kv_bytes` is the memory of the ring KV cache that `make_cache` + `reserve` hold, and a ring
that grows gives its old buffers back to the device (`LmCache.reserve` empties MLX's buffer cache)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from rolekit.lm.config import tiny
from rolekit.lm.model import LM


def _held(cache) -> int:
    return sum(a.nbytes for a in cache.arrays())


@pytest.fixture(scope="module")
def lm():
    mx.random.seed(5)
    model = LM(tiny(context=3000))  # the 7B's context: the rings grow from 256 slots
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize("positions", [0, 1, 256, 257, 1024, 1025, 2049, 3000, 5000])
@pytest.mark.parametrize("batch", [1, 3])
def test_kv_bytes_is_what_the_reserved_rings_hold(lm, batch, positions):
    cache = lm.make_cache(batch)
    cache.reserve(positions)
    assert lm.kv_bytes(batch, positions) == _held(cache) > 0
    assert lm.kv_bytes(batch, positions) == batch * lm.kv_bytes(1, positions)


@pytest.mark.parametrize("floor, positions", [(2, 3), (2, 9), (16, 3), (3000, 1)])
def test_kv_bytes_follows_the_floor(lm, floor, positions):
    cache = lm.make_cache(2, floor=floor)
    cache.reserve(positions)
    assert lm.kv_bytes(2, positions, floor=floor) == _held(cache)


def test_kv_bytes_uses_the_cache_dtype_and_the_models_floor():
    model = LM(tiny(context=3000))  # fp32 activations
    cfg = model.cfg
    model.cache_dtype = mx.bfloat16  # as `lm.precision.cache_dtype` sets it for a quantized checkpoint
    model.ring_floor = 64
    cache = model.make_cache(1)
    cache.reserve(100)
    assert cache.rings[0].keys.dtype == mx.bfloat16 and cache.rings[0].capacity == 128
    assert (
        model.kv_bytes(1, 100) == _held(cache) == cfg.num_layers * 2 * cfg.num_heads * 128 * cfg.head_dim * 2
    )


def test_growing_rings_leave_nothing_in_mlxs_buffer_cache(lm):
    cache = lm.make_cache(4)
    old_ring = cache.rings[0].keys.nbytes  # one layer's keys at 256 slots
    mx.clear_cache()
    cache.reserve(1000)  # 256 -> 1024 slots
    assert cache.rings[0].capacity == 1024
    assert mx.get_cache_memory() < old_ring  # every old ring went back, not into the cache
