"""Fused transformer-block products for the per-frame decode on CUDA: fewer kernel launches.

On a CUDA GPU the batch-1 `Engine.step` is bound by the host, not the GPU: each of a frame's
thousands of kernel launches costs host time. A transformer block at one position is, per layer:
RMSNorm -> in_proj -> attention -> out_proj -> + residual -> RMSNorm -> linear_in -> silu gate ->
linear_out -> + residual: 11 launches in MLX. Three kernels here cover everything but attention:

- `norm_linear(x, norm, lin)` = lin(norm(x))                      (in_proj)
- `norm_gated(x, norm, mlp)` = silu(a) * b, [a | b] = linear_in(norm(x))
- `linear_residual(x, lin, r)` = r + lin(x)                       (out_proj, linear_out)

so a layer takes 5-6 launches instead of 11. Each kernel is one matrix-vector pass with the
prologue (RMSNorm of the few input rows, recomputed by every block into shared memory) and the
epilogue (gate, residual) folded in: one warp per output row reads the weight row in coalesced
16-byte chunks (dense, the activation's float type) or 32-bit words (MLX's affine q4/q8 layout
uint32 [N, K * bits / 32], scales and biases [N, K / group], w = scale * q + bias).
A multi-linear (one weight set per depformer step, stacked along the rows) is read in place: its
step's rows are a view (`weight_rows`), so one compiled variant serves every step.
Mimi's transformer uses the same kernels with an `nn.LayerNorm` prologue, `gelu=True` after
linear1 and a layer `scale=` before the residual (its `LinearT` weights stored `[out, in]` on CUDA).

`use_kernel` is a `Blocks` value (`Kernels.blocks`; True = FUSED). With DEQUANT (a prompt pass,
`Kernels.prompt_blocks`) every quantized product is `dense_product`. With QMM, a product of q4
weights with `nn.qmm.MIN_ROWS`..`MAX_ROWS` rows (batched conversations) runs on tensor cores
(`nn.qmm`), with QMV a one-row q4 / q8 product the fused kernel does not serve runs `nn.qmv`'s
kernel, the norm and epilogues then as MLX ops. Where no kernel applies (NONE, i.e. the
kernels off or not CUDA, a row count or layout no kernel covers), each function is exactly the
MLX ops it replaces,
so CPU results, the PyTorch parity tests and the eager path are unchanged. On CUDA the fused
result differs from the op-by-op one by float rounding only: the kernel keeps the normalized
input and the products in fp32 where MLX rounds them to the activation dtype between ops
(checked against fp32 on the GPU by the `gpu`-marked tests, `benchmarks.matmul.check_fused`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from rolekit.nn import qmm, qmv
from rolekit.nn.cuda import build_kernel
from rolekit.nn.cuda_text import device_code
from rolekit.nn.kernels import Blocks
from rolekit.nn.mlp import silu_gate
from rolekit.nn.multilinear import MultiLinear, QuantizedMultiLinear
from rolekit.nn.norm import RMSNorm

MAX_ROWS = 4  # activation rows (batch x positions) the kernels take; more go to MLX's GEMM path
_THREADS = 256  # 8 warps = 8 output rows per block

_BODY = device_code("rolekit.nn", "fused_linear.cu")  # the variant's macros and constants first


def _source(
    quantized: bool,
    norm: bool | str,
    residual: bool,
    eps: float,
    gelu: bool = False,
    scale: bool = False,
) -> str:
    """The kernel body of one variant (only the inputs it has are named). norm: False, True / "rms"
    (RMSNorm, input g) or "layer" (LayerNorm, inputs g and beta); the epilogue applies, in order,
    exact GELU, the layer scale (input ls) and the residual (input r)."""
    norm_kind = 2 if norm == "layer" else int(bool(norm))
    flags = {"NORM": norm_kind, "QUANT": quantized, "GELU": gelu, "SCALE": scale, "RESIDUAL": residual}
    head = "".join(f"#define FUSED_{name} {int(on)}\n" for name, on in flags.items())
    return head + f"  constexpr float EPS = {float(eps)!r}f;\n  constexpr int NT = {_THREADS};\n" + _BODY


@dataclass(frozen=True)
class Weights:
    """One linear's weight as the kernel reads it: rows row0 .. row0 + rows (x2 when gated)."""

    w: mx.array
    scales: mx.array | None
    biases: mx.array | None
    bits: int  # 0: dense
    group: int
    row0: int
    rows: int


def weights_of(lin: nn.Module, step: int | None = None) -> Weights | None:
    """The kernel's view of nn.Linear / nn.QuantizedLinear (affine, no bias) / (Quantized)MultiLinear
    at `step`; None for anything else (the caller then uses MLX)."""
    if isinstance(lin, MultiLinear) and step is not None:
        return Weights(lin.weight, None, None, 0, 0, step * lin.out_dims, lin.out_dims)
    if isinstance(lin, QuantizedMultiLinear) and step is not None:
        return Weights(
            lin.weight, lin.scales, lin.biases, lin.bits, lin.group_size, step * lin.out_dims, lin.out_dims
        )
    if step is None and getattr(lin, "layout", None) == "rows":  # e.g. Mimi's LinearT on CUDA
        return Weights(lin.weight, None, None, 0, 0, 0, lin.weight.shape[0])
    if step is not None or "bias" in lin:
        return None
    if isinstance(lin, nn.QuantizedLinear):
        if getattr(lin, "mode", "affine") != "affine":
            return None
        w = lin["weight"]
        return Weights(w, lin["scales"], lin["biases"], lin.bits, lin.group_size, 0, w.shape[0])
    if isinstance(lin, nn.Linear):
        return Weights(lin.weight, None, None, 0, 0, 0, lin.weight.shape[0])
    return None


def covers(wt: Weights, k: int, rows: int, dtype: mx.Dtype) -> bool:
    """Layouts and sizes the kernel is written for."""
    if not (1 <= rows <= MAX_ROWS and dtype in (mx.bfloat16, mx.float16, mx.float32)):
        return False
    if _smem(rows, k, wt.bits) > 160 * 1024:  # inputs (and word sums) live in shared memory as fp32
        return False
    if wt.bits == 0:
        return (
            k % 8 == 0
            and wt.w.ndim == 2
            and wt.w.shape[1] == k
            and wt.w.dtype in (mx.bfloat16, mx.float16, mx.float32)
        )
    return (
        wt.bits in (4, 8)
        and wt.group in (32, 64, 128)
        and k % wt.group == 0
        and wt.w.dtype == mx.uint32
        and wt.w.shape[1] * 32 // wt.bits == k
    )


@cache
def _kernel(names: tuple[str, ...], eps: float, smem: int, gelu: bool = False) -> Any:
    norm = ("layer" if "beta" in names else "rms") if "g" in names else False
    source = _source("scales" in names, norm, "r" in names, eps, gelu, "ls" in names)
    return build_kernel("fused_linear", list(names), ["y"], source, shared_memory=smem)


def fused(
    x: mx.array,
    wt: Weights,
    norm: RMSNorm | nn.LayerNorm | None = None,
    gate: bool = False,
    residual: mx.array | None = None,
    gelu: bool = False,
    scale: mx.array | None = None,
) -> mx.array:
    """The kernel: x [..., K] -> [..., N] (N = wt.rows), with the RMSNorm / LayerNorm prologue and
    the gate, GELU, layer-scale and residual epilogues as asked. Call only on CUDA, where `covers`
    holds."""
    k = x.shape[-1]
    rows = x.size // k
    n = wt.rows
    names = ["x", "w"]
    w, scales, biases = weight_rows(wt, gate)
    inputs = [x.reshape(rows, k), w]
    if wt.bits:
        names += ["scales", "biases"]
        inputs += [scales.astype(x.dtype), biases.astype(x.dtype)]
    if norm is not None:
        names.append("g")
        inputs.append(norm.weight)
        if isinstance(norm, nn.LayerNorm):
            names.append("beta")
            inputs.append(norm.bias)
    if scale is not None:
        names.append("ls")
        inputs.append(scale)
    if residual is not None:
        names.append("r")
        inputs.append(residual.reshape(rows, n))
    eps = norm.eps if norm is not None else 0.0
    (y,) = _kernel(tuple(names), eps, _smem(rows, k, wt.bits), gelu)(
        inputs=inputs,
        template=[
            ("T", x.dtype),
            ("B", rows),
            ("N", n),
            ("K", k),
            ("BITS", wt.bits),
            ("GS", wt.group or 64),
            ("GATE", gate),
        ],
        grid=(-(-n // (_THREADS // 32)) * _THREADS, 1, 1),
        threadgroup=(_THREADS, 1, 1),
        output_shapes=[(rows, n)],
        output_dtypes=[x.dtype],
    )
    return y.reshape(*x.shape[:-1], n)


def _smem(rows: int, k: int, bits: int) -> int:
    """Shared memory bytes: the input rows as fp32."""
    return rows * k * 4


def weight_rows(wt: Weights, gate: bool) -> tuple[mx.array, mx.array | None, mx.array | None]:
    """The rows the kernel reads (x2 when gated) as views: a leading-row slice of a row-contiguous
    matrix is row-contiguous, and MLX hands a kernel the view's own address, so nothing is copied.
    (A row offset as a template constant made one NVRTC compile per depformer step, per process.)"""
    rows = slice(wt.row0, wt.row0 + (2 if gate else 1) * wt.rows)
    if not wt.bits:
        return wt.w[rows], None, None
    return wt.w[rows], wt.scales[rows], wt.biases[rows]


def _call(lin: nn.Module, x: mx.array, step: int | None, use_kernel: Blocks | bool = False) -> mx.array:
    """lin(x) (at `step` for a multi-linear): through `nn.qmm` (QMM) or `nn.qmv` (QMV) where
    `use_kernel` has the flag and the kernel covers the product, else the module's own MLX ops."""
    wt = weights_of(lin, step) if use_kernel & (Blocks.QMM | Blocks.QMV | Blocks.DEQUANT) else None
    if wt is not None and wt.bits and use_kernel & Blocks.DEQUANT:
        return dense_product(x, wt)
    if wt is not None and wt.bits:
        k = x.shape[-1]
        rows = x.size // k
        if use_kernel & Blocks.QMM and qmm.covers(rows, wt.rows, k, wt.group, wt.bits, x.dtype):
            return qmm.qmm(x, *weight_rows(wt, False), wt.group, split=not use_kernel & Blocks.QMM_WHOLE)
        if use_kernel & Blocks.QMV and qmv.covers(rows, k, wt.group, wt.bits, x.dtype):
            return qmv.qmv(x, *weight_rows(wt, False), wt.group, wt.bits)
    return lin(x) if step is None else lin(x, step)


def dense_product(x: mx.array, wt: Weights) -> mx.array:
    """x [..., K] @ dequantize(wt).T -> [..., N] in x's dtype: MLX's dense product (cuBLAS on CUDA)
    with the weight rows dequantized to x's dtype first (transient: [N, K] of it per call). Equal to
    MLX's quantized product up to float rounding (`Blocks.DEQUANT`: a prompt pass's products)."""
    w, scales, biases = weight_rows(wt, False)
    dense = mx.dequantize(w, scales, biases, group_size=wt.group, bits=wt.bits).astype(x.dtype)
    return x @ dense.T


def _plan(x: mx.array, lin: nn.Module, step: int | None, use_kernel: Blocks | bool) -> Weights | None:
    """The fused kernel's weights where it serves this call (`use_kernel`: the caller's `Blocks`)."""
    if not use_kernel & Blocks.FUSED:
        return None
    wt = weights_of(lin, step)
    if wt is None or not covers(wt, x.shape[-1], x.size // x.shape[-1], x.dtype):
        return None
    if wt.w.shape[0] < wt.row0 + wt.rows:
        return None
    return wt


def norm_linear(
    x: mx.array,
    norm: RMSNorm | nn.LayerNorm,
    lin: nn.Module,
    step: int | None = None,
    gelu: bool = False,
    use_kernel: Blocks | bool = False,
) -> mx.array:
    """lin(norm(x)), then exact GELU when `gelu`; `step` selects a multi-linear's weight set.
    `use_kernel` (`Kernels.blocks`, CUDA only): one kernel where the layout is covered."""
    wt = _plan(x, lin, step, use_kernel)
    if wt is None or (isinstance(norm, nn.LayerNorm) and "bias" not in norm):
        y = _call(lin, norm(x), step, use_kernel)
        return nn.gelu(y) if gelu else y
    return fused(x, wt, norm=norm, gelu=gelu)


def norm_gated(
    x: mx.array, norm: RMSNorm, linear_in: nn.Module, use_kernel: Blocks | bool = False
) -> mx.array:
    """silu(a) * b with [a | b] = linear_in(norm(x)) split in halves (Kyutai ActivationGating)."""
    wt = _plan(x, linear_in, None, use_kernel)
    if wt is None or wt.rows % 2:
        return silu_gate(_call(linear_in, norm(x), None, use_kernel))
    half = Weights(wt.w, wt.scales, wt.biases, wt.bits, wt.group, wt.row0, wt.rows // 2)
    return fused(x, half, norm=norm, gate=True)


def linear_residual(
    x: mx.array,
    lin: nn.Module,
    residual: mx.array,
    step: int | None = None,
    scale: mx.array | None = None,
    use_kernel: Blocks | bool = False,
) -> mx.array:
    """residual + lin(x), the product times `scale` [N] first when given (a layer scale)."""
    wt = _plan(x, lin, step, use_kernel)
    if wt is None or residual.dtype != x.dtype or residual.size != x.size // x.shape[-1] * wt.rows:
        y = _call(lin, x, step, use_kernel)
        return residual + (y if scale is None else y * scale)
    return fused(x, wt, residual=residual, scale=scale)
