"""The depformer's whole frame as ONE CUDA kernel: its 8 (or 16) steps, sampling included.

Why: on an H100 the frame is bound by kernel launches (~7 us of host time each in MLX), and the
depformer launched ~50 of them per step (6 layers x 6, embedding, head, sampling), ~400 per frame
at 8 steps, for ~1 ms of GPU work. Measured (bench/RESULTS.md, lease I): the whole q4 engine step
went 13.2-13.3 -> 12.1 ms per frame; the kernel itself takes ~1.7 ms of GPU time at batch 1.

How: a persistent kernel, one block per SM (so every block is resident), runs the frame's stages
in order and waits for all blocks between two stages on a counter in global memory (a grid
barrier). For step s, with x the residual stream [B, Dd] in fp32:

    x = depformer_in[s] h + emb_s(token)                        (token: text, then codebook s-1)
    per layer: q | k | v = in_proj[s] rms1(x); k, v appended to the layer's step cache
               x += out_proj[s] a,  a = attention of q over steps 0..s (every block computes
                                        all of a into its shared memory: no barrier before)
               x += linear_out[s] (silu(u) * w),  u | w = linear_in[s] rms2(x)
    logits = linears[s] x;  token = given >= 0 ? given : sample(logits)

Every block samples every row itself (the same logits and noise give the same token), so the next
step starts without another barrier. Sampling is `lm.sampling.sample`'s rule: logits / T, the k
largest kept (the k-th value by radix select; ties kept), plus Gumbel noise that MLX draws from the
same per-row keys as the op path (the same random numbers), argmax (lowest index on ties); rows
with T <= 0 take the argmax of the logits. Inside, activations stay fp32 (the op path rounds them
to the activation dtype between ops), so tokens agree with the op path up to near-ties.

Weights are read where they are: `pack` stacks each weight family of the steps into one array
once and points the modules at views of it (no second copy; the op path reads the same numbers).
Where the kernel does not apply (`Kernels.depformer` off, not CUDA, batch > MAX_ROWS, a global
RNG, an unpacked model), `LM.depformer` runs the MLX ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from rolekit.lm.sampling import SamplingParams, Scalar, split_keys
from rolekit.nn.cuda import sm_count
from rolekit.nn.grid import CONTROL, Mat, mat_ok, persistent_kernel, shared_memory, stack_linears
from rolekit.nn.multilinear import MultiLinear, QuantizedMultiLinear

MAX_ROWS = 4
THREADS = 256  # per block: 8 warps (255 registers a thread still fit one block per SM)


_STATIC_SMEM = 12 * 1024  # upper bound of the kernel's static shared memory (sampling buffers)


@dataclass(frozen=True)
class Packed:
    dep_in: Mat
    head: Mat
    emb_text: mx.array  # [text_card + 1, Dd]
    emb_audio: mx.array  # [(dep_q - 1) * (card + 1), Dd]
    layers: tuple[tuple[mx.array, Mat, Mat, mx.array, Mat, Mat], ...]  # norm1, qkv, out, norm2, in, out
    eps: float


# ---- packing -------------------------------------------------------------------------------------


def _mat_of_multi(lin: nn.Module) -> Mat | None:
    if isinstance(lin, MultiLinear):
        return Mat(lin.weight, None, None, 0, 0)
    if isinstance(lin, QuantizedMultiLinear):
        return Mat(lin.weight, lin.scales, lin.biases, lin.bits, lin.group_size)
    return None


def _stack_embeddings(embs: list[nn.Embedding]) -> mx.array:
    n = embs[0].weight.shape[0]
    table = mx.concatenate([e.weight for e in embs])
    mx.eval(table)
    for i, e in enumerate(embs):
        e.weight = table[i * n : (i + 1) * n]
    return table


def pack(lm: Any) -> Packed | None:
    """Stack the depformer's per-step weights once and return the kernel's view of them; None
    (nothing changed) where the kernel cannot serve this model.

    Explicit side effect: the modules' weights are re-pointed at views of the stacks (no second
    copy), and the result is kept as `lm._dep_packed`, so packing again returns the same `Packed`.
    Weights assigned to the modules afterwards are not seen by the kernel: pack a fresh LM instead.
    Call outside of mx.compile (it evaluates)."""
    found = getattr(lm, "_dep_packed", None)
    if found is not None:
        return found
    cfg = lm.cfg
    if not _dims_ok(cfg) or any(isinstance(e, nn.QuantizedEmbedding) for e in lm.depformer_emb):
        return None
    if isinstance(lm.depformer_text_emb, nn.QuantizedEmbedding):
        return None
    dep_in = stack_linears(list(lm.depformer_in))
    head = stack_linears(list(lm.linears))
    layers = []
    for layer in lm["depformer"].layers:
        attn = layer.self_attn
        mats = (
            _mat_of_multi(attn.in_proj),
            _mat_of_multi(attn.out_proj),
            stack_linears([g.linear_in for g in layer.gating]),
            stack_linears([g.linear_out for g in layer.gating]),
        )
        if any(m is None for m in mats):
            return None
        layers.append((layer.norm1.weight, mats[0], mats[1], layer.norm2.weight, mats[2], mats[3]))
    if dep_in is None or head is None or not all(mat_ok(m) for m in (dep_in, head)):
        return None
    if not all(mat_ok(m) for lay in layers for m in (lay[1], lay[2], lay[4], lay[5])):
        return None
    packed = Packed(
        dep_in,
        head,
        lm.depformer_text_emb.weight,
        _stack_embeddings(list(lm.depformer_emb)),
        tuple(layers),
        float(lm["depformer"].layers[0].norm1.eps),
    )
    lm._dep_packed = packed
    return packed


def _dims_ok(cfg: Any) -> bool:
    dd, f, d = cfg.depformer_dim, cfg.depformer_hidden, cfg.dim
    hd = dd // cfg.depformer_num_heads
    return dd % cfg.depformer_num_heads == 0 and hd % 32 == 0 and all(k % 64 == 0 for k in (dd, f, d))


# ---- when it applies -----------------------------------------------------------------------------


def applies(lm: Any, hidden: mx.array, params: SamplingParams, key: mx.array | None, steps: int) -> bool:
    """The kernel can serve this call (the caller's `Kernels.depformer` chose it): packed model, a
    CUDA device, 1..MAX_ROWS rows, per-row keys or greedy."""
    if getattr(lm, "_dep_packed", None) is None:
        return False
    b = hidden.shape[0]
    if not 1 <= b <= MAX_ROWS or hidden.dtype not in (mx.bfloat16, mx.float16, mx.float32):
        return False
    if not params.greedy and (key is None or key.ndim != 2):
        return False  # the op path's global RNG / single key draws by categorical, not Gumbel
    return 1 <= steps <= lm.cfg.dep_q and sm_count() is not None


# ---- the call ------------------------------------------------------------------------------------


def launch(
    lm: Any,
    hidden: mx.array,
    text: mx.array,
    given: mx.array,
    params: SamplingParams,
    key: mx.array | None,
    steps: int,
    threads: int = THREADS,
) -> tuple[mx.array, mx.array]:
    """hidden [B, D], text [B], given [B, >= steps] (-1 = sample) -> (tokens [B, steps] int32,
    scratch): the scratch holds every step's logits (`logits_of`) and the barrier's flag.
    `threads`: a block's threads (a multiple of 32, <= 1024, under launch bounds)."""
    packed: Packed = lm._dep_packed
    cfg = lm.cfg
    b = hidden.shape[0]
    greedy = params.greedy
    card = cfg.card
    if greedy:
        noise = mx.zeros((1,), dtype=mx.float32)
    else:
        noise = step_noise(key, steps, card)  # [B, steps, card]
    temp = _rows(params.audio_temperature, b, mx.float32)
    topk = _rows(params.audio_top_k, b, mx.int32)
    names = ["h", "text", "given", "noise", "temp", "topk"]
    inputs = [
        hidden.reshape(b, cfg.dim),
        text.astype(mx.int32).reshape(b),
        mx.contiguous(given[:, :steps].astype(mx.int32)),
        noise,
        temp,
        topk,
    ]
    mats: list[tuple[str, Mat]] = [("win", packed.dep_in)]
    norms: list[tuple[str, mx.array]] = []
    for i, (n1, qkv, out, n2, lin_in, lin_out) in enumerate(packed.layers):
        norms += [(f"n1_{i}", n1), (f"n2_{i}", n2)]
        mats += [(f"qkv{i}", qkv), (f"o{i}", out), (f"gi{i}", lin_in), (f"go{i}", lin_out)]
    mats.append(("head", packed.head))
    names += ["emb_t", "emb_a"]
    inputs += [packed.emb_text, packed.emb_audio]
    for name, arr in norms:
        names.append(name)
        inputs.append(arr)
    for name, m in mats:
        names.append(name)
        inputs.append(m.w)
        if m.bits:
            names += [f"{name}_s", f"{name}_b"]
            inputs += [m.scales, m.biases]
    shape = _shape_key(cfg)
    layout = _Layout(shape, b, steps)
    bits = tuple((name, m.bits, m.group) for name, m in mats)
    kmax = max(cfg.dim, cfg.depformer_hidden, cfg.depformer_dim)
    smem = b * kmax * 4  # the stage inputs
    smem = shared_memory(smem, _STATIC_SMEM)
    nt = threads
    kernel = _kernel(tuple(names), shape, bits, packed.eps, smem, nt)
    blocks = sm_count() or 1
    tokens, scratch = kernel(
        inputs=inputs,
        template=[("T", hidden.dtype), ("B", b), ("NS", steps), ("GREEDY", bool(greedy))],
        grid=(blocks * nt, 1, 1),
        threadgroup=(nt, 1, 1),
        output_shapes=[(b, steps), (layout.size,)],
        output_dtypes=[mx.int32, mx.float32],
        init_value=0,
    )
    return tokens, scratch


def step_noise(key: mx.array, steps: int, card: int) -> mx.array:
    """[B, steps, card] Gumbel noise: step k of row b from the op path's key for (b, k), so the
    kernel draws the same random numbers as `lm.sampling.sample` does step by step."""
    keys = mx.stack(split_keys(key, steps), axis=1)  # [B, steps, 2]
    draw = mx.vmap(mx.vmap(lambda k: mx.random.gumbel(shape=(card,), key=k)))
    return draw(keys)


def _rows(value: Scalar, b: int, dtype: mx.Dtype) -> mx.array:
    return mx.broadcast_to(mx.array(value).astype(dtype).reshape(-1), (b,))


class _Layout:
    """Offsets (in floats) of the kernel's fp32 scratch: control, x, q, attention, gate, logits
    [B, NS, card], step caches [L, B, NS, 2, Dd]; `shape` as `_shape_key` gives it (the dims the
    kernel source is written for)."""

    def __init__(self, shape: tuple[int, ...], b: int, steps: int) -> None:
        _, dd, _, f, card, n_layers = shape
        self.logits = CONTROL + 3 * b * dd + b * f
        self.kv = self.logits + b * steps * card
        self.size = self.kv + n_layers * b * steps * 2 * dd


def logits_of(lm: Any, scratch: mx.array, b: int, steps: int) -> mx.array:
    """Every step's logits [B, steps, card] fp32 from a `launch` scratch."""
    start = _Layout(_shape_key(lm.cfg), b, steps).logits
    return scratch[start : start + b * steps * lm.cfg.card].reshape(b, steps, lm.cfg.card)


def _shape_key(cfg: Any) -> tuple[int, ...]:
    return (
        cfg.dim,
        cfg.depformer_dim,
        cfg.depformer_num_heads,
        cfg.depformer_hidden,
        cfg.card,
        cfg.depformer_num_layers,
    )


# ---- the kernel source ---------------------------------------------------------------------------

_HEADER = r"""
template <int B, int H, int HD, int DD, int NS, int NT>
__device__ inline void block_attention(const float* q, const float* kv, float* xs, int s, float scale) {
  // Every block computes the whole attention output [B, DD] into its own shared memory (the
  // out_proj's input), so no grid barrier separates the two: one warp per (row, head) at a time,
  // q over the keys of steps 0..s of the layer's cache [B, NS, 2, DD] (keys first).
  constexpr int NW = NT / 32;
  constexpr int PL = HD / 32;
  const int lane = threadIdx.x & 31;
  __syncthreads();  // xs is free
  for (int u = threadIdx.x >> 5; u < B * H; u += NW) {
    const int b = u / H, hh = u % H;
    float qv[PL];
#pragma unroll
    for (int p = 0; p < PL; ++p) qv[p] = __ldcg(q + b * DD + hh * HD + p * 32 + lane);
    float sc[NS];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      sc[j] = -INFINITY;
      if (j <= s) {
        const float* kp = kv + (size_t)(b * NS + j) * 2 * DD + hh * HD;
        float d = 0.f;
#pragma unroll
        for (int p = 0; p < PL; ++p) d = fmaf(qv[p], __ldcg(kp + p * 32 + lane), d);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        sc[j] = d * scale;
        m = fmaxf(m, sc[j]);
      }
    }
    float l = 0.f;
    float o[PL];
#pragma unroll
    for (int p = 0; p < PL; ++p) o[p] = 0.f;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      if (j <= s) {
        const float e = expf(sc[j] - m);
        const float* vp = kv + ((size_t)(b * NS + j) * 2 + 1) * DD + hh * HD;
        l += e;
#pragma unroll
        for (int p = 0; p < PL; ++p) o[p] = fmaf(e, __ldcg(vp + p * 32 + lane), o[p]);
      }
    }
#pragma unroll
    for (int p = 0; p < PL; ++p) xs[b * DD + hh * HD + p * 32 + lane] = o[p] / l;
  }
  __syncthreads();
}

__device__ inline unsigned int order_key(float f) {
  const unsigned int u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline float order_value(unsigned int u) {
  return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

template <int V, int NT>
__device__ inline float kth_largest(const float* sv, unsigned int k, unsigned int* hist, unsigned int* info) {
  // radix select over the order-preserving bit patterns, 8 bits a pass, from the top
  unsigned int prefix = 0u, mask = 0u;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += NT) hist[i] = 0u;
    __syncthreads();
    for (int i = threadIdx.x; i < V; i += NT) {
      const unsigned int u = order_key(sv[i]);
      if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      unsigned int c[8];
      unsigned int sum = 0u;
#pragma unroll
      for (int j = 0; j < 8; ++j) { c[j] = hist[255 - 8 * lane - j]; sum += c[j]; }
      unsigned int incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned int n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
      }
      const unsigned int excl = incl - sum;
      if (excl < k && k <= incl) {
        unsigned int run = excl;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (run + c[j] >= k) { info[0] = 255u - 8u * lane - j; info[1] = k - run; break; }
          run += c[j];
        }
      }
    }
    __syncthreads();
    prefix |= info[0] << shift;
    mask |= 255u << shift;
    k = info[1];
    __syncthreads();
  }
  return order_value(prefix);
}

template <int NT>
__device__ inline int block_argmax(float v, int i, float* rv, int* ri) {
  // the largest v, lowest i on ties, over the block
  constexpr int NW = NT / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, i, o);
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
  }
  if (lane == 0) { rv[warp] = v; ri[warp] = i; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < NW; ++w) {
      if (rv[w] > v || (rv[w] == v && ri[w] < i)) { v = rv[w]; i = ri[w]; }
    }
    ri[0] = i;
  }
  __syncthreads();
  const int best = ri[0];
  __syncthreads();
  return best;
}
"""

_SAMPLE = r"""
    // sampling: every block draws every row's token (same logits and noise -> same token)
    for (int b = 0; b < B; ++b) {
      const float* lg = LG + ((size_t)b * NS + s) * CARD;
      const float t = temp_s[b];
      const bool hot = !GREEDY && t > 0.f;
      int kk = topk_s[b];
      if (kk <= 0 || kk > CARD) kk = CARD;
      for (int i = threadIdx.x; i < CARD; i += NT) {
        const float v = __ldcg(lg + i);
        sv[i] = hot ? v / t : v;
      }
      __syncthreads();
      float thr = -INFINITY;
      if (hot && kk < CARD) thr = kth_largest<CARD, NT>(sv, (unsigned int)kk, hist, info);
      float best = -INFINITY;
      int bi = 0x7fffffff;
      for (int i = threadIdx.x; i < CARD; i += NT) {
        float v = sv[i];
        if (hot) v = v >= thr ? v + noise[((size_t)b * NS + s) * CARD + i] : -INFINITY;
        if (v > best || (v == best && i < bi)) { best = v; bi = i; }
      }
      int drawn = block_argmax<NT>(best, bi, rv, ri);
      if (drawn >= CARD) drawn = 0;
      const int g = given[b * NS + s];
      if (threadIdx.x == 0) {
        cur[b] = g >= 0 ? g : drawn;
        if (blockIdx.x == 0) tokens[b * NS + s] = cur[b];
      }
      __syncthreads();
    }
"""


@dataclass(frozen=True)
class _Stage:
    """One weighted stage of a step: matrix `name` ([N (x2 gated), K] rows from `row0`), its input
    (`src`, normalized by `norm`) and the epilogue that stores each output."""

    name: str
    n: str
    k: str
    rows: str  # rows of the step's slice: N, or 2 N gated
    gate: bool
    src: str  # "h" or a scratch array
    norm: str  # norm weight input, "" for none
    epi: str
    attention_before: bool = False  # its input is the step attention (computed by every block)


_ADD_X = "[&](int b, int row, float v) { X[b * DD + row] = __ldcg(X + b * DD + row) + v; }"


def _stages(n_layers: int) -> list[_Stage]:
    """Every weighted stage of one depformer step, in order."""
    out = [
        _Stage(
            "win",
            "DD",
            "D",
            "DD",
            False,
            "h",
            "",
            "[&](int b, int row, float v) {\n"
            "      const int t = cur[b];\n"
            "      float e = 0.f;\n"
            "      if (t >= 0) e = static_cast<float>(s == 0 ? emb_t[(size_t)t * DD + row]\n"
            "                      : emb_a[((size_t)(s - 1) * (CARD + 1) + t) * DD + row]);\n"
            "      X[b * DD + row] = v + e; }",
        )
    ]
    for i in range(n_layers):
        out += [
            _Stage(
                f"qkv{i}",
                "3 * DD",
                "DD",
                "3 * DD",
                False,
                "X",
                f"n1_{i}",
                "[&](int b, int row, float v) {\n"
                "        if (row < DD) Q[b * DD + row] = v;\n"
                f"        else KV[(((size_t){i} * B + b) * NS + s) * 2 * DD + (row / DD - 1) * DD + row % DD] = v; }}",
            ),
            _Stage(f"o{i}", "DD", "DD", "DD", False, "A", "", _ADD_X, attention_before=True),
            _Stage(
                f"gi{i}",
                "F",
                "DD",
                "2 * F",
                True,
                "X",
                f"n2_{i}",
                "[&](int b, int row, float v) { G[b * F + row] = v; }",
            ),
            _Stage(f"go{i}", "DD", "F", "DD", False, "G", "", _ADD_X),
        ]
    out.append(
        _Stage(
            "head",
            "CARD",
            "DD",
            "CARD",
            False,
            "X",
            "",
            "[&](int b, int row, float v) { LG[((size_t)b * NS + s) * CARD + row] = v; }",
        )
    )
    return out


def _rows_call(st: _Stage, bits: int, group: int) -> str:
    g = "true" if st.gate else "false"
    row0 = f"(size_t)s * {st.rows}"
    if bits == 0:
        return f"rows_dense<{st.n}, {st.k}, B, {g}, NT>({st.name}, {row0}, xs, {st.epi});\n"
    return (
        f"rows_quant<{st.n}, {st.k}, B, {g}, NT, {bits}, {group}, 8>"
        f"({st.name}, {st.name}_s, {st.name}_b, {row0}, xs, {st.epi});\n"
    )


def _prefetch(st: _Stage, bits: int, group: int, step: str) -> str:
    """L2 prefetch of a stage's rows for step `step` (issued before a barrier, stages ahead)."""
    rows, first = f"(size_t)({st.rows})", f"(size_t)({step}) * ({st.rows})"
    if bits == 0:
        row_bytes = f"(size_t)({st.k}) * sizeof(*{st.name})"
        return f"prefetch_l2<NT>({st.name}, {first} * {row_bytes}, {rows} * {row_bytes});"
    words, groups = f"(size_t)({st.k}) / {32 // bits}", f"(size_t)({st.k}) / {group}"
    out = f"prefetch_l2<NT>({st.name}, {first} * {words} * 4, {rows} * {words} * 4);"
    for part in ("_s", "_b"):
        size = f"{groups} * sizeof(*{st.name}{part})"
        out += f" prefetch_l2<NT>({st.name}{part}, {first} * {size}, {rows} * {size});"
    return out


def _source(shape: tuple[int, ...], bits: dict[str, tuple[int, int]], eps: float, nt: int = THREADS) -> str:
    d, dd, h, f, card, n_layers = shape
    hd = dd // h
    out = [
        f"  constexpr int D = {d};\n  constexpr int DD = {dd};\n  constexpr int H = {h};\n",
        f"  constexpr int HD = {hd};\n  constexpr int F = {f};\n  constexpr int CARD = {card};\n",
        f"  constexpr int NT = {nt};\n  constexpr float EPS = {float(eps)!r}f;\n",
        f"  constexpr float SCALE = {hd**-0.5!r}f;\n  constexpr int CONTROL = {CONTROL};\n",
        """
  extern __shared__ float xs[];  // this block's stage input [B, KMAX] fp32
  __shared__ float sv[CARD];
  __shared__ unsigned int hist[256];
  __shared__ unsigned int info[2];
  __shared__ float rv[NT / 32];
  __shared__ int ri[NT / 32];
  __shared__ int cur[B];
  __shared__ float temp_s[B];  // per-row sampling settings, read once: a [1] array of MLX's CUDA
  __shared__ int topk_s[B];    // backend lives in host memory the GPU reads over the bus
  unsigned int* bar = reinterpret_cast<unsigned int*>(ws);
  unsigned int epoch = 0u;
  float* X = ws + CONTROL;   // [B, DD] residual stream
  float* Q = X + B * DD;     // [B, DD]
  float* A = Q + B * DD;     // [B, DD] attention output
  float* G = A + B * DD;     // [B, F] gated hidden
  float* LG = G + B * F;     // [B, NS, CARD] logits
  float* KV = LG + B * NS * CARD;  // [L, B, NS, 2, DD] step caches
  if (threadIdx.x < B) {
    cur[threadIdx.x] = text[threadIdx.x];
    temp_s[threadIdx.x] = temp[threadIdx.x];
    topk_s[threadIdx.x] = topk[threadIdx.x];
  }
  __syncthreads();
  for (int s = 0; s < NS; ++s) {
""",
    ]
    order = _stages(n_layers)
    cycle = [(x, "s") for x in order] + [(x, "s + 1") for x in order]
    asked: set[tuple[str, str]] = set()

    def barrier(j: int) -> str:
        """The grid barrier after the step's j-th stage; before it, L2 is asked for the weights of
        the first stage two or three ahead not yet asked for (past the head: the next step's
        first stages), so that they are in flight while the grid waits."""
        for x, step in cycle[j + 2 : j + 4]:
            if (x.name, step) not in asked:
                asked.add((x.name, step))
                b, g = bits[x.name]
                fetch = _prefetch(x, b, g, step)
                if step != "s":
                    fetch = f"if (s + 1 < NS) {{ {fetch} }}"
                return f"    {fetch}\n    grid_sync(bar, epoch);\n"
        return "    grid_sync(bar, epoch);\n"

    for j, st in enumerate(order):
        if st.src == "h":
            out.append(
                "    __syncthreads();\n"
                "    for (int i = threadIdx.x; i < B * D; i += NT) xs[i] = static_cast<float>(h[i]);\n"
                "    __syncthreads();\n"
            )
        elif st.attention_before:
            kv = f"KV + (size_t){int(st.name[1:])} * B * NS * 2 * DD"
            out.append(f"    block_attention<B, H, HD, DD, NS, NT>(Q, {kv}, xs, s, SCALE);\n")
        elif st.norm:
            out.append(f"    stage<{st.k}, B, NT, true>(xs, {st.src}, {st.norm}, EPS);\n")
        else:
            out.append(f"    stage<{st.k}, B, NT, false>(xs, {st.src}, (const float*)nullptr, 0.f);\n")
        b, g = bits[st.name]
        out.append("    " + _rows_call(st, b, g))
        out.append(barrier(j))
    out.append(_SAMPLE)
    out.append("  }\n")
    return "".join(out)


@cache
def _kernel(
    names: tuple[str, ...],
    shape: tuple[int, ...],
    bits: tuple[tuple[str, int, int], ...],
    eps: float,
    smem: int,
    nt: int = THREADS,
) -> Any:
    source = _source(shape, {n: (b, g) for n, b, g in bits}, eps, nt)
    return persistent_kernel("depformer", list(names), ["tokens", "ws"], source, _HEADER, nt, smem)
