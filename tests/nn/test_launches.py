"""Fewer kernel launches per frame, same numbers (rolekit.nn): views instead of gathers for q/k/v,
one RoPE call for q and k, one-kernel RMSNorm in the activation dtype, head reshapes without
transposes at one position, the few-row quantized product and its dispatch (its CUDA kernel is
checked on the GPU by `benchmarks.matmul.check_qmv`, a `gpu`-marked test in tests/nn/test_fused.py;
here the CPU path)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from rolekit.nn import qmv
from rolekit.nn.attention import split_qkv
from rolekit.nn.norm import RMSNorm


def _graph_ops(*outputs: mx.array, path: str) -> list[str]:
    import re

    mx.export_to_dot(path, *outputs)
    with open(path) as f:
        return re.findall(r'label ="?([A-Za-z_]+)', f.read())


@pytest.mark.parametrize("per_row", [False, True])
def test_split_qkv_equals_indexing_and_two_rope_calls(per_row, tmp_path):
    b, t, h, hd = 3, 4, 2, 8
    qkv = mx.random.normal((b, t, 3 * h * hd), key=mx.random.key(1))
    offset = mx.array([0, 5, 9], dtype=mx.int32) if per_row else 7
    rope = dict(traditional=True, base=10000.0, scale=1.0, offset=offset)
    ref = qkv.reshape(b, t, 3, h, hd).transpose(2, 0, 3, 1, 4)
    want = (mx.fast.rope(ref[0], hd, **rope), mx.fast.rope(ref[1], hd, **rope), ref[2])
    got = split_qkv(qkv, h, rope)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (b, h, t, hd)
        np.testing.assert_array_equal(np.array(g), np.array(w))
    plain = split_qkv(qkv, h)
    np.testing.assert_array_equal(np.array(plain[0]), np.array(ref[0]))
    ops = _graph_ops(*split_qkv(qkv, h, rope), path=str(tmp_path / "g.dot"))
    assert "Gather" not in ops  # integer indexing of the transposed projection was 3 gathers


def test_rms_norm_in_bf16_is_one_op_and_close_to_fp32(tmp_path):
    norm = RMSNorm(64)
    norm.weight = mx.random.uniform(0.5, 1.5, (64,), key=mx.random.key(2))
    x = mx.random.normal((5, 64), key=mx.random.key(3)) * 3
    exact = norm(x)  # fp32 in, fp32 out
    norm.set_dtype(mx.bfloat16)
    y = norm(x.astype(mx.bfloat16))
    assert y.dtype == mx.bfloat16
    err = float(mx.linalg.norm(y.astype(mx.float32) - exact) / mx.linalg.norm(exact))
    assert err < 1e-2  # bf16 rounding only
    xb = x.astype(mx.bfloat16)
    mx.eval(xb, norm.weight)
    cast = mx.fast.rms_norm(xb.astype(mx.float32), norm.weight.astype(mx.float32), 1e-8).astype(mx.bfloat16)
    one = _graph_ops(norm(xb), path=str(tmp_path / "n.dot"))
    three = _graph_ops(cast, path=str(tmp_path / "c.dot"))
    assert len(one) < len(three)  # no casts around the norm (on the GPU: 1 kernel instead of 3)


def test_qmv_flag_routes_only_covered_one_row_products_to_the_kernel(monkeypatch):
    """With Blocks.QMV (`--kernels qmv=1`) and the fused kernel off, `nn.fused` sends one-row
    quantized products to `qmv.qmv`; more rows, and no flag, keep MLX's quantized_matmul (exactly)."""
    from rolekit.nn import fused
    from rolekit.nn.kernels import Blocks, Kernels

    calls = []
    monkeypatch.setattr(qmv, "qmv", lambda x, w, s, b, g, bits: (calls.append(x.shape), mx.zeros((1, 96)))[1])
    monkeypatch.setattr(qmv, "covers", lambda rows, k, g, bits, dtype: rows <= qmv.MAX_ROWS)
    lin = nn.QuantizedLinear(256, 96, bias=False, group_size=64, bits=4)
    assert Kernels(qmv=True).blocks == Blocks.QMV
    fused.linear_residual(mx.zeros((1, 256)), lin, mx.zeros((1, 96)), use_kernel=Blocks.QMV)
    x2 = mx.random.normal((2, 256), key=mx.random.key(6))
    got = fused.linear_residual(x2, lin, mx.zeros((2, 96)), use_kernel=Blocks.QMV)  # two rows: MLX
    np.testing.assert_array_equal(np.array(got), np.array(lin(x2)))
    fused.linear_residual(mx.zeros((1, 256)), lin, mx.zeros((1, 96)), use_kernel=Blocks.NONE)
    assert calls == [(1, 256)]


def test_qmv_kernel_shape_rules():
    assert qmv.covers(1, 4096, 64, 4, mx.bfloat16)
    assert not qmv.covers(qmv.MAX_ROWS + 1, 4096, 64, 4, mx.bfloat16)  # batches: MLX's kernels
    assert not qmv.covers(1, 4096, 64, 3, mx.bfloat16)
    assert not qmv.covers(1, 4000, 64, 4, mx.bfloat16)  # K must be a multiple of 128
    assert not qmv.covers(1, 4096, 64, 4, mx.int32)


@pytest.mark.parametrize("t", [1, 3])
def test_heads_first_and_merge_heads_at_one_position_are_reshapes(t, tmp_path):
    """At T = 1, [B, T, H, Dh] and [B, H, T, Dh] are the same bytes: no transpose (on the GPU a
    transposed view reaching RoPE or attention was one copy kernel per layer, 80 per frame)."""
    from rolekit.nn.attention import heads_first, merge_heads

    x = mx.random.normal((2, t, 4, 8), key=mx.random.key(7))
    y = heads_first(x)
    np.testing.assert_array_equal(np.array(y), np.array(x.transpose(0, 2, 1, 3)))
    np.testing.assert_array_equal(np.array(merge_heads(y)), np.array(x.reshape(2, t, 32)))
    ops = _graph_ops(merge_heads(mx.exp(heads_first(mx.exp(x)))), path=str(tmp_path / "h.dot"))
    assert ("Transpose" in ops) == (t > 1)
