"""Fused transformer-block products for the per-frame decode on CUDA: fewer kernel launches.

On an H100 the batch-1 `Engine.step` is bound by the host, not the GPU: a frame launched ~2,070
kernels while the GPU was busy 9.5 ms of 17.7 (bench/RESULTS.md). With these kernels it launches
~1,520 and takes 14.8-15.2 ms (bf16) / 13.7-14.7 ms (q4), 0.3-1.3 ms less than the MLX ops in the
same leases: fewer than the launch count alone predicted. A transformer block at one position is, per layer:
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

Where the kernel does not apply (`use_kernel` false, i.e. `Kernels.fused` off or not CUDA, more
than MAX_ROWS rows, a layout it does not cover), each function is exactly the MLX ops it replaces,
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

from rolekit.nn.cuda import source_tag
from rolekit.nn.mlp import silu_gate
from rolekit.nn.multilinear import MultiLinear, QuantizedMultiLinear
from rolekit.nn.norm import RMSNorm
from rolekit.nn.qmv import _HEADER as _LOAD_HEADER

MAX_ROWS = 4  # activation rows (batch x positions) the kernels take; more go to MLX's GEMM path
_THREADS = 256  # 8 warps = 8 output rows per block

# Device functions shared with every kernel that does a few-row matrix-vector product (here and
# `lm.depformer_cuda`): the block-wide RMSNorm of the staged rows, one warp's dot products over
# one output row (two when GATE; dense or affine-quantized weights), and the warp sum.
DOT_HEADER = (
    _LOAD_HEADER
    + """
// A stage input in shared memory may be stored SWIZZLED: within each aligned block of 32 floats,
// float4 j of block n sits at float4 j ^ (n & 7). A warp lane that reads the 32 consecutive values
// of its 16-byte weight chunk then reads its 8 float4s without bank conflicts (8 consecutive lanes
// hit 8 different bank quads). Sums over a whole aligned block do not depend on the order.
__device__ inline int swz4(int i) { return i ^ ((i >> 3) & 7); }     // float4 index
__device__ inline int swz(int e) { return e ^ (((e >> 5) & 7) << 2); } // float index

template <int B, int K, int NT, bool SWZ = false, typename G>
__device__ inline void block_rms_norm(float* xs, const G* g, float eps) {  // SWZ: xs swizzled (swz)
  // xs [B, K] fp32 in shared memory, normalized in place (the caller synchronized after staging)
  constexpr int NW = NT / 32;
  __shared__ float part[B][NW];
  __shared__ float inv[B];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int b = 0; b < B; ++b) {
    float s = 0.f;
    for (int k = threadIdx.x; k < K; k += NT) s = fmaf(xs[b * K + k], xs[b * K + k], s);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) part[b][warp] = s;
  }
  __syncthreads();
  if (threadIdx.x < B) {
    float s = 0.f;
    for (int i = 0; i < NW; ++i) s += part[threadIdx.x][i];
    inv[threadIdx.x] = rsqrtf(s / static_cast<float>(K) + eps);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < B * K; i += NT) xs[i] *= inv[i / K] * static_cast<float>(g[(SWZ ? swz(i) : i) % K]);
  __syncthreads();
}

template <int B, int K, int NT, typename G, typename E>
__device__ inline void block_layer_norm(float* xs, const G* g, const E* beta, float eps) {
  // LayerNorm of xs [B, K] in place: (x - mean) / sqrt(var + eps) * g + beta (biased variance)
  constexpr int NW = NT / 32;
  __shared__ float part[2][B][NW];
  __shared__ float stat[2][B];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      float s = 0.f;
      for (int k = threadIdx.x; k < K; k += NT) {
        const float d = pass == 0 ? xs[b * K + k] : xs[b * K + k] - stat[0][b];
        s = pass == 0 ? s + d : fmaf(d, d, s);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) part[pass][b][warp] = s;
    }
    __syncthreads();
    if (threadIdx.x < B) {
      float s = 0.f;
      for (int i = 0; i < NW; ++i) s += part[pass][threadIdx.x][i];
      stat[pass][threadIdx.x] = pass == 0 ? s / static_cast<float>(K) : rsqrtf(s / static_cast<float>(K) + eps);
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < B * K; i += NT) {
    const int b = i / K, k = i % K;
    xs[i] = (xs[i] - stat[0][b]) * stat[1][b] * static_cast<float>(g[k]) + static_cast<float>(beta[k]);
  }
  __syncthreads();
}

template <int K, int B, bool GATE, typename W>
__device__ inline void dot_dense(
    const W* wr, const W* wr2, const float* xs, int lane, float (&acc)[B], float (&acc2)[B]) {
  // 8 weights (one 16-byte load for 16-bit types) per chunk, U chunks in flight per lane
  constexpr int CH = K / 8;
  constexpr int U = 4;
  for (int c0 = 0; c0 < CH; c0 += 32 * U) {
    float wv[U][8];
    float wv2[U][8];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * 32 + lane;
      if (c < CH) {
        load8s(wr + c * 8, wv[u]);
        if constexpr (GATE) load8s(wr2 + c * 8, wv2[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * 32 + lane;
      if (c < CH) {
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const float4* xr = reinterpret_cast<const float4*>(xs + b * K + c * 8);
          const float4 xa = xr[0], xb = xr[1];
          const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            acc[b] = fmaf(wv[u][t], xv[t], acc[b]);
            if constexpr (GATE) acc2[b] = fmaf(wv2[u][t], xv[t], acc2[b]);
          }
        }
      }
    }
  }
}

template <int BITS>
__device__ inline void quant_values(uint32_t w, float (&v)[32 / BITS]) {
  // v[e] = the e-th BITS-bit field q of w (little end first) as an exact float, without int-to-float
  // conversions (16 per clock and SM on Hopper, against 128 FFMA). A field at bit offset p < 16 of
  // a 16-bit half, under the exponent of 2^(23 - p) (biased 150 - p), is the float
  // 2^(23 - p) * (1 + q * 2^p / 2^23) = 2^(23 - p) + q, and subtracting 2^(23 - p) leaves q (exact:
  // q < 2^BITS <= 2^(23 - p)). The half is OR'ed once with EXPS, the union of those exponent fields
  // (bits 23-30; 150, 146, 142, 138 for q4, 150, 142 for q8), and one AND per value keeps the
  // field and its exponent: one LOP3 and one FADD per value, both with an immediate, plus two
  // instructions per word (w | EXPS, and (w >> 16) | EXPS as one LEA.HI on sm_90).
  constexpr int PER_HALF = 16 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  constexpr uint32_t EXPS = 0x4F000000u;  // biased exponent 158 = 0b10011110
  const uint32_t half[2] = {w | EXPS, (w >> 16) | EXPS};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < PER_HALF; ++j) {
      const uint32_t e = (150u - BITS * j) << 23;  // 2^(23 - p), p = BITS * j
      v[h * PER_HALF + j] = __uint_as_float(half[h] & (e | (MASK << (BITS * j)))) - __uint_as_float(e);
    }
  }
}

template <int K, int B, bool GATE, int BITS, int GS, typename S, int UQ = 8>  // UQ: words in flight per lane
__device__ inline void dot_quant(
    const uint32_t* wr, const uint32_t* wr2, const S* s1, const S* b1, const S* s2, const S* b2,
    const float* xs, int lane, float (&acc)[B], float (&acc2)[B]) {
  // MLX affine layout: row of K * BITS / 32 words, scales/biases [K / GS] per row, w = s * q + b.
  // One 32-bit word (8 q4 or 4 q8 values) per lane and load: consecutive lanes read consecutive
  // words (coalesced) and consecutive activations (float4 reads of shared memory, 2-way at most).
  // The values q are built once per word by `quant_values` (mantissa bits, no int-to-float
  // conversion), then each row b takes s * sum(q x) + b * sum(x) over the word: one FFMA per value
  // and a pairwise input sum (PER_WORD - 1 FADD). (Byte permutes with input sums precomputed in
  // shared memory, an earlier variant, measured slower on an H100 than int-to-float conversions.)
  constexpr int PER_WORD = 32 / BITS;
  constexpr int KW = K / PER_WORD;
  constexpr bool FULL = KW % (32 * UQ) == 0;  // no partial chunk: no bounds test (freer scheduling)
  for (int c0 = 0; c0 < KW; c0 += 32 * UQ) {
    uint32_t q[UQ];
    uint32_t q2[UQ];
#pragma unroll
    for (int u = 0; u < UQ; ++u) {
      const int c = c0 + u * 32 + lane;
      if (FULL || c < KW) {
        q[u] = __ldcs(wr + c);  // streamed: read once a frame, first out of L2
        if constexpr (GATE) q2[u] = __ldcs(wr2 + c);
      }
    }
#pragma unroll
    for (int u = 0; u < UQ; ++u) {
      const int c = c0 + u * 32 + lane;
      if (FULL || c < KW) {
        const int gi = (c * PER_WORD) / GS;
        const float sc = static_cast<float>(__ldcs(s1 + gi));
        const float bi = static_cast<float>(__ldcs(b1 + gi));
        float sc2 = 0.f, bi2 = 0.f;
        float qv[PER_WORD];
        float qv2[PER_WORD];
        quant_values<BITS>(q[u], qv);
        if constexpr (GATE) {
          sc2 = static_cast<float>(__ldcs(s2 + gi));
          bi2 = static_cast<float>(__ldcs(b2 + gi));
          quant_values<BITS>(q2[u], qv2);
        }
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const float4* xr = reinterpret_cast<const float4*>(xs + b * K + c * PER_WORD);
          float xv[PER_WORD];
#pragma unroll
          for (int j = 0; j < PER_WORD / 4; ++j) {
            const float4 f = xr[j];
            xv[4 * j] = f.x; xv[4 * j + 1] = f.y; xv[4 * j + 2] = f.z; xv[4 * j + 3] = f.w;
          }
          float qx = qv[0] * xv[0];
          float qx2 = 0.f;
          if constexpr (GATE) qx2 = qv2[0] * xv[0];
#pragma unroll
          for (int e = 1; e < PER_WORD; ++e) {
            qx = fmaf(qv[e], xv[e], qx);
            if constexpr (GATE) qx2 = fmaf(qv2[e], xv[e], qx2);
          }
          float xsum = (xv[0] + xv[1]) + (xv[2] + xv[3]);
          if constexpr (PER_WORD == 8) xsum += (xv[4] + xv[5]) + (xv[6] + xv[7]);
          acc[b] = fmaf(sc, qx, fmaf(bi, xsum, acc[b]));
          if constexpr (GATE) acc2[b] = fmaf(sc2, qx2, fmaf(bi2, xsum, acc2[b]));
        }
      }
    }
  }
}

template <int B, bool GATE>
__device__ inline void warp_sum(float (&acc)[B], float (&acc2)[B]) {
#pragma unroll
  for (int b = 0; b < B; ++b) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
      if constexpr (GATE) acc2[b] += __shfl_xor_sync(0xffffffffu, acc2[b], o);
    }
  }
}
"""
)

# Kernel constants: T activation dtype, B rows, N output rows (per half when GATE), K inputs, BITS
# 0 (dense) / 4 / 8, GS group size, GATE; EPS and NT are written into the source.
# The source is assembled per variant (`_source`): a kernel body is not a template, so a branch
# naming an input the variant lacks would not compile even under `if constexpr`.
_PROLOGUE = """
  constexpr int NW = NT / 32;
  extern __shared__ float xs[];  // [B, K] input rows as fp32 (normalized when NORM)
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int i = threadIdx.x; i < B * K; i += NT) xs[i] = static_cast<float>(x[i]);
  __syncthreads();
"""

_NORM = """
  block_rms_norm<B, K, NT>(xs, g, EPS);
"""

_LAYER_NORM = """
  block_layer_norm<B, K, NT>(xs, g, beta, EPS);
"""

_ROWS = """
  const int row = blockIdx.x * NW + warp;
  if (row >= N) return;
  float acc[B];
  float acc2[B];
#pragma unroll
  for (int b = 0; b < B; ++b) { acc[b] = 0.f; acc2[b] = 0.f; }
"""

_DENSE = """
  dot_dense<K, B, GATE>(w + (size_t)row * K, w + (size_t)((GATE ? N : 0) + row) * K, xs, lane, acc, acc2);
"""

_QUANT = """
  {
    constexpr int KW = K * BITS / 32;
    constexpr int NG = K / GS;
    const size_t r1 = (size_t)row;
    const size_t r2 = (size_t)((GATE ? N : 0) + row);
    dot_quant<K, B, GATE, BITS, GS>(w + r1 * KW, w + r2 * KW, scales + r1 * NG, biases + r1 * NG,
                                    scales + r2 * NG, biases + r2 * NG, xs, lane, acc, acc2);
  }
"""

_EPILOGUE = """
  warp_sum<B, GATE>(acc, acc2);
  if (lane == 0) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      float v = acc[b];
      if constexpr (GATE) v = v / (1.f + expf(-v)) * acc2[b];
      %(epilogue)s
      y[(size_t)b * N + row] = static_cast<T>(v);
    }
  }
"""


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
    head = f"  constexpr float EPS = {float(eps)!r}f;\n  constexpr int NT = {_THREADS};\n"
    epilogue = []
    if gelu:
        epilogue.append("v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));")
    if scale:
        epilogue.append("v *= static_cast<float>(ls[row]);")
    if residual:
        epilogue.append("v += static_cast<float>(r[(size_t)b * N + row]);")
    prologue = _LAYER_NORM if norm == "layer" else (_NORM if norm else "")
    return (
        head
        + _PROLOGUE
        + prologue
        + _ROWS
        + (_QUANT if quantized else _DENSE)
        + _EPILOGUE % {"epilogue": "\n      ".join(epilogue)}
    )


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
    return mx.fast.cuda_kernel(
        # MLX caches a compiled kernel by its name and template values: the variant's source
        # (norm, residual, eps) must be in the name, or two variants of one shape would collide.
        name=f"rolekit_fused_linear_{source_tag(source)}",
        input_names=list(names),
        output_names=["y"],
        source=source,
        header=DOT_HEADER,
        ensure_row_contiguous=True,
        shared_memory=smem,
    )


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


def _call(lin: nn.Module, x: mx.array, step: int | None) -> mx.array:
    return lin(x) if step is None else lin(x, step)


def _plan(x: mx.array, lin: nn.Module, step: int | None, use_kernel: bool) -> Weights | None:
    """The kernel's weights where it serves this call (`use_kernel`: the caller's `Kernels.fused`)."""
    if not use_kernel:
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
    use_kernel: bool = False,
) -> mx.array:
    """lin(norm(x)), then exact GELU when `gelu`; `step` selects a multi-linear's weight set.
    `use_kernel` (`Kernels.fused`, CUDA only): one kernel where the layout is covered."""
    wt = _plan(x, lin, step, use_kernel)
    if wt is None or (isinstance(norm, nn.LayerNorm) and "bias" not in norm):
        y = _call(lin, norm(x), step)
        return nn.gelu(y) if gelu else y
    return fused(x, wt, norm=norm, gelu=gelu)


def norm_gated(x: mx.array, norm: RMSNorm, linear_in: nn.Module, use_kernel: bool = False) -> mx.array:
    """silu(a) * b with [a | b] = linear_in(norm(x)) split in halves (Kyutai ActivationGating)."""
    wt = _plan(x, linear_in, None, use_kernel)
    if wt is None or wt.rows % 2:
        return silu_gate(linear_in(norm(x)))
    half = Weights(wt.w, wt.scales, wt.biases, wt.bits, wt.group, wt.row0, wt.rows // 2)
    return fused(x, half, norm=norm, gate=True)


def linear_residual(
    x: mx.array,
    lin: nn.Module,
    residual: mx.array,
    step: int | None = None,
    scale: mx.array | None = None,
    use_kernel: bool = False,
) -> mx.array:
    """residual + lin(x), the product times `scale` [N] first when given (a layer scale)."""
    wt = _plan(x, lin, step, use_kernel)
    if wt is None or residual.dtype != x.dtype or residual.size != x.size // x.shape[-1] * wt.rows:
        y = _call(lin, x, step)
        return residual + (y if scale is None else y * scale)
    return fused(x, wt, residual=residual, scale=scale)
