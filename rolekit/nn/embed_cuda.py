"""A step's summed token embeddings as ONE CUDA kernel (`Kernels.embed`; off: the MLX ops).

The LM's input at a step is the sum of 17 embedding lookups (16 audio codebooks, then text), a
token of -1 giving a zero vector. As MLX ops that is 17 gathers plus the index and mask
arithmetic around them, ~20 launches a frame, each gather's index an array of 4 bytes, which
MLX's CUDA allocator keeps in host memory. Here one thread sums 8 values of one (row, time) over all streams, reading the
tokens once from a [B, S, T] array.

The sum is the op path's, rounding for rounding: streams in the given order, the first lookup as
stored, then each addition rounded to the tables' dtype (as MLX's element-wise add in that dtype),
token -1 a zero vector and any other token clamped at 0 (`embed_tokens`). `reference` is that
contract with MLX ops; the `gpu`-marked test of tests/nn/test_embed_cuda.py compares the two
for exact equality.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import mlx.core as mx

from rolekit.nn.cuda import build_kernel
from rolekit.nn.cuda_text import device_code

_BODY = device_code("rolekit.nn", "embed_sum.cu")

THREADS = 256


def covers(tables: list[mx.array], tokens: mx.array) -> bool:
    """The kernel is written for this lookup: tables of one float dtype and width (a multiple of
    8), tokens [B, S, T] with one table per stream."""
    if tokens.ndim != 3 or tokens.shape[1] != len(tables):
        return False
    first = tables[0]
    if first.dtype not in (mx.bfloat16, mx.float16, mx.float32) or first.shape[1] % 8:
        return False
    return all(t.dtype == first.dtype and t.ndim == 2 and t.shape[1] == first.shape[1] for t in tables)


def reference(tables: list[mx.array], tokens: mx.array, order: tuple[int, ...]) -> mx.array:
    """The kernel's contract with MLX ops: tokens [B, S, T] -> [B, T, D] in the tables' dtype."""
    out = None
    for s in order:
        tok = tokens[:, s]  # [B, T]
        e = mx.where((tok == -1)[..., None], mx.zeros((1,), tables[s].dtype), tables[s][mx.maximum(tok, 0)])
        out = e if out is None else out + e
    assert out is not None
    return out


def embed_sum(tables: list[mx.array], tokens: mx.array, order: tuple[int, ...]) -> mx.array:
    """tokens [B, S, T] int -> the sum over streams (in `order`) of tables[s][tokens[:, s]], [B, T, D]."""
    b, s, t = tokens.shape
    d = tables[0].shape[1]
    kernel = _kernel(s, d, order)
    (out,) = kernel(
        inputs=[mx.contiguous(tokens.astype(mx.int32)), *tables],
        template=[("T", tables[0].dtype), ("B", b), ("TT", t)],
        grid=(-(-(b * t * d // 8) // THREADS) * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(b, t, d)],
        output_dtypes=[tables[0].dtype],
    )
    return out


def _source(streams: int, d: int, order: tuple[int, ...]) -> str:
    """The kernel body: the streams, width and summation order as constants, then `device/embed_sum.cu`."""
    tables = ", ".join(f"t{s}" for s in range(streams))
    return (
        f"  constexpr int S = {streams};\n  constexpr int D = {d};\n"
        f"  constexpr int ORDER[S] = {{{', '.join(map(str, order))}}};\n"
        f"  const T* const tables[S] = {{{tables}}};\n" + _BODY
    )


@cache
def _kernel(streams: int, d: int, order: tuple[int, ...]) -> Any:
    source = _source(streams, d, order)
    return build_kernel("embed", ["tokens", *(f"t{s}" for s in range(streams))], ["out"], source)
