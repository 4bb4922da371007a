"""Device code and weight stacking shared by rolekit's persistent ("one kernel per frame") CUDA kernels.

A persistent kernel launches one block per SM (so that every block is resident) and runs a whole
sequence of stages, waiting for all blocks between two stages on a counter in global memory (a grid
barrier). Its matrix-vector stages read weights where they are: `stack_linears` concatenates one
weight family of several modules (the depformer's steps, the temporal transformer's layers) into one
array once and points each module at its rows of it, so the kernel takes one pointer per family and
the op path keeps reading the same numbers.

GRID_HEADER (after `nn.fused.DOT_HEADER`): `grid_sync`, `stage` (a block's copy of a stage input,
RMS-normalized in place on request), `rows_dense` / `rows_quant` (one warp per output row, an
epilogue functor per value; `_pairs`: two rows per warp at a time), `prefetch_l2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn


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


def stack_norms(norms: list[nn.Module]) -> mx.array:
    """[n, D] weights of RMSNorm modules stacked once; each module then holds a view of its row."""
    w = mx.stack([m.weight for m in norms])
    mx.eval(w)
    for i, m in enumerate(norms):
        m.weight = w[i]
    return w


CONTROL = 64  # floats at the start of a persistent kernel's scratch: barrier counter [0], timeout flag [1]


def timed_out(scratch: mx.array) -> bool:
    """True when a grid barrier gave up waiting (blocks not all resident): the results are void."""
    return bool(scratch[1].item() != 0)


def shared_memory(dynamic: int, static_bound: int) -> int:
    """Dynamic shared memory to ask MLX for: past 48 KB in all (dynamic + the kernel's static
    shared memory), MLX must raise the block's limit, which it does for a request over 48000 bytes."""
    return 48004 if dynamic <= 48000 < dynamic + static_bound else dynamic


def mat_ok(m: Mat) -> bool:
    """A family the kernels read: a float dense matrix, or MLX affine q4/q8 of group 32/64/128."""
    if m.bits == 0:
        return m.w.dtype in (mx.bfloat16, mx.float16, mx.float32)
    return m.bits in (4, 8) and m.group in (32, 64, 128) and m.w.dtype == mx.uint32


GRID_HEADER = r"""
__device__ inline void grid_sync(unsigned int* bar, unsigned int& epoch) {
  // All blocks are resident (one per SM): each arrives once per barrier on a monotonic counter.
  // A waiter that sees no progress for ~2 s sets the timeout flag and stops waiting for good.
  __syncthreads();
  epoch += gridDim.x;
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(bar, 1u);
    volatile unsigned int* vb = bar;
    if (vb[1] == 0u) {
      const long long t0 = clock64();
      while (vb[0] < epoch) {
        if (clock64() - t0 > 4000000000LL) { atomicExch(bar + 1, 1u); break; }
      }
    }
    __threadfence();
  }
  __syncthreads();
}

template <int K, int B, int NT, bool NORM, typename G>
__device__ inline void stage(float* xs, const float* src, const G* g, float eps) {
  // this block's copy of the stage input [B, K] (written by other blocks: read through L2), 16
  // bytes a load and up to 8 loads in flight per thread (one at a time waited ~1 us of L2 latency
  // per 256 floats of a block)
  static_assert((B * K) % 4 == 0, "float4 staging");
  constexpr int N4 = B * K / 4;
  constexpr int PER = (N4 + NT - 1) / NT;
  constexpr int UB = PER < 8 ? PER : 8;
  const float4* s4 = reinterpret_cast<const float4*>(src);
  float4* x4 = reinterpret_cast<float4*>(xs);
  __syncthreads();
  for (int i0 = threadIdx.x; i0 < N4; i0 += NT * UB) {
    float4 v[UB];
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      if (i0 + u * NT < N4) v[u] = __ldcg(s4 + i0 + u * NT);
    }
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      if (i0 + u * NT < N4) x4[i0 + u * NT] = v[u];
    }
  }
  __syncthreads();
  if constexpr (NORM) block_rms_norm<B, K, NT>(xs, g, eps);
}

template <int B, bool GATE, typename E>
__device__ inline void finish_row(float (&acc)[B], float (&acc2)[B], int lane, int row, E epi) {
  // sum the warp's partial products; lane 0 gates (silu(a) * b) and hands each value to `epi`
  warp_sum<B, GATE>(acc, acc2);
  if (lane == 0) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      float v = acc[b];
      if constexpr (GATE) v = v / (1.f + expf(-v)) * acc2[b];
      epi(b, row, v);
    }
  }
}

template <int N, int K, int B, bool GATE, int NT, typename W, typename E>
__device__ inline void rows_dense(const W* w, size_t row0, const float* xs, E epi) {
  constexpr int NW = NT / 32;
  const int lane = threadIdx.x & 31;
  for (int row = blockIdx.x * NW + (threadIdx.x >> 5); row < N; row += gridDim.x * NW) {
    float acc[B], acc2[B];
#pragma unroll
    for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
    dot_dense<K, B, GATE>(w + (row0 + row) * K, w + (row0 + (GATE ? N : 0) + row) * K, xs, lane, acc, acc2);
    finish_row<B, GATE>(acc, acc2, lane, row, epi);
  }
}

template <int N, int K, int B, bool GATE, int NT, int BITS, int GS, int UQ, typename S, typename E>
__device__ inline void rows_quant(
    const uint32_t* w, const S* sc, const S* bi, size_t row0, const float* xs, E epi) {
  constexpr int NW = NT / 32;
  constexpr int KW = K * BITS / 32;
  constexpr int NG = K / GS;
  const int lane = threadIdx.x & 31;
  for (int row = blockIdx.x * NW + (threadIdx.x >> 5); row < N; row += gridDim.x * NW) {
    float acc[B], acc2[B];
#pragma unroll
    for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
    const size_t r1 = row0 + row, r2 = row0 + (GATE ? N : 0) + row;
    dot_quant<K, B, GATE, BITS, GS, S, UQ>(w + r1 * KW, w + r2 * KW, sc + r1 * NG, bi + r1 * NG, sc + r2 * NG,
                                    bi + r2 * NG, xs, lane, acc, acc2);
    finish_row<B, GATE>(acc, acc2, lane, row, epi);
  }
}

template <int N, int K, int B, int NT, typename W, typename E>
__device__ inline void rows_dense_pairs(const W* w, size_t row0, const float* xs, E epi) {
  // rows_dense with two output rows per warp at a time (row and row + N / 2): twice the bytes in
  // flight per warp
  static_assert(N % 2 == 0, "pairs");
  constexpr int NW = NT / 32;
  constexpr int H2 = N / 2;
  const int lane = threadIdx.x & 31;
  for (int row = blockIdx.x * NW + (threadIdx.x >> 5); row < H2; row += gridDim.x * NW) {
    float acc[B], acc2[B];
#pragma unroll
    for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
    dot_dense<K, B, true>(w + (row0 + row) * K, w + (row0 + H2 + row) * K, xs, lane, acc, acc2);
    warp_sum<B, true>(acc, acc2);
    if (lane == 0) {
#pragma unroll
      for (int b = 0; b < B; ++b) { epi(b, row, acc[b]); epi(b, row + H2, acc2[b]); }
    }
  }
}

template <int N, int K, int B, int NT, int BITS, int GS, int UQ, typename S, typename E>
__device__ inline void rows_quant_pairs(
    const uint32_t* w, const S* sc, const S* bi, size_t row0, const float* xs, E epi) {
  // rows_quant with two output rows per warp at a time (row and row + N / 2)
  static_assert(N % 2 == 0, "pairs");
  constexpr int NW = NT / 32;
  constexpr int KW = K * BITS / 32;
  constexpr int NG = K / GS;
  constexpr int H2 = N / 2;
  const int lane = threadIdx.x & 31;
  for (int row = blockIdx.x * NW + (threadIdx.x >> 5); row < H2; row += gridDim.x * NW) {
    float acc[B], acc2[B];
#pragma unroll
    for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
    const size_t r1 = row0 + row, r2 = row0 + H2 + row;
    dot_quant<K, B, true, BITS, GS, S, UQ>(w + r1 * KW, w + r2 * KW, sc + r1 * NG, bi + r1 * NG, sc + r2 * NG,
                                          bi + r2 * NG, xs, lane, acc, acc2);
    warp_sum<B, true>(acc, acc2);
    if (lane == 0) {
#pragma unroll
      for (int b = 0; b < B; ++b) { epi(b, row, acc[b]); epi(b, row + H2, acc2[b]); }
    }
  }
}

template <int NT>
__device__ inline void prefetch_l2(const void* base, size_t first, size_t bytes) {
  // ask L2 for bytes [first, first + bytes) of base, 128-byte lines spread over the grid's threads
  const char* p = static_cast<const char*>(base) + first;
  const size_t stride = (size_t)gridDim.x * NT * 128;
  for (size_t off = ((size_t)blockIdx.x * NT + threadIdx.x) * 128; off < bytes; off += stride)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
}

"""
