"""Device code and weight stacking shared by rolekit's persistent ("one kernel per frame") CUDA kernels.

A persistent kernel launches one block per SM (so that every block is resident) and runs a whole
sequence of stages, waiting for all blocks between two stages on a counter in global memory (a grid
barrier). Its matrix-vector stages read weights where they are: `stack_linears` concatenates one
weight family of several modules (the depformer's steps, the temporal transformer's layers) into one
array once and points each module at its rows of it, so the kernel takes one pointer per family and
the op path keeps reading the same numbers.

The device code is `device/grid.cuh`, part of the shared header set (`nn.cuda_text.shared_header`):
`grid_start` / `grid_sync` (the barrier on a 64-bit count that only grows, and its timeout flag),
`stamp` (block 0's global-timer values), `stage` (a block's copy of a stage input, RMS-normalized
in place on request, swizzled on request), `rows_dense` / `rows_quant` (one warp per output row,
an epilogue functor per value; `_pairs`: two rows per warp at a time), `rows_async` (q4 / q8 rows
streamed through a per-warp ring of cp.async slots in shared memory, against a swizzled input and
its `chunk_sums`), `prefetch_l2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from rolekit.nn.cuda import build_kernel


@dataclass(frozen=True)
class Mat:
    """One weight family of several modules, rows stacked: [modules * rows (x2 gated), K]."""

    w: mx.array
    scales: mx.array | None
    biases: mx.array | None
    bits: int  # 0: dense
    group: int


def stack_linears(mods: list[nn.Module]) -> Mat | None:
    """Stack per-step nn.Linear / affine nn.QuantizedLinear (no bias, one kind) into one Mat and
    point each module at its rows of it."""
    first = mods[0]
    if any("bias" in m for m in mods) or any(type(m) is not type(first) for m in mods):
        return None
    n = first.weight.shape[0]
    if isinstance(first, nn.QuantizedLinear):
        if any(getattr(m, "mode", "affine") != "affine" for m in mods):
            return None
        if any((m.bits, m.group_size) != (first.bits, first.group_size) for m in mods):
            return None
        parts = [mx.concatenate([m[name] for m in mods]) for name in ("weight", "scales", "biases")]
        mx.eval(parts)
        for i, m in enumerate(mods):
            for name, arr in zip(("weight", "scales", "biases"), parts, strict=True):
                m[name] = arr[i * n : (i + 1) * n]
        return Mat(parts[0], parts[1], parts[2], first.bits, first.group_size)
    if not isinstance(first, nn.Linear):
        return None
    w = mx.concatenate([m.weight for m in mods])
    mx.eval(w)
    for i, m in enumerate(mods):
        m.weight = w[i * n : (i + 1) * n]
    return Mat(w, None, None, 0, 0)


def family_inputs(
    families: list[tuple[str, Mat]],
) -> tuple[list[str], list[mx.array], tuple[tuple[str, int, int], ...]]:
    """A persistent kernel's inputs for weight families, in order: `name` (the rows), then
    `name_s` / `name_b` (scales, biases) when quantized; and the layout the kernel source is
    generated for, (name, bits, group) per family."""
    names: list[str] = []
    arrays: list[mx.array] = []
    for name, m in families:
        names.append(name)
        arrays.append(m.w)
        if m.bits:
            names += [f"{name}_s", f"{name}_b"]
            arrays += [m.scales, m.biases]
    return names, arrays, tuple((name, m.bits, m.group) for name, m in families)


def stack_norms(norms: list[nn.Module]) -> mx.array:
    """[n, D] weights of RMSNorm modules stacked once; each module then holds a view of its row."""
    w = mx.stack([m.weight for m in norms])
    mx.eval(w)
    for i, m in enumerate(norms):
        m.weight = w[i]
    return w


CONTROL = 64  # floats at the start of a persistent kernel's scratch: the grid barrier's count [0, 1], timeout flag [2]


def timed_out(scratch: mx.array) -> bool:
    """True when a grid barrier gave up waiting (blocks not all resident): the results are void."""
    return bool(scratch[2].item() != 0)


def shared_memory(dynamic: int, static_bound: int) -> int:
    """Dynamic shared memory to ask MLX for: past 48 KB in all (dynamic + the kernel's static
    shared memory), MLX must raise the block's limit, which it does for a request over 48000 bytes."""
    return 48004 if dynamic <= 48000 < dynamic + static_bound else dynamic


def mat_ok(m: Mat) -> bool:
    """A family the kernels read: a float dense matrix, or MLX affine q4/q8 of group 32/64/128."""
    if m.bits == 0:
        return m.w.dtype in (mx.bfloat16, mx.float16, mx.float32)
    return m.bits in (4, 8) and m.group in (32, 64, 128) and m.w.dtype == mx.uint32


@cache
def persistent_kernel(
    kind: str,
    names: tuple[str, ...],
    outputs: tuple[str, ...],
    source: str,
    header: str,
    threads: int,
    smem: int,
) -> Any:
    """The `nn.cuda.CudaKernel` of a persistent kernel (built once per distinct arguments): its own
    `header` after the shared header set, `threads` a block under launch bounds, `smem` bytes of
    dynamic shared memory."""
    return build_kernel(kind, names, outputs, source, header, threads=threads, shared_memory=smem)
