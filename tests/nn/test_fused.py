"""rolekit.nn.fused: the block products (norm + in_proj, norm + gated linear_in, linear + residual)
are exactly the MLX ops where the CUDA kernel does not run, and the layers hand the kernel the
right contract where it does. The kernel itself runs only on CUDA (checked on the GPU against
fp32 by the `gpu`-marked tests below); here a float32 model of its contract stands in for it, so
that row offsets, halves, norms and residuals reaching it are tested on the CPU."""

from __future__ import annotations

import re

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from rolekit.nn import fused
from rolekit.nn.mlp import GatedMLP
from rolekit.nn.multilinear import MultiLinear
from rolekit.nn.norm import RMSNorm


def _norm(k: int, seed: int) -> RMSNorm:
    norm = RMSNorm(k)
    norm.weight = mx.random.uniform(0.5, 1.5, (k,), key=mx.random.key(seed))
    return norm


def _linear(kind: str, n: int, k: int, seed: int) -> nn.Module:
    mx.random.seed(seed)
    if kind.startswith("multi"):
        lin = MultiLinear(4, k, n)
    else:
        lin = nn.Linear(k, n, bias=False)
    if kind.endswith("q4"):
        lin = (
            lin.to_quantized(64, 4)
            if isinstance(lin, MultiLinear)
            else nn.QuantizedLinear.from_linear(lin, 64, 4)
        )
    return lin


def test_without_use_kernel_the_functions_are_the_mlx_ops_exactly():
    x = mx.random.normal((2, 1, 128), key=mx.random.key(1))
    r = mx.random.normal((2, 1, 192), key=mx.random.key(2))
    norm = _norm(128, 3)
    for kind in ("dense", "q4"):
        lin = _linear(kind, 192, 128, 4)
        assert mx.array_equal(fused.norm_linear(x, norm, lin), lin(norm(x))).item()
        assert mx.array_equal(fused.linear_residual(x, lin, r), r + lin(x)).item()
    multi = _linear("multi", 192, 128, 5)
    assert mx.array_equal(fused.norm_linear(x, norm, multi, 2), multi(norm(x), 2)).item()
    mlp = GatedMLP(128, 96)
    h = fused.norm_gated(x, norm, mlp.linear_in)
    assert mx.array_equal(mlp.linear_out(h), mlp(norm(x))).item()


@pytest.mark.parametrize("kind", ["dense", "q4", "multi", "multi-q4"])
def test_the_kernel_receives_its_weight_rows_norm_gate_and_residual(kernel_model, kind, monkeypatch):
    x = mx.random.normal((3, 1, 128), key=mx.random.key(6))
    norm = _norm(128, 7)
    lin = _linear(kind, 192, 128, 8)
    step = 3 if kind.startswith("multi") else None
    call = (lambda v: lin(v, step)) if step is not None else lin
    r = mx.random.normal((3, 1, 192), key=mx.random.key(9))
    got = [
        fused.norm_linear(x, norm, lin, step, use_kernel=True),
        fused.linear_residual(x, lin, r, step, use_kernel=True),
    ]
    want = [call(norm(x)), r + call(x)]
    assert len(kernel_model) == 2
    assert kernel_model[0][1:3] == ((step or 0) * 192, 192)  # a multi-linear's step rows
    tol = 1e-5 if "q4" not in kind else 2e-3  # q4: dequantized matmul vs quantized_matmul
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.array(g), np.array(w), rtol=tol, atol=tol)


def test_gated_kernel_reads_both_halves(kernel_model, monkeypatch):
    x = mx.random.normal((1, 1, 128), key=mx.random.key(10))
    norm = _norm(128, 11)
    mlp = GatedMLP(128, 96)
    got = fused.norm_gated(x, norm, mlp.linear_in, use_kernel=True)
    assert kernel_model == [((1, 1, 128), 0, 96, 0, True, True, False)]  # half the rows, gated
    np.testing.assert_allclose(
        np.array(got), np.array(fused.norm_gated(x, norm, mlp.linear_in)), rtol=1e-5, atol=1e-6
    )


def test_batches_above_max_rows_and_odd_layouts_stay_on_mlx(kernel_model):
    norm = _norm(128, 12)
    lin = _linear("dense", 64, 128, 13)
    fused.norm_linear(mx.zeros((fused.MAX_ROWS + 1, 1, 128)), norm, lin, use_kernel=True)
    biased = nn.Linear(128, 64)
    fused.norm_linear(mx.zeros((1, 1, 128)), norm, biased, use_kernel=True)
    fused.norm_linear(mx.zeros((1, 1, 128)), norm, lin)  # not asked for
    fused.norm_linear(mx.zeros((1, 1, 128), dtype=mx.int32).astype(mx.float32), norm, lin, use_kernel=True)
    assert len(kernel_model) == 1  # only the last: the others fall back
    assert not fused.covers(fused.weights_of(lin), 128, 1, mx.int32)
    assert not fused.covers(fused.weights_of(_linear("q4", 64, 128, 14)), 96, 1, mx.float32)  # K mismatch


def _preprocessed(src: str) -> str:
    """The code (comments dropped) the C preprocessor keeps of `src`, for the #define / #if / #elif /
    #else / #endif of integer macros the fused body uses."""
    macros: dict[str, int] = {}
    kept, stack = [], []  # stack: (this branch on, a branch taken) per open #if
    for line in (re.sub(r"//.*", "", x) for x in src.splitlines()):
        word = line.strip().split(maxsplit=1)
        head, rest = (word + ["", ""])[:2] if word else ("", "")
        on = all(b for b, _ in stack)
        value = lambda expr: eval(re.sub(r"\b[A-Z_]+\b", lambda m: str(macros.get(m[0], 0)), expr))  # noqa: E731, S307
        if head == "#define" and on:
            name, val = rest.split()
            macros[name] = int(val)
        elif head == "#if":
            stack.append((bool(value(rest)),) * 2)
        elif head == "#elif":
            taken = stack[-1][1]
            stack[-1] = (not taken and bool(value(rest)), taken or bool(value(rest)))
        elif head == "#else":
            stack[-1] = (not stack[-1][1], True)
        elif head == "#endif":
            stack.pop()
        elif on:
            kept.append(line)
    assert not stack
    return "\n".join(kept)


def test_source_names_only_the_inputs_of_its_variant():
    plain = _preprocessed(fused._source(quantized=False, norm=False, residual=False, eps=1e-8))
    full = _preprocessed(fused._source(quantized=True, norm=True, residual=True, eps=1e-5, scale=True))
    layer = _preprocessed(fused._source(quantized=False, norm="layer", residual=False, eps=1e-5, gelu=True))
    named = lambda src, name: re.search(rf"\b{name}\b", src) is not None  # noqa: E731
    assert not any(named(plain, n) for n in ("g", "beta", "r", "ls", "scales", "biases", "erff"))
    assert all(named(full, n) for n in ("g", "r", "ls", "scales", "biases")) and "1e-05f" in full
    assert not any(named(full, n) for n in ("beta", "erff"))
    assert all(named(layer, n) for n in ("g", "beta", "erff")) and not named(layer, "scales")


@pytest.mark.parametrize("kind", ["multi", "multi-q4", "dense"])
@pytest.mark.parametrize("gate", [False, True])
def test_kernel_weights_are_the_step_rows_as_views(kind, gate):
    """`weight_rows` hands the kernel rows row0 .. row0 + rows (x2 gated) of the stacked weight (and
    of its scales and biases), the rows `contract` multiplies, without a template row offset."""
    lin = _linear(kind, 64, 128, 15)
    wt = fused.weights_of(lin, 2 if kind.startswith("multi") else None)
    if gate:
        wt = fused.Weights(wt.w, wt.scales, wt.biases, wt.bits, wt.group, wt.row0, wt.rows // 2)
    w, scales, biases = fused.weight_rows(wt, gate)
    rows = slice(wt.row0, wt.row0 + (2 if gate else 1) * wt.rows)
    assert w.shape[0] == (2 if gate else 1) * wt.rows
    assert mx.array_equal(w, wt.w[rows]).item()
    if wt.bits:
        assert (
            mx.array_equal(scales, wt.scales[rows]).item() and mx.array_equal(biases, wt.biases[rows]).item()
        )
    else:
        assert scales is None and biases is None
    assert "ROW0" not in fused._source(quantized=bool(wt.bits), norm=True, residual=True, eps=1e-8)


@pytest.mark.gpu
def test_fused_block_kernels_on_cuda_match_fp32():
    """Dense / q4 / q8 layouts, 1 and 3 rows, the temporal, depformer and Mimi blocks: every case
    ran the kernel, is finite and close to fp32 (`benchmarks.matmul.check_fused`)."""
    from benchmarks.matmul import check_fused

    rows = check_fused()
    assert all(r["fused"] and r["ok"] for r in rows), [r for r in rows if not (r["fused"] and r["ok"])]


@pytest.mark.gpu
def test_qmv_kernel_on_cuda_matches_mlx():
    from benchmarks.matmul import check_qmv

    rows = check_qmv()
    assert all(r["ok"] for r in rows), rows
