"""rolekit.nn.fused `quant_values` / `dot_quant`: the affine-quantized values are built from mantissa
bits instead of int-to-float conversions. The CUDA runs only on the GPU; here a numpy model that
follows its arithmetic step by step (uint32 bit operations, float32 rounding, fma) checks that the
values are exact for every field at every position and that one word's dot product, and a whole
row's against `mx.dequantize`, match the plain formula."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest

from rolekit.nn.cuda_text import device_code

EXPS = np.uint32(
    int(re.search(r"EXPS = (0x[0-9A-Fa-f]+)u;", device_code("rolekit.nn", "dot.cuh")).group(1), 16)
)


def _fma(a, b, c):
    """fmaf in float32: the float64 product of two float32 is exact, then one rounding (a second one
    only in the rare double-rounding case, far below the tolerances here)."""
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)


def _exponent(bits: int, j: int) -> np.uint32:
    return np.uint32((150 - bits * j) << 23)  # 2^(23 - p), p = bits * j


def quant_values(w: np.ndarray, bits: int) -> list[np.ndarray]:
    """The kernel's `quant_values`: per word (uint32 array), the 32 / bits values as float32."""
    w = w.astype(np.uint32)
    mask = (1 << bits) - 1
    halves = [w | EXPS, (w >> np.uint32(16)) | EXPS]
    out = []
    for h in halves:
        for j in range(16 // bits):
            e = _exponent(bits, j)
            f = (h & (e | np.uint32(mask << (bits * j)))).view(np.float32)
            out.append(f - e.view(np.float32))  # FADD with the immediate -2^(23 - p)
    return out


def _fields(w: np.ndarray, bits: int) -> list[np.ndarray]:
    return [(w.astype(np.uint64) >> (bits * e)) & ((1 << bits) - 1) for e in range(32 // bits)]


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 values representable in bfloat16 (scales and biases reach the kernel as bf16)."""
    return (a.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


@pytest.mark.parametrize("bits", [4, 8])
def test_values_exact_for_every_field(bits):
    # every 16-bit half under random other bits: all values at all positions, arbitrary neighbours
    rng = np.random.default_rng(bits)
    half = np.arange(1 << 16, dtype=np.uint32)
    other = rng.integers(0, 1 << 16, half.size, dtype=np.uint32)
    for w in (half | (other << np.uint32(16)), (half << np.uint32(16)) | other):
        for v, q in zip(quant_values(w, bits), _fields(w, bits), strict=True):
            assert v.dtype == np.float32
            np.testing.assert_array_equal(v, q.astype(np.float32))


@pytest.mark.parametrize("bits", [4, 8])
def test_exponent_fields(bits):
    # EXPS covers every exponent used, and touches neither the half's 16 bits nor the sign
    assert EXPS & np.uint32(0x807FFFFF) == 0
    mask = (1 << bits) - 1
    for j in range(16 // bits):
        e, p = _exponent(bits, j), bits * j
        assert e & ~EXPS == 0
        for q in range(1 << bits):
            f = np.array([e | np.uint32(q << p)], np.uint32).view(np.float32)[0]
            assert f == np.float32(2.0 ** (23 - p) + q)
            assert f - e.view(np.float32) == q
            # the same mantissa under 2^23 (0x4B000000) is 2^23 + q * 2^p: ours is that times 2^-p
            g = np.array([np.uint32(q << p) | np.uint32(0x4B000000)], np.uint32).view(np.float32)[0]
            assert g - np.float32(2**23) == q * 2**p and q * 2**p <= mask * 2**p < 2**23
            assert np.float32(g * np.float32(2.0**-p)) == f


def _dot_word(w, x, sc, bi, acc):
    """One word of `dot_quant` for one row b: w [n], x [n, 32 / bits], sc/bi/acc [n] float32."""
    bits = 32 // x.shape[1]
    qv = quant_values(w, bits)
    per = len(qv)
    qx = qv[0] * x[:, 0]
    for e in range(1, per):
        qx = _fma(qv[e], x[:, e], qx)
    xsum = (x[:, 0] + x[:, 1]) + (x[:, 2] + x[:, 3])
    if per == 8:
        xsum = xsum + ((x[:, 4] + x[:, 5]) + (x[:, 6] + x[:, 7]))
    return _fma(sc, qx, _fma(bi, xsum, acc))


@pytest.mark.parametrize("bits", [4, 8])
def test_word_dot_product(bits):
    rng = np.random.default_rng(10 + bits)
    n, per = 4096, 32 // bits
    w = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    x = rng.standard_normal((n, per)).astype(np.float32) * rng.uniform(0.01, 100, (n, 1)).astype(np.float32)
    sc = _bf16(rng.uniform(1e-3, 0.1, n))
    bi = _bf16(rng.uniform(-1, 1, n) * sc * (1 << bits) / 2)
    acc = rng.standard_normal(n).astype(np.float32)
    got = _dot_word(w, x, sc, bi, acc)
    q = np.stack(_fields(w, bits), axis=1).astype(np.float64)
    terms = (sc[:, None].astype(np.float64) * q + bi[:, None]) * x
    want = acc + terms.sum(axis=1)
    scale = np.abs(acc) + np.abs(terms).sum(axis=1)
    assert np.max(np.abs(got - want) / scale) < 1e-6


@pytest.mark.parametrize("bits", [4, 8])
def test_row_matches_mlx_dequantize(bits):
    # MLX's own packing: the kernel's word order (little end first) and group index gi = c * per / GS
    k, gs = 1024, 64
    rng = np.random.default_rng(20 + bits)
    wq, scales, biases = mx.quantize(mx.array(rng.standard_normal((1, k)), mx.float32), gs, bits)
    wd = np.array(mx.dequantize(wq, scales, biases, gs, bits), np.float64)[0]
    words = np.array(wq, np.uint32)[0]
    sc, bi = np.array(scales, np.float32)[0], np.array(biases, np.float32)[0]
    per = 32 // bits
    x = rng.standard_normal(k).astype(np.float32)
    c = np.arange(k // per)
    gi = c * per // gs
    acc = np.zeros(c.size, np.float32)  # one accumulator per word: lanes and words sum at the end
    got = _dot_word(words[c], x.reshape(-1, per), sc[gi], bi[gi], acc).astype(np.float64).sum()
    want = wd @ x
    assert abs(got - want) < 1e-6 * (np.abs(wd) @ np.abs(x))
