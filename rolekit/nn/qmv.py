"""Quantized matrix-vector products for few-row activations on CUDA (the per-frame decode case).

At batch 1..16 every 80 ms frame reads all linear weights once, so the step is bound by weight
bandwidth. One hand-written kernel (an `nn.cuda.CudaKernel`, compiled by NVRTC on first use)
for MLX's affine layout: weight uint32 [N, K * bits / 32] (value j of a row sits in word
j * bits / 32, lowest bits first), scales and biases [N, K / group] in the activation dtype,
w = scale * q + bias. One warp per output row: each lane loads whole 16-byte chunks of packed
weight (all of its loads issued before any arithmetic), multiplies them with the matching
activations of every batch row, and the warp reduces.

Opt-in (`Kernels.qmv`, off by default: MLX's own quantized products serve the whole step as well;
`--kernels qmv=1` turns it on): `nn.fused` then sends the one-row q4 / q8 products its own kernel
does not serve here (`Blocks.QMV`). Where `covers` is false, MLX's `quantized_matmul` runs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import mlx.core as mx

from rolekit.nn.cuda import build_kernel
from rolekit.nn.cuda_text import device_code

# Activation rows routed to the kernel by `nn.fused` (with `Blocks.QMV`). Each warp re-reads every row's
# activations, so more rows cost it more than MLX's tiled kernel: batches go to MLX. `qmv` takes up to 16.
MAX_ROWS = 1
KERNEL_ROWS = 16

# Template constants: T (activation dtype), B (rows), N (out), K (in), GS (group), BITS (4 or 8).
_SOURCE = device_code("rolekit.nn", "qmv.cu")

_THREADS = 256


@lru_cache(maxsize=1)
def _kernel() -> Any:
    return build_kernel("qmv", ["x", "w", "scales", "biases"], ["y"], _SOURCE)


def covers(rows: int, k: int, group_size: int, bits: int, dtype: mx.Dtype) -> bool:
    """Shapes the hand-written kernel covers (else MLX's quantized_matmul runs)."""
    return (
        1 <= rows <= MAX_ROWS
        and bits in (4, 8)
        and group_size in (32, 64, 128)
        and k % 128 == 0
        and dtype in (mx.bfloat16, mx.float16, mx.float32)
    )


def qmv(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int) -> mx.array:
    """x [..., K] with prod(leading) <= KERNEL_ROWS -> x @ dequantize(w).T  [..., N], on CUDA."""
    k = x.shape[-1]
    n = w.shape[0]
    rows = x.size // k
    x2 = x.reshape(rows, k)
    (y,) = _kernel()(
        inputs=[x2, w, scales.astype(x.dtype), biases.astype(x.dtype)],
        template=[("T", x.dtype), ("B", rows), ("N", n), ("K", k), ("GS", group_size), ("BITS", bits)],
        grid=(n * 32, 1, 1),
        threadgroup=(_THREADS, 1, 1),
        output_shapes=[(rows, n)],
        output_dtypes=[x.dtype],
    )
    return y.reshape(*x.shape[:-1], n)
