"""Micro-benchmark of the temporal transformer's linear shapes, to see where a step's time goes.

For each weight shape of one temporal layer ([N, K] = [out, in]) and each batch M, times
`x @ W.T` (nn.Linear's layout), `x @ Wt` (the weight stored pre-transposed, [K, N] contiguous)
and `quantized_matmul` (q8/q4, group 64) and, with `kernel=True` (CUDA only), rolekit's few-row
kernel (`rolekit.nn.qmv`: q8k/q4k), as one lazy graph of `repeat` independent products
evaluated at once. Reports ms per product and the achieved weight bandwidth (GB/s).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import mlx.core as mx

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
