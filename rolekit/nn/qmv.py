"""Quantized matrix-vector products for few-row activations on CUDA (the per-frame decode case).

At batch 1..16 every 80 ms frame reads all linear weights once, so the step is bound by weight
bandwidth. One hand-written kernel (through `mx.fast.cuda_kernel`, compiled by NVRTC on first use)
for MLX's affine layout: weight uint32 [N, K * bits / 32] (value j of a row sits in word
j * bits / 32, lowest bits first), scales and biases [N, K / group] in the activation dtype,
w = scale * q + bias. One warp per output row: each lane loads whole 16-byte chunks of packed
weight (all of its loads issued before any arithmetic), multiplies them with the matching
activations of every batch row, and the warp reduces.

Opt-in (`Kernels.qmv`, off by default: the whole q4 step was measured slower with it, see
bench/RESULTS.md): `adopt(model)` routes a model's affine quantized linears through `qmatmul`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn

# Activation rows routed to the kernel by `qmatmul` (with `use_kernel`). At 16 rows it is 3-20x slower
# than MLX's (each warp re-reads all rows' activations), so batches go to MLX. `qmv` takes up to 16.
MAX_ROWS = 1
KERNEL_ROWS = 16

_HEADER = """
// 8 activations or weights of a 16-byte chunk (32 bytes for float) as floats: `load8`, and `load8s`
// for weights, a streaming load (ld.global.cs: evict first from L1 and L2), so that a frame's single
// pass over gigabytes of weights does not push the kernels' code, activations and caches out of L2
__device__ inline void widen8(const uint4& v, const __nv_bfloat16*, float* o) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    o[2 * i] = f.x;
    o[2 * i + 1] = f.y;
  }
}
__device__ inline void widen8(const uint4& v, const __half*, float* o) {
  const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    o[2 * i] = f.x;
    o[2 * i + 1] = f.y;
  }
}
__device__ inline void widen8(const float4& a, const float4& b, float* o) {
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
  o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}
template <typename T>
__device__ inline void load8(const T* p, float* o) {
  widen8(*reinterpret_cast<const uint4*>(p), p, o);
}
__device__ inline void load8(const float* p, float* o) {
  widen8(reinterpret_cast<const float4*>(p)[0], reinterpret_cast<const float4*>(p)[1], o);
}
template <typename T>
__device__ inline void load8s(const T* p, float* o) {
  widen8(__ldcs(reinterpret_cast<const uint4*>(p)), p, o);
}
__device__ inline void load8s(const float* p, float* o) {
  widen8(__ldcs(reinterpret_cast<const float4*>(p)), __ldcs(reinterpret_cast<const float4*>(p) + 1), o);
}
"""

# Template constants: T (activation dtype), B (rows), N (out), K (in), GS (group), BITS (4 or 8).
_SOURCE = """
  constexpr int EPC = 128 / BITS;          // values per 16-byte chunk of packed weight
  constexpr int PER_WORD = 32 / BITS;
  constexpr int CH = K / EPC;              // chunks per weight row
  constexpr int ITERS = (CH + 31) / 32;    // chunks per lane
  constexpr unsigned MASK = (1u << BITS) - 1u;
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;  // whole warps only: blockDim is a multiple of 32
  const uint4* wr = reinterpret_cast<const uint4*>(w) + (size_t)row * CH;
  const T* sr = scales + (size_t)row * (K / GS);
  const T* br = biases + (size_t)row * (K / GS);
  uint4 q[ITERS];
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = it * 32 + lane;
    if (c < CH) q[it] = wr[c];
  }
  float acc[B];
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = 0.f;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = it * 32 + lane;
    if (c < CH) {
      const int g = (c * EPC) / GS;
      const float sc = static_cast<float>(sr[g]);
      const float bb = static_cast<float>(br[g]);
      const unsigned wd[4] = {q[it].x, q[it].y, q[it].z, q[it].w};
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const T* xr = x + (size_t)b * K + (size_t)c * EPC;
        float qx = 0.f, xs = 0.f;
#pragma unroll
        for (int j = 0; j < EPC / 8; ++j) {
          float xv[8];
          load8(xr + 8 * j, xv);
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            const int e = 8 * j + t;
            const unsigned v = (wd[e / PER_WORD] >> ((e % PER_WORD) * BITS)) & MASK;
            qx = fmaf(static_cast<float>(v), xv[t], qx);
            xs += xv[t];
          }
        }
        acc[b] = fmaf(sc, qx, fmaf(bb, xs, acc[b]));
      }
    }
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
    float v = acc[b];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) y[(size_t)b * N + row] = static_cast<T>(v);
  }
"""

_THREADS = 256


@lru_cache(maxsize=1)
def _kernel() -> Any:
    return mx.fast.cuda_kernel(
        name="rolekit_qmv",
        input_names=["x", "w", "scales", "biases"],
        output_names=["y"],
        source=_SOURCE,
        header=_HEADER,
        ensure_row_contiguous=True,
    )


def kernel_applies(rows: int, k: int, group_size: int, bits: int, dtype: mx.Dtype) -> bool:
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


def qmatmul(
    x: mx.array,
    w: mx.array,
    scales: mx.array,
    biases: mx.array,
    group_size: int = 64,
    bits: int = 4,
    use_kernel: bool = False,
) -> mx.array:
    """`mx.quantized_matmul(x, w, scales, biases, transpose=True, ...)`; with `use_kernel` (CUDA
    only) through the few-row kernel where it covers the shapes."""
    k = x.shape[-1]
    if use_kernel and kernel_applies(x.size // k, k, group_size, bits, x.dtype):
        return qmv(x, w, scales, biases, group_size, bits)
    return mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=group_size, bits=bits)


class QuantizedLinear(nn.QuantizedLinear):
    """MLX's affine QuantizedLinear whose few-row products go through the kernel (`qmatmul`)."""

    def __call__(self, x: mx.array) -> mx.array:
        if getattr(self, "mode", "affine") != "affine":
            return super().__call__(x)
        y = qmatmul(x, self["weight"], self["scales"], self["biases"], self.group_size, self.bits, True)
        return y + self["bias"] if "bias" in self else y


def adopt(model: nn.Module) -> int:
    """Route every affine nn.QuantizedLinear of `model` through the kernel; returns how many.

    An explicit, one-way change of `model` made by its owner (`Engine` when `Kernels.qmv`; CUDA
    only): the instances keep their parameters, only their class becomes the subclass above (no
    new state, so the object layout is the same). Loading never calls it."""
    n = 0
    for _, m in model.named_modules():
        if type(m) is nn.QuantizedLinear and getattr(m, "mode", "affine") == "affine":
            m.__class__ = QuantizedLinear
            n += 1
    return n
