"""`rolekit.randlm`: the random in-memory LM that tests and the lab benchmarks build."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from rolekit.errors import ConfigError
from rolekit.randlm import build_lm, lm_config


def test_same_seed_same_weights_and_q4_quantizes_only_the_layer_linears():
    a, b = build_lm(lm_config("tiny"), "fp32", seed=5), build_lm(lm_config("tiny"), "fp32", seed=5)
    for (name, x), (_, y) in zip(tree_flatten(a.parameters()), tree_flatten(b.parameters()), strict=True):
        assert x.dtype == mx.float32, name
        np.testing.assert_array_equal(np.array(x), np.array(y), err_msg=name)
    q = build_lm(lm_config("tiny"), "q4")
    quantized = {path for path, m in q.named_modules() if isinstance(m, nn.QuantizedLinear)}
    layer = q.transformer.layers[0]
    assert isinstance(layer.self_attn.in_proj, nn.QuantizedLinear) and layer.self_attn.in_proj.bits == 4
    assert {"transformer.layers.0.gating.linear_in", "depformer_in.0"} <= quantized
    assert not any(p.startswith(("text_linear", "linears", "emb", "depformer_emb")) for p in quantized)


def test_unknown_size_or_quant_is_a_config_error():
    with pytest.raises(ConfigError, match="size"):
        lm_config("huge")
    with pytest.raises(ConfigError, match="quantization"):
        build_lm(lm_config("tiny"), "q3")
