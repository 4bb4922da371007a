"""Affine q4 products of a batch of rows on tensor cores (CUDA): `x @ dequantize(w).T`.

From 5 to 64 activation rows (batched conversations: the temporal and depformer linears at batch
5..64, where `nn.fused` and the temporal kernel stop) MLX's `quantized_matmul` reads each weight
row once per few rows. This kernel reads every weight once per step, dequantizes it in registers
to bf16 and multiplies it with up to 16 rows per `mma.sync.m16n8k16` (fp32 sums; more rows loop
over 16-row tiles of the same weights), so the product stays bound by the 4-bit weights' bandwidth.

Contract (`qmm`): x [..., K] bf16 with R = prod(leading) rows, 1 <= R <= MAX_ROWS; w uint32 [N, K /
8] in MLX's affine layout (value j of a row in word j / 8, lowest bits first), scales and biases
[N, K / group] (any float type: cast to x's here, as `nn.qmv` does: the body reads them as T),
w = scale * q + bias; N a multiple of
128, K of 128, group 32 / 64 / 128 -> [..., N] bf16. The k range is split over blocks so a product
has about 2 blocks per SM where its partial sums stay small (`splits`); they are added by MLX in
fp32 (a fixed order: deterministic). Each lane loads its next chunk's weights before it multiplies
the current one. The row count is a template value: one compile per batch size. Where `covers` is
false the caller uses `reference` (MLX's own product). `covers` hands it MIN_ROWS..MAX_ROWS rows
(1 to 4 tiles, each tile count checked against the dense product on an H100: `tests/nn/test_qmm.py`).
The device code: `device/qmm.cu` (body) after `device/qmm_mma.cuh` (bf16 pairs, the mma).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import mlx.core as mx

from rolekit.nn.cuda import build_kernel
from rolekit.nn.cuda_text import device_code

MIN_ROWS = 5  # fewer rows: `nn.fused` / the temporal kernel (one warp per row) serve them
MAX_ROWS = 64  # 4 tiles of 16 rows (each tile re-dequantizes the chunk: registers, not shared memory)
COLS = 128  # output columns per block (4 warps x 4 tiles of 8)
CHUNK = 128  # k values per chunk (4 lanes x 32)
TARGET_BLOCKS = 264  # split k until a product has about 2 blocks per SM of an H100 (132 SMs)

_HEADER = device_code("rolekit.nn", "qmm_mma.cuh")
_SOURCE = device_code("rolekit.nn", "qmm.cu")


@lru_cache(maxsize=1)
def _kernel() -> Any:
    return build_kernel("qmm", ["x", "w", "scales", "biases"], ["part"], _SOURCE, header=_HEADER)


def covers(rows: int, n: int, k: int, group_size: int, bits: int, dtype: mx.Dtype) -> bool:
    """Shapes and dtypes the dispatcher (`nn.fused`) hands the kernel (rows = activation rows)."""
    return (
        MIN_ROWS <= rows <= MAX_ROWS
        and bits == 4
        and group_size in (32, 64, 128)
        and n % COLS == 0
        and k % CHUNK == 0
        and dtype == mx.bfloat16
    )


def splits(n: int, k: int, tiles: int = 1) -> int:
    """How many k ranges a product of [N, K] over `tiles` 16-row tiles is cut into: the fewest that
    give TARGET_BLOCKS blocks, each range a whole number of chunks, and at most as many as keep
    the fp32 partial sums (s x tiles x 16 x N x 4 bytes) within a quarter of the 4-bit weights."""
    chunks = k // CHUNK
    blocks = n // COLS
    cap = max(1, k // (512 * tiles))
    best = 1
    for s in range(1, min(chunks, cap) + 1):
        if chunks % s == 0:
            best = s
            if blocks * s >= TARGET_BLOCKS:
                break
    return best


def qmm(
    x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, group_size: int, split: bool = True
) -> mx.array:
    """x [..., K] -> x @ dequantize(w).T [..., N] (the module docstring's contract); CUDA only.
    `split` False: the whole k range in each block (one launch, no partial sums to add)."""
    k = x.shape[-1]
    n = w.shape[0]
    rows = x.size // k
    tiles = -(-rows // 16)
    s = splits(n, k, tiles) if split else 1
    (part,) = _kernel()(
        inputs=[x.reshape(rows, k), w, scales.astype(x.dtype), biases.astype(x.dtype)],
        template=[
            ("T", x.dtype),
            ("M", rows),
            ("MT", tiles),
            ("N", n),
            ("K", k),
            ("GS", group_size),
            ("KS", k // s),
        ],
        grid=(n // COLS * 128, s, 1),
        threadgroup=(128, 1, 1),
        output_shapes=[(s, tiles * 16, n)],
        output_dtypes=[mx.float32],
    )
    y = part[0, :rows] if s == 1 else part[:, :rows].sum(axis=0)
    return y.astype(x.dtype).reshape(*x.shape[:-1], n)


def reference(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, group_size: int) -> mx.array:
    """What `qmm` computes, as MLX ops (any device)."""
    return mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=group_size, bits=4)
