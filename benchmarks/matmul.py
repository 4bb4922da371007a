"""Micro-benchmark of the temporal transformer's linear shapes, to see where a step's time goes.

For each weight shape of one temporal layer ([N, K] = [out, in]) and each batch M, times
`x @ W.T` (nn.Linear's layout), `x @ Wt` (the weight stored pre-transposed, [K, N] contiguous)
and `quantized_matmul` (q8/q4, group 64) and, with `kernel=True` (CUDA only), rolekit's few-row
kernel (`rolekit.nn.qmv`: q8k/q4k) and its tensor-core q4 kernel (`rolekit.nn.qmm`: q4t), as one lazy graph of `repeat` independent products
evaluated at once. Reports ms per product and the achieved weight bandwidth (GB/s).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import mlx.core as mx

from rolekit.nn import qmm
from rolekit.nn.kernels import Kernels
from rolekit.nn.qmv import KERNEL_ROWS, qmv

# (name, out N, in K) of one PersonaPlex temporal layer, plus the text head.
SHAPES = (
    ("in_proj", 12288, 4096),
    ("out_proj", 4096, 4096),
    ("linear_in", 22528, 4096),
    ("linear_out", 4096, 11264),
    ("text_linear", 32000, 4096),
)


def _time(fn: Any, repeat: int, trials: int = 5) -> float:
    """Median ms of one call of fn() (fn builds `repeat` products; evaluated together)."""
    mx.eval(fn())
    out = []
    for _ in range(trials):
        t0 = time.perf_counter()
        mx.eval(fn())
        out.append((time.perf_counter() - t0) * 1000.0 / repeat)
    out.sort()
    return out[len(out) // 2]


def _products(layout: str, x: mx.array, weights: list[Any]) -> list[mx.array]:
    if layout == "x@W.T":
        return [x @ w.T for w in weights]
    if layout == "x@Wt":
        return [x @ wt for wt in weights]
    bits = 8 if layout.startswith("q8") else 4
    if layout == "q4t":  # rolekit's tensor-core kernel (rolekit.nn.qmm)
        return [qmm.qmm(x, *q, group_size=64) for q in weights]
    if layout.endswith("k"):  # rolekit's few-row CUDA kernel
        return [qmv(x, *q, group_size=64, bits=bits) for q in weights]
    return [mx.quantized_matmul(x, *q, transpose=True, group_size=64, bits=bits) for q in weights]


def check_qmv(
    batches: tuple[int, ...] = (1, 4, 16), scale: float = 1.0, seed: int = 0
) -> list[dict[str, Any]]:
    """Relative error of rolekit's kernel and of mx.quantized_matmul against the dequantized weight
    in float32, fresh random inputs per shape, bf16 activations (the GPU's); `finite` flags NaN/inf."""
    mx.random.seed(seed)
    rows = []
    for name, n, k in SHAPES:
        n, k = max(64, int(n * scale) // 64 * 64), max(128, int(k * scale) // 128 * 128)
        w = mx.random.normal((n, k)) * 0.02
        for bits in (4, 8):
            q = mx.quantize(w.astype(mx.bfloat16), 64, bits)
            deq = mx.dequantize(*q, group_size=64, bits=bits).astype(mx.float32)
            for m in batches:
                x = mx.random.normal((m, k)).astype(mx.bfloat16)
                ref = x.astype(mx.float32) @ deq.T
                ours = qmv(x, *q, group_size=64, bits=bits).astype(mx.float32)
                mlx = mx.quantized_matmul(x, *q, transpose=True, group_size=64, bits=bits).astype(mx.float32)
                norm = mx.linalg.norm(ref)
                err = (mx.linalg.norm(ours - ref) / norm).item()
                rows.append(
                    {
                        "shape": name,
                        "bits": bits,
                        "m": m,
                        "rel_err": err,
                        "mlx_rel_err": (mx.linalg.norm(mlx - ref) / norm).item(),
                        "finite": bool(mx.all(mx.isfinite(ours)).item()),
                        "ok": bool(err < 1e-2 and mx.all(mx.isfinite(ours)).item()),
                    }
                )
    return rows


def bench_matmul(
    batches: tuple[int, ...] = (1, 16), repeat: int = 16, scale: float = 1.0, kernel: bool = False
) -> dict[str, Any]:
    """ms and GB/s per product for each shape x batch x layout; `scale` shrinks shapes (for tests)."""
    dtype = mx.bfloat16 if mx.default_device() == mx.gpu else mx.float32
    rows = []
    for name, n, k in SHAPES:
        n, k = max(64, int(n * scale) // 64 * 64), max(64, int(k * scale) // 64 * 64)
        # `repeat` distinct weights so that the products do not hit the cache.
        ws = [mx.random.normal((n, k)).astype(dtype) * 0.02 for _ in range(repeat)]
        wts = [mx.contiguous(w.T) for w in ws]
        q4 = [mx.quantize(w, 64, 4) for w in ws]
        q8 = [mx.quantize(w, 64, 8) for w in ws]
        mx.eval(ws, wts, q4, q8)
        for m in batches:
            x = mx.random.normal((m, k)).astype(dtype)
            layouts = [
                ("x@W.T", ws, n * k * 2),
                ("x@Wt", wts, n * k * 2),
                ("q8", q8, n * k * 1.06),
                ("q4", q4, n * k * 0.56),
            ]
            if kernel and m <= KERNEL_ROWS:  # rolekit's CUDA kernel (rolekit.nn.qmv)
                layouts += [("q8k", q8, n * k * 1.06), ("q4k", q4, n * k * 0.56)]
            if kernel and qmm.covers(m, n, k, 64, 4, dtype):  # rolekit's tensor-core kernel
                layouts.append(("q4t", q4, n * k * 0.56))
            for layout, weights, nbytes in layouts:
                ms = _time(partial(_products, layout, x, weights), repeat)
                rows.append(
                    {
                        "shape": name,
                        "n": n,
                        "k": k,
                        "m": m,
                        "layout": layout,
                        "ms": round(ms, 4),
                        "gbps": round(nbytes / ms / 1e6, 1),
                    }
                )
        del ws, wts, q4, q8
    return {"runtime": "mlx-matmul", "device": str(mx.default_device()), "dtype": str(dtype), "rows": rows}


def _fused_case(
    kind: str, x: mx.array, norm: Any, lin: Any, r: mx.array, step: int | None, use_kernel: bool
) -> mx.array:
    from rolekit.nn import fused

    if kind == "res":
        return fused.linear_residual(x, lin, r, step, use_kernel=use_kernel)
    if kind == "gate":
        return fused.norm_gated(x, norm, lin, use_kernel=use_kernel)
    return fused.norm_linear(x, norm, lin, step, use_kernel=use_kernel)


def check_fused(rows: tuple[int, ...] = (1, 3), scale: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Relative error of rolekit's fused block kernels (`rolekit.nn.fused`) and of the op-by-op MLX
    path against float32 math on the same (dequantized) weights, for every variant the step uses:
    RMSNorm + in_proj, RMSNorm + gated linear_in, out_proj / linear_out + residual, temporal and
    depformer (multi-linear, step 5) shapes, dense bf16 and fp32, q4 and q8 (bf16 activations).
    `fused` tells whether the kernel ran (CUDA, sizes covered); `ok`: finite, within 1e-4 (fp32),
    1e-2 (bf16) or 3e-2 (q4/q8: MLX's own error there is 0.5-2.4%) and no worse than twice the MLX
    path's error plus 1e-3."""
    import mlx.nn as nn

    from rolekit.nn import fused
    from rolekit.nn.multilinear import MultiLinear
    from rolekit.nn.norm import RMSNorm

    if isinstance(rows, int):
        rows = (rows,)

    mx.random.seed(seed)
    dims = lambda v: max(128, int(v * scale) // 128 * 128)  # noqa: E731
    d, hid, dd, dhid = dims(4096), dims(11264), dims(1024), dims(2816)
    cases = [  # (name, kind, out, in, multi-linear steps)
        ("in_proj", "norm", 3 * d, d, 0),
        ("linear_in", "gate", 2 * hid, d, 0),
        ("out_proj", "res", d, d, 0),
        ("linear_out", "res", d, hid, 0),
        ("dep_in_proj", "norm", 3 * dd, dd, 16),
        ("dep_out_proj", "res", dd, dd, 16),
        ("dep_linear_in", "gate", 2 * dhid, dd, 0),
        ("dep_linear_out", "res", dd, dhid, 0),
    ]
    out = []
    for name, kind, n, k, steps in cases:
        for layout in ("bf16", "fp32", "q4", "q8"):
            dtype = mx.float32 if layout == "fp32" else mx.bfloat16
            lin: nn.Module = MultiLinear(steps, k, n) if steps else nn.Linear(k, n, bias=False)
            lin.weight = (mx.random.normal(lin.weight.shape) * 0.02).astype(dtype)
            if layout in ("q4", "q8"):
                bits = int(layout[1])
                lin = lin.to_quantized(64, bits) if steps else nn.QuantizedLinear.from_linear(lin, 64, bits)
                lin.set_dtype(dtype)  # scales and biases in the activation dtype, as loaded
            wt = fused.weights_of(lin, 5 if steps else None)
            if wt.bits:
                wf = mx.dequantize(wt.w, wt.scales, wt.biases, group_size=wt.group, bits=wt.bits)
            else:
                wf = wt.w
            wf = wf.astype(mx.float32)[wt.row0 : wt.row0 + wt.rows]  # [N, K] this step's rows
            norm = RMSNorm(k)
            norm.weight = mx.random.uniform(0.5, 1.5, (k,)).astype(dtype)
            for m in rows:
                x = (mx.random.normal((m, 1, k)) * 2).astype(dtype)
                r = mx.random.normal((m, 1, n if kind != "gate" else n // 2)).astype(dtype)
                xf, gf = x.astype(mx.float32), norm.weight.astype(mx.float32)
                step = 5 if steps else None
                # fp32 products as sums of elementwise products: GPU matmuls of fp32 at m > 1 run
                # in TF32 (about 3e-4 relative), which would be the reference's own error.
                if kind == "res":
                    ref = r.astype(mx.float32) + (xf[..., None, :] * wf).sum(-1)
                else:
                    xn = xf * mx.rsqrt(mx.mean(xf * xf, axis=-1, keepdims=True) + norm.eps) * gf
                    ref = (xn[..., None, :] * wf).sum(-1)
                    if kind == "gate":
                        h = ref.shape[-1] // 2
                        ref = nn.silu(ref[..., :h]) * ref[..., h:]
                on = Kernels.for_device().fused
                ran = fused._plan(x, lin, step, on) is not None
                ours = _fused_case(kind, x, norm, lin, r, step, on).astype(mx.float32)
                mlx = _fused_case(kind, x, norm, lin, r, step, False).astype(mx.float32)
                row = _fused_row(name, layout, m, ran, ours, mlx, ref)
                bound = {"fp32": 1e-4, "bf16": 1e-2}.get(layout, 3e-2)
                err = row["rel_err"]
                row["ok"] = row["ok"] and err < bound and err <= 2 * row["mlx_rel_err"] + 1e-3
                out.append(row)
    return out + _check_fused_mimi(scale)


def _fused_row(
    name: str, layout: str, m: int, ran: bool, ours: mx.array, mlx: mx.array, ref: mx.array
) -> dict[str, Any]:
    """One check's record: relative errors of the kernel and the MLX path against `ref`; `ok` here
    only says the kernel's output is finite (each caller adds its bounds)."""
    scale_ref = mx.linalg.norm(ref)
    return {
        "shape": name,
        "layout": layout,
        "m": m,
        "fused": ran,
        "rel_err": (mx.linalg.norm(ours - ref) / scale_ref).item(),
        "mlx_rel_err": (mx.linalg.norm(mlx - ref) / scale_ref).item(),
        "ok": bool(mx.all(mx.isfinite(ours)).item()),
    }


def _mimi_case(
    kind: str, x: mx.array, norm: Any, lin: Any, r: mx.array, ls: mx.array, use_kernel: bool
) -> mx.array:
    from rolekit.nn import fused

    if kind == "scale_res":
        return fused.linear_residual(x, lin, r, scale=ls, use_kernel=use_kernel)
    return fused.norm_linear(x, norm, lin, gelu=kind == "ln_gelu", use_kernel=use_kernel)


def _check_fused_mimi(scale: float) -> list[dict[str, Any]]:
    """Mimi's transformer products at one step (2 positions, fp32, linears in rows layout):
    LayerNorm + in_proj, LayerNorm + linear1 + GELU, out_proj / linear2 + layer scale + residual."""
    import mlx.nn as nn

    from rolekit.codec.transformer import LinearT
    from rolekit.nn import fused

    d, ff = max(64, int(512 * scale)) // 64 * 64, max(64, int(2048 * scale)) // 64 * 64
    out = []
    for name, kind, n, k in (
        ("mimi_in_proj", "ln", 3 * d, d),
        ("mimi_linear1", "ln_gelu", ff, d),
        ("mimi_out_proj", "scale_res", d, d),
        ("mimi_linear2", "scale_res", d, ff),
    ):
        lin = LinearT(k, n)
        lin.weight = mx.random.normal((k, n)) * 0.05
        lin.to_rows()
        wf = lin.weight  # [N, K]
        norm = nn.LayerNorm(k, eps=1e-5)
        norm.weight = mx.random.uniform(0.5, 1.5, (k,))
        norm.bias = mx.random.normal((k,)) * 0.1
        ls = mx.random.uniform(0.01, 0.2, (n,))
        x = mx.random.normal((1, 2, k)) * 2
        r = mx.random.normal((1, 2, n))
        if kind == "scale_res":
            ref = r + (x[..., None, :] * wf).sum(-1) * ls
        else:
            mu = mx.mean(x, axis=-1, keepdims=True)
            xn = (x - mu) * mx.rsqrt(
                mx.mean((x - mu) ** 2, axis=-1, keepdims=True) + 1e-5
            ) * norm.weight + norm.bias
            ref = (xn[..., None, :] * wf).sum(-1)
            if kind == "ln_gelu":
                ref = nn.gelu(ref)
        on = Kernels.for_device().fused
        ran = fused._plan(x, lin, None, on) is not None
        ours = _mimi_case(kind, x, norm, lin, r, ls, on)
        mlx = _mimi_case(kind, x, norm, lin, r, ls, False)
        row = _fused_row(name, "fp32", 2, ran, ours, mlx, ref)
        row["ok"] = row["ok"] and row["rel_err"] < 1e-4
        out.append(row)
    return out
