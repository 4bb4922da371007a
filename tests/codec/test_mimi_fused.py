"""Mimi's streaming transformer through rolekit.nn.fused (LayerNorm + projection, + GELU, layer
scale + residual): on CUDA a kernel each; here the float32 stand-in of the kernels' contract
(`kernel_model`) gives the codes and audio of the MLX ops, with the linears in the kernels' layout."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.codec.compiled import CompiledMimi
from rolekit.codec.config import tiny
from rolekit.codec.transformer import LinearT
from rolekit.nn import fused
from rolekit.nn.kernels import Kernels

pytestmark = pytest.mark.oracle


def _run(codec, frames):
    state = codec.make_state(frames[0].shape[0])
    out = []
    for f in frames:
        c = codec.encode_step(f, state)
        out.append((np.array(c), np.array(codec.decode_step(c, state))))
    return out


def test_compiled_mimi_through_the_fused_kernels(tmp_path_factory, oracle, kernel_model, monkeypatch):
    pcm = oracle.make_pcm(1, 7, seed=3)
    frames = [mx.array(pcm[..., i * 1920 : (i + 1) * 1920]) for i in range(7)]
    _, plain_mimi = oracle.pair(tmp_path_factory, tiny(), seed=2)
    want = _run(CompiledMimi(plain_mimi), frames)
    assert not kernel_model
    _, mimi = oracle.pair(tmp_path_factory, tiny(), seed=2)
    fast = CompiledMimi(mimi, Kernels(fused=True))
    linears = [m for _, m in mimi.named_modules() if isinstance(m, LinearT)]
    assert linears and all(m.layout == "rows" for m in linears)
    got = _run(fast, frames)
    # 4 kernels per layer: norm1 + in_proj, out_proj + ls1 + residual, norm2 + linear1 + GELU,
    # linear2 + ls2 + residual, each on the 2 positions of a step; per trace of a compiled step,
    # plus the one lazy eager step per direction that finds the carries' shapes
    assert len(kernel_model) == (fast.traces + 2) * mimi.cfg.num_layers * 4
    assert {c[0][:-1] for c in kernel_model} == {(1, 2)}
    assert sum(c[4] for c in kernel_model) == len(kernel_model) // 2  # the two normed products
    for (c1, p1), (c2, p2) in zip(want, got, strict=True):
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_allclose(p1, p2, rtol=0, atol=2e-5)


def test_rows_layout_keeps_the_products():
    lin = LinearT(64, 96)
    lin.weight = mx.random.normal((64, 96), key=mx.random.key(0))
    x = mx.random.normal((2, 3, 64), key=mx.random.key(1))
    before = lin(x)
    lin.to_rows()
    assert lin.weight.shape == (96, 64) and lin.layout == "rows"
    assert mx.allclose(lin(x), before, atol=1e-5).item()
    wt = fused.weights_of(lin)
    assert wt is not None and wt.rows == 96 and wt.bits == 0


def _conv_contract(prev, x, kernel, stride, dilation, elu, t_out):
    """rolekit.codec.conv_cuda's kernel contract in MLX ops (see its docstring)."""
    from rolekit.codec.conv import elu_

    b, p, c = prev.shape
    cat = mx.concatenate([prev, elu_(x) if elu else x], axis=1)  # [B, L, C]
    idx = mx.arange(t_out)[:, None] * stride + mx.arange(kernel)[None, :] * dilation  # [T_out, K]
    cols = cat[:, idx.reshape(-1)].reshape(b, t_out, kernel * c)
    return cols, cat[:, cat.shape[1] - p :]


def test_compiled_mimi_through_the_conv_window_kernel(tmp_path_factory, oracle, monkeypatch):
    """Every causal conv with a carry hands carry, input and its ELU to the windows kernel (stand-in:
    its contract in MLX ops): the same codes and audio as the MLX ops, in fewer launches on CUDA."""
    from rolekit.codec import conv_cuda

    pcm = oracle.make_pcm(2, 6, seed=4)
    frames = [mx.array(pcm[..., i * 1920 : (i + 1) * 1920]) for i in range(6)]
    _, mimi = oracle.pair(tmp_path_factory, tiny(), seed=5)
    want = _run(CompiledMimi(mimi), frames)
    calls = []

    def fake(prev, x, kernel, stride, dilation, elu, t_out):
        calls.append((kernel, stride, elu))
        return _conv_contract(prev, x, kernel, stride, dilation, elu, t_out)

    monkeypatch.setattr(conv_cuda, "_launch", fake)
    got = _run(CompiledMimi(mimi, Kernels(conv=True)), frames)
    assert calls and any(c[2] for c in calls) and any(not c[2] for c in calls)
    for (c1, p1), (c2, p2) in zip(want, got, strict=True):
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_allclose(p1, p2, rtol=0, atol=1e-6)
