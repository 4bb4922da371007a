"""`nn.qmm`: the tensor-core q4 product. Here (no GPU): the kernel's operand layout, emulated lane
by lane against PTX's m16n8k16 fragment layout, gives x @ dequantize(w).T; the dispatch in
`nn.fused` picks it only for the shapes it covers. On a GPU (`gpu` marker): the kernel against MLX's
quantized_matmul, and a batched engine step with and without it."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.nn import qmm


def _nibbles(words: np.ndarray) -> np.ndarray:
    """uint32 [..., W] -> 4-bit values [..., 8 W] (value j in word j // 8, lowest bits first)."""
    shifts = np.arange(8, dtype=np.uint32) * 4
    return ((words[..., None] >> shifts) & 15).reshape(*words.shape[:-1], -1).astype(np.float32)


def _mma(d: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """One warp's mma.m16n8k16 (row, col) as PTX lays the fragments out: a [32, 4 regs, 2],
    b [32, 2 regs, 2], d [32, 4] (lane = 4 g + t)."""
    A, B = np.zeros((16, 16)), np.zeros((16, 8))
    for lane in range(32):
        g, t = divmod(lane, 4)
        for h in range(2):
            A[g, 2 * t + h], A[g + 8, 2 * t + h] = a[lane, 0, h], a[lane, 1, h]
            A[g, 2 * t + 8 + h], A[g + 8, 2 * t + 8 + h] = a[lane, 2, h], a[lane, 3, h]
            B[2 * t + h, g], B[2 * t + 8 + h, g] = b[lane, 0, h], b[lane, 1, h]
    D = A @ B
    for lane in range(32):
        g, t = divmod(lane, 4)
        d[lane] += [D[g, 2 * t], D[g, 2 * t + 1], D[g + 8, 2 * t], D[g + 8, 2 * t + 1]]


def _emulate(
    x: np.ndarray, w: np.ndarray, scales: np.ndarray, biases: np.ndarray, gs: int, ks: int
) -> np.ndarray:
    """`device/qmm.cu` lane by lane (its loads and register use): part [K / KS, MT * 16, N]."""
    m, k = x.shape
    n = w.shape[0]
    tiles = -(-m // 16)
    xp = np.zeros((tiles * 16, k), np.float32)
    xp[:m] = x
    part = np.zeros((k // ks, tiles * 16, n), np.float32)
    for by in range(k // ks):
        for n0 in range(0, n, 32):  # a warp: 4 tiles of 8 columns
            acc = np.zeros((tiles, 4, 32, 4))
            for c in range(ks // 128):
                for mt in range(tiles):
                    for s in range(8):
                        for j in range(4):
                            a = np.zeros((32, 4, 2))
                            b = np.zeros((32, 2, 2))
                            for lane in range(32):
                                g, t = divmod(lane, 4)
                                kb = by * ks + c * 128 + 32 * t
                                row = n0 + 8 * j + g
                                q = _nibbles(w[row, kb // 8 : kb // 8 + 4])  # the lane's uint4
                                f = q * scales[row, kb // gs] + biases[row, kb // gs]
                                b[lane] = [f[4 * s : 4 * s + 2], f[4 * s + 2 : 4 * s + 4]]
                                lo = xp[mt * 16 + g, kb : kb + 32]
                                hi = xp[mt * 16 + g + 8, kb : kb + 32]
                                a[lane] = [lo[4 * s : 4 * s + 2], hi[4 * s : 4 * s + 2]] + [
                                    lo[4 * s + 2 : 4 * s + 4],
                                    hi[4 * s + 2 : 4 * s + 4],
                                ]
                            _mma(acc[mt, j], a, b)
            for mt in range(tiles):
                for j in range(4):
                    for lane in range(32):
                        g, t = divmod(lane, 4)
                        col, r = n0 + 8 * j + 2 * t, mt * 16 + g
                        part[by, r, col : col + 2] = acc[mt, j, lane, :2]
                        part[by, r + 8, col : col + 2] = acc[mt, j, lane, 2:]
    return part


@pytest.mark.parametrize("m,gs", [(5, 64), (20, 32)])
def test_kernel_layout_emulated_equals_the_dequantized_product(m, gs):
    rng = np.random.default_rng(m)
    n, k, ks = 128, 256, 128
    w = rng.integers(0, 2**32, (n, k // 8), dtype=np.uint64).astype(np.uint32)
    scales = rng.uniform(0.01, 0.05, (n, k // gs)).astype(np.float32)
    biases = rng.uniform(-0.3, 0.0, (n, k // gs)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    part = _emulate(x, w, scales, biases, gs, ks)
    deq = _nibbles(w) * np.repeat(scales, gs, axis=1) + np.repeat(biases, gs, axis=1)
    np.testing.assert_allclose(part.sum(axis=0)[:m], x @ deq.T, rtol=1e-4, atol=1e-4)
    assert not part[:, m:].any()  # padding rows stay zero
    # and MLX's own product (the kernel's reference) agrees with the dequantized weights
    ref = qmm.reference(mx.array(x), mx.array(w), mx.array(scales), mx.array(biases), gs)
    np.testing.assert_allclose(np.array(ref), x @ deq.T, rtol=1e-3, atol=1e-3)


def test_covers_and_splits():
    assert qmm.covers(16, 4096, 4096, 64, 4, mx.bfloat16)
    assert not qmm.covers(4, 4096, 4096, 64, 4, mx.bfloat16)  # few rows: nn.fused's kernels
    assert qmm.covers(17, 4096, 4096, 64, 4, mx.bfloat16)  # two tiles
    assert qmm.covers(64, 4096, 4096, 64, 4, mx.bfloat16)  # four tiles
    assert not qmm.covers(65, 4096, 4096, 64, 4, mx.bfloat16)  # past MAX_ROWS: MLX's product
    assert not qmm.covers(16, 4096, 4096, 64, 8, mx.bfloat16)
    assert not qmm.covers(16, 4096 + 64, 4096, 64, 4, mx.bfloat16)
    assert not qmm.covers(16, 4096, 4096, 64, 4, mx.float32)
    # each k range a whole number of chunks, enough blocks per product, none when the chunks run out
    for n, k in ((4096, 4096), (22528, 4096), (4096, 11264), (1024, 2816), (128, 256)):
        for tiles in (1, 2, 4):
            s = qmm.splits(n, k, tiles)
            assert (k // 128) % s == 0
            assert s * tiles * 16 * n * 4 <= max(n * k // 8, tiles * 16 * n * 4)  # partials <= 1/4 weights
            # more blocks were possible only past the cap on the partial sums
            assert (
                n // 128 * s >= qmm.TARGET_BLOCKS
                or s == 1
                or (k // 128) % (s + 1)
                or s + 1 > k // (512 * tiles)
            )
    assert qmm.splits(4096, 4096) == 8 and qmm.splits(4096, 4096, 4) == 2


def test_fused_dispatch_routes_only_covered_q4_products(monkeypatch):
    """With Blocks.QMM, the q4 products `qmm.covers` accepts go to `qmm.qmm`; dense weights, few
    rows and Blocks.NONE stay on MLX's ops (a stand-in records the calls and returns the reference)."""
    import mlx.nn as nn

    from rolekit.nn import fused
    from rolekit.nn.kernels import Blocks

    calls = []

    def fake(x, w, scales, biases, group_size, split=True):  # noqa: ANN001, ANN202
        calls.append(x.shape if split else ("whole", *x.shape))
        return qmm.reference(x, w, scales, biases, group_size)

    monkeypatch.setattr(qmm, "qmm", fake)
    monkeypatch.setattr(
        qmm,
        "covers",
        lambda rows, n, k, g, bits, dtype: qmm.MIN_ROWS <= rows <= qmm.MAX_ROWS and bits == 4,
    )
    lin = nn.Linear(256, 128, bias=False)
    qlin = nn.QuantizedLinear.from_linear(lin, group_size=64, bits=4)
    x = mx.random.normal((8, 1, 256))
    r = mx.zeros((8, 1, 128))
    for use in (Blocks.NONE, Blocks.QMM):
        calls.clear()
        got = fused.linear_residual(x, qlin, r, use_kernel=use)
        np.testing.assert_allclose(np.array(got), np.array(qlin(x)), rtol=1e-5, atol=1e-5)
        assert calls == ([] if use == Blocks.NONE else [(8, 1, 256)])
    calls.clear()
    fused.linear_residual(x, qlin, r, use_kernel=Blocks.QMM | Blocks.QMM_WHOLE)  # `Kernels.qmm_split` off
    assert calls == [("whole", 8, 1, 256)]
    calls.clear()
    fused.linear_residual(x, lin, r, use_kernel=Blocks.QMM)  # dense: MLX
    fused.linear_residual(x[:2], qlin, r[:2], use_kernel=Blocks.QMM)  # 2 rows: not covered
    assert calls == []


def _check_against_the_dense_product(m):
    """Against the dense fp32 product of the dequantized 4-bit weights: every group size, one
    split and several, each also over the whole k range (`split=False`: `Kernels.qmm_split` off),
    and a row slice of a stacked weight (a multi-linear's step, read in place). The kernel is
    evaluated on its own first, so a launch failure names it, not the oracle."""
    mx.random.seed(m)
    for n, k, gs in ((4096, 4096, 64), (1024, 2816, 32), (22528, 4096, 128), (128, 256, 64)):
        wf = (0.02 * mx.random.normal((2 * n, k))).astype(mx.bfloat16)
        w2, scales2, biases2 = mx.quantize(wf, gs, 4)
        rows = slice(n, 2 * n)  # the second weight set of a stack of two
        w, scales, biases = w2[rows], scales2[rows], biases2[rows]
        x = mx.random.normal((m, k)).astype(mx.bfloat16)
        for split in (True, False):
            ours = qmm.qmm(x, w, scales, biases, gs, split=split).astype(mx.float32)
            mx.eval(ours)
            dense = mx.dequantize(w, scales, biases, gs, 4).astype(mx.float32)  # [N, K]
            ref = x.astype(mx.float32) @ dense.T
            mx.eval(ref)
            err = (mx.linalg.norm(ours - ref) / mx.linalg.norm(ref)).item()
            assert err < 1e-2, (m, n, k, gs, split, qmm.splits(n, k, -(-m // 16)), err)
    assert qmm.splits(128, 256) == 1  # the last shape ran unsplit


@pytest.mark.gpu
@pytest.mark.parametrize("m", [5, 16, 33, 64])
def test_kernel_equals_the_dense_product_on_the_gpu(m):
    """1 to 4 tiles of 16 rows: every row count `covers` hands the kernel is a tile count run here."""
    _check_against_the_dense_product(m)
