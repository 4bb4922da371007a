"""The depformer's per-frame KV cache: one growing cache per layer, keys and values together."""

from __future__ import annotations

import mlx.core as mx

from rolekit.lm.config import tiny
from rolekit.lm.model import LM


def test_depformer_keeps_keys_and_values_in_one_growing_cache():
    mx.random.seed(4)
    lm = LM(tiny(context=8))
    mx.eval(lm.parameters())
    dep = lm["depformer"]
    x = mx.random.normal((2, 1, lm.cfg.depformer_dim))
    _, kv = dep.step(x, 0, None)
    _, kv = dep.step(x, 1, kv)
    h = lm.cfg.depformer_num_heads
    assert len(kv) == lm.cfg.depformer_num_layers
    assert kv[0].shape == (2, 2 * h, 2, lm.cfg.depformer_dim // h)
