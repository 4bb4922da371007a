"""A streaming conv's windows as ONE CUDA kernel: carry + new samples (ELU applied) -> GEMM columns
and the next carry.

Why: in MLX a causal conv step is a concatenation of the carry and the input, a copy for the
strided windows, a copy for the next carry (a compiled graph's output), and the GEMM; the ELU
before most of Mimi's convs is one more launch. On CUDA the step is launch-bound (hundreds of
launches per Mimi frame, each costing host time), so those four launches become one here.

Contract, for prev [B, P, C] and x [B, T, C] with L = P + T, cat = [prev ; f(x)] along time
(f = ELU when `elu`, else identity):
    cols[b, i, j * C + c] = cat[b, i * stride + j * dilation, c]    i < (L - (K-1) dil - 1) / stride + 1
    carry[b, p, c]        = cat[b, L - P + p, c]                    p < P
"""

from __future__ import annotations

from functools import cache
from typing import Any

import mlx.core as mx

from rolekit.nn.cuda import build_kernel
from rolekit.nn.cuda_text import device_code

_THREADS = 256

_SOURCE = device_code("rolekit.codec", "conv_windows.cu")


def covers(prev: mx.array | None, x: mx.array) -> bool:
    """The kernel is written for this step: a carry to prepend, a float input."""
    return prev is not None and prev.shape[1] > 0 and x.dtype in (mx.float32, mx.bfloat16, mx.float16)


def windows(
    prev: mx.array, x: mx.array, kernel: int, stride: int, dilation: int, elu: bool
) -> tuple[mx.array, mx.array]:
    """prev [B, P, C], x [B, T, C] -> (cols [B, T_out, K * C], next carry [B, P, C]); see the contract."""
    b, p, c = prev.shape
    t = x.shape[1]
    t_out = (p + t - (kernel - 1) * dilation - 1) // stride + 1
    return _launch(prev, x.astype(prev.dtype), kernel, stride, dilation, elu, t_out)


def _launch(
    prev: mx.array, x: mx.array, kernel: int, stride: int, dilation: int, elu: bool, t_out: int
) -> tuple[mx.array, mx.array]:
    b, p, c = prev.shape
    total = b * t_out * kernel * c + b * p * c
    cols, carry = _kernel()(
        inputs=[prev, x],
        template=[
            ("T", prev.dtype),
            ("B", b),
            ("P", p),
            ("TN", x.shape[1]),
            ("C", c),
            ("K", kernel),
            ("S", stride),
            ("DIL", dilation),
            ("TO", t_out),
            ("ELU", elu),
        ],
        grid=(-(-total // _THREADS) * _THREADS, 1, 1),
        threadgroup=(_THREADS, 1, 1),
        output_shapes=[(b, t_out, kernel * c), (b, p, c)],
        output_dtypes=[prev.dtype, prev.dtype],
    )
    return cols, carry


@cache
def _kernel() -> Any:
    return build_kernel("conv_windows", ["prev", "x"], ["cols", "carry"], _SOURCE)
