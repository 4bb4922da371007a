"""The temporal transformer's one-position step (all 32 layers) as ONE CUDA kernel.

Why: on an H100 the q4 LM step launched ~390 kernels a frame, ~300 of them for the temporal
layers (5-6 fused products and ring-attention kernels a layer plus the ring writes), and its wall
time was ~3 ms above its GPU time (bench/RESULTS.md: 9.2 ms serialized for ~6.1 ms of GPU work,
1.6 ms of it host graph building). Here the layers are one persistent kernel: one block per SM,
grid barriers between stages (`nn.grid`), the fp32 residual stream in global scratch. Per layer:

    S1  q | k | v = in_proj[l] rms1(X)                       (every block normalizes X itself)
    S2  attention partials: a block per (row, head, split of the attended ring slots); q and the
        new k are rotated on the fly (interleaved RoPE at the row's own position, angles from
        `rope_table`); the current slot's key and value come from S1 (rounded to the cache dtype,
        as the op path stores them)
    S3  X += out_proj[l] a,  a = the splits combined (every block combines all of them itself)
    S4  G = silu(u) * w,  u | w = linear_in[l] rms2(X)
    S5  X += linear_out[l] G

then `hidden` = X (before the final norm, in the activation dtype). Products: one warp per output
row at a time. In q4 / q8 each warp streams its rows' packed words, scales and biases through a
ring of `Tuning.stages` slots in shared memory (`nn.grid.rows_async`, cp.async: 8 units of 512
bytes in flight per warp, across row boundaries, with no registers held), each lane reading back
its own 16 bytes against a swizzled, bank-conflict-free copy of the stage input and precomputed
chunk sums (the bias term); dense weights, or `stages=0`, use `nn.grid.rows_dense` / `rows_quant`.
Before each barrier the grid asks L2 for the first wave of rows of the next product. 512 threads a
block under launch bounds (`nn.grid.launch_bounds`, 128 registers a thread). The step's position
and the rows' padding are read once per block into shared memory: MLX's CUDA backend keeps an
array of 8 bytes or less in host memory that the GPU reads over the bus, and reading `start[b]`
once per layer and block had cost ~25 us a layer. Measured on an H100 (bench/RESULTS.md): 2.8 ms
of GPU a frame in q4 (4.1 ms before these three changes), the step 8.2 -> 7.2 ms.

The kernel writes the step's keys and values into the ring arrays IN PLACE (slot pos % C of each
layer; no other slot changes, and that slot is never read from the ring in the step: its key and
value come from S1) and also returns them (`new_kv` [L, 2, B, D], for the checks). In place,
because MLX's 64 `put_along_axis` writes a frame took ~1.2 ms of GPU time; so `LmCache.snapshot`
and `restore` copy the rings. Visibility of a ring slot is `ring_attention`'s rule (context
window, each row's left padding, a padding row sees only itself), evaluated in the kernel.

`reference` computes the same contract with MLX ops (fp32 throughout): the CPU tests run the
engine through it in place of the kernel, and it documents what the CUDA source implements.
Where the kernel does not apply (`Kernels.temporal` off, not CUDA, batch > MAX_ROWS, a layout it
does not cover), `engine.compiled` runs the fused per-layer ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.nn import ring_attention
from rolekit.nn.cuda import shared_optin, sm_count
from rolekit.nn.grid import (
    CONTROL,
    Mat,
    mat_ok,
    persistent_kernel,
    shared_memory,
    stack_linears,
    stack_norms,
)
from rolekit.nn.kernels import TemporalTuning

MAX_ROWS = 4
Tuning = TemporalTuning  # the kernel's shape, a field of the `Kernels` policy


PROBES = (
    6  # attention stamps a layer (Tuning.probe): item start, rope done, synced, slots, warp / block merge
)
_STATIC_SMEM = 16 * 1024  # upper bound of the kernel's static shared memory
_LOG2E = 1.4426950408889634
FAMILIES = ("wq", "wo", "wi", "wd")  # in_proj, out_proj, gating linear_in, gating linear_out


@dataclass(frozen=True)
class Packed:
    mats: dict[str, Mat]  # FAMILIES -> every layer's rows stacked
    norm1: mx.array  # [L, D]
    norm2: mx.array  # [L, D]
    eps: float


def pack(lm: Any) -> Packed | None:
    """Stack each weight family of the temporal layers once and return the kernel's view of them;
    None (nothing changed) where the kernel cannot serve this model.

    Explicit side effect: the layers' weights are re-pointed at views of the stacks (the op path
    reads the same numbers; no second copy), and the result is kept as `lm._temporal_packed`, so
    packing again returns the same `Packed`. Weights assigned to the modules afterwards are not
    seen by the kernel: pack a fresh LM instead. Call outside of mx.compile (it evaluates)."""
    found = getattr(lm, "_temporal_packed", None)
    if found is not None:
        return found
    cfg = lm.cfg
    layers = lm.transformer.layers
    if not layers or not _dims_ok(cfg):
        return None
    mats = {
        "wq": stack_linears([la.self_attn.in_proj for la in layers]),
        "wo": stack_linears([la.self_attn.out_proj for la in layers]),
        "wi": stack_linears([la.gating.linear_in for la in layers]),
        "wd": stack_linears([la.gating.linear_out for la in layers]),
    }
    if any(m is None or not mat_ok(m) for m in mats.values()):
        return None
    packed = Packed(
        mats,  # type: ignore[arg-type]
        stack_norms([la.norm1 for la in layers]),
        stack_norms([la.norm2 for la in layers]),
        float(layers[0].norm1.eps),
    )
    lm._temporal_packed = packed
    return packed


def _dims_ok(cfg: Any) -> bool:
    hd = cfg.dim // cfg.num_heads
    return cfg.dim % cfg.num_heads == 0 and hd in (64, 128) and cfg.dim % 64 == 0 and cfg.hidden % 64 == 0


def applies(lm: Any, batch: int, cache_dtype: mx.Dtype) -> bool:
    """The kernel can serve this step (the caller's `Kernels.temporal` chose it): packed model, a
    CUDA device, 1..MAX_ROWS rows, the ring cache in the activation dtype."""
    if getattr(lm, "_temporal_packed", None) is None:
        return False
    if not 1 <= batch <= MAX_ROWS or lm.dtype not in (mx.bfloat16, mx.float16, mx.float32):
        return False
    return cache_dtype == lm.dtype and sm_count() is not None


def split_plan(batch: int, heads: int, length: int, blocks: int) -> tuple[int, int]:
    """(splits, slots per split) of the attended ring prefix: about one attention item per block."""
    nsplit = max(1, min(blocks // (batch * heads), -(-length // 64)))
    return nsplit, -(-length // nsplit)


class _Layout:
    """Offsets (floats) of the fp32 scratch: control, X [B, D], QKV [B, 3D], G [B, F], partial
    maxima / sums [B H S], partial outputs [B H S, HD], stage stamps [stages, 2] (uint32 pairs),
    attention probes [L, PROBES, 2]."""

    def __init__(self, b: int, d: int, f: int, heads: int, nsplit: int, n_layers: int) -> None:
        hd = d // heads
        items = b * heads * nsplit
        self.x = CONTROL
        self.partials = self.x + b * d + 3 * b * d + b * f
        self.stamps = self.partials + 2 * items + items * hd
        self.n_stamps = 10 * n_layers + 2
        self.probes = self.stamps + 2 * self.n_stamps  # [L, PROBES] attention phases (Tuning.probe)
        self.size = self.probes + 2 * PROBES * n_layers


@dataclass(frozen=True)
class Pipeline:
    """How the kernel's quantized products read their weights: `stages` slots of each warp's
    cp.async ring (`nn.grid.rows_async`; 0: the register path `rows_quant`), the values of one
    lane's 16 bytes (`vpc`), the floats of the chunk sums and the words of a ring slot, and the
    dynamic shared memory in all (stage input [B, max(D, F)] fp32, chunk sums, rings)."""

    stages: int
    vpc: int
    sums: int
    slot_words: int
    smem: int


def pipeline(packed: Packed, b: int, d: int, f: int, dtype: mx.Dtype, tune: Tuning) -> Pipeline:
    """The weight pipeline for this model and batch: on when every family is affine q4 / q8 of one
    group size, its rows split into 16-byte chunks and its scale rows into 4-byte words, and at
    least 2 slots a warp fit in the block's shared memory next to the stage input."""
    xs = b * max(d, f) * 4
    mats = [packed.mats[n] for n in FAMILIES]
    bits, group = mats[0].bits, mats[0].group
    size = 2 if dtype in (mx.bfloat16, mx.float16) else 4
    ok = tune.stages >= 2 and bits in (4, 8) and all((m.bits, m.group) == (bits, group) for m in mats)
    ok = ok and all((k * bits // 32) % 4 == 0 and (k // group * size) % 4 == 0 for k in (d, f))
    if not ok:
        return Pipeline(0, 0, 0, 0, xs)
    vpc = 128 // bits
    sums = -(-(b * max(d, f) // vpc) // 4) * 4
    scale_bytes = 32 * vpc // group * size
    slot_words = 128 + 2 * (-(-scale_bytes // 16) * 4)
    room = (shared_optin() or 48 * 1024) - _STATIC_SMEM - xs - 4 * sums
    per_stage = (tune.threads // 32) * slot_words * 4
    stages = min(tune.stages, room // per_stage)
    if stages < 2:
        return Pipeline(0, 0, 0, 0, xs)
    return Pipeline(stages, vpc, sums, slot_words, xs + 4 * sums + stages * per_stage)


# ---- the call ------------------------------------------------------------------------------------


def launch(
    lm: Any,
    x: mx.array,
    pos: mx.array,
    start: mx.array,
    ks: list[mx.array],
    vs: list[mx.array],
    length: int,
    context: int,
    tune: TemporalTuning = TemporalTuning(),
) -> tuple[mx.array, mx.array, mx.array]:
    """x [B, D] (embedded step input), pos int32 scalar (global position of this step), start [B]
    int32 (left padding), ks / vs per layer [B, H, C, Dh] (the rings WITHOUT this position),
    length: ring slots attended (a prefix before the wrap, C after) -> (hidden [B, D] before the
    final norm, new_kv [L, 2, B, D] this position's keys (rotated) and values, scratch). The
    kernel also writes new_kv into ks / vs at slot pos % C, in place."""
    packed: Packed = lm._temporal_packed
    cfg = lm.cfg
    b = x.shape[0]
    cap = ks[0].shape[2]
    blocks = sm_count() or 1
    nsplit, chunk = split_plan(b, cfg.num_heads, length, blocks)
    names = ["x", "pos", "start", "rope", "n1", "n2"]
    rope = rope_table(pos, start, cfg.dim // cfg.num_heads, lm.transformer.layers[0].self_attn.max_period)
    inputs = [x, pos.reshape(1).astype(mx.int32), start.astype(mx.int32), rope, packed.norm1, packed.norm2]
    for name in FAMILIES:
        m = packed.mats[name]
        names.append(name)
        inputs.append(m.w)
        if m.bits:
            names += [f"{name}_s", f"{name}_b"]
            inputs += [m.scales, m.biases]
    n_layers = len(ks)
    names += [f"k{i}" for i in range(n_layers)] + [f"v{i}" for i in range(n_layers)]
    inputs += list(ks) + list(vs)
    layout = _Layout(b, cfg.dim, cfg.hidden, cfg.num_heads, nsplit, n_layers)
    bits = tuple((n, packed.mats[n].bits, packed.mats[n].group) for n in FAMILIES)
    shape = (cfg.dim, cfg.num_heads, cfg.hidden, n_layers, cap, min(context, cap), length, nsplit, chunk)
    plan = pipeline(packed, b, cfg.dim, cfg.hidden, x.dtype, tune)
    smem = shared_memory(plan.smem, _STATIC_SMEM)
    kernel = _kernel(tuple(names), shape, bits, packed.eps, smem, tune, plan)
    hidden, new_kv, scratch = kernel(
        inputs=inputs,
        template=[("T", x.dtype), ("B", b)],
        grid=(blocks * tune.threads, 1, 1),
        threadgroup=(tune.threads, 1, 1),
        output_shapes=[(b, cfg.dim), (n_layers, 2, b, cfg.dim), (layout.size,)],
        output_dtypes=[x.dtype, x.dtype, mx.float32],
        init_value=0,
    )
    return hidden, new_kv, scratch


def rope_table(pos: mx.array, start: mx.array, head_dim: int, base: float) -> mx.array:
    """[B, Dh / 2, 2] fp32 (cos, sin) of each row's rotary angles at its own position pos - start[b]:
    theta_i = position * base^(-i / (Dh / 2)), as MLX's interleaved rope computes them (a few
    elementwise ops in the step's graph instead of sin / cos code run once a layer in the kernel)."""
    half = head_dim // 2
    inv = mx.power(2.0, -(mx.arange(half, dtype=mx.float32) / half) * math.log2(float(base)))  # [Dh/2]
    theta = (pos.astype(mx.int32) - start.astype(mx.int32)).astype(mx.float32)[:, None] * inv[None]
    return mx.stack([mx.cos(theta), mx.sin(theta)], axis=-1)


def _layout_of(lm: Any, batch: int, length: int) -> _Layout:
    cfg = lm.cfg
    nsplit, _ = split_plan(batch, cfg.num_heads, length, sm_count() or 1)
    return _Layout(batch, cfg.dim, cfg.hidden, cfg.num_heads, nsplit, cfg.num_layers)


def _timer(scratch: mx.array, first: int, count: int) -> np.ndarray:
    """`count` global-timer values (ns, int64) stored as uint32 pairs from float `first` of a scratch."""
    raw = np.array(scratch[first : first + 2 * count]).view(np.uint32).astype(np.uint64)
    return (raw[0::2] | (raw[1::2] << np.uint64(32))).astype(np.int64)


def probe_us(lm: Any, scratch: mx.array, batch: int, length: int) -> np.ndarray:
    """[L, PROBES - 1] microseconds of block 0's attention phases from the start of its first item
    (rotary part, the block's sync, slots loop, warp merge, block merge), from a launch with
    `Tuning(probe=True)`; zeros without."""
    n = lm.cfg.num_layers
    t = _timer(scratch, _layout_of(lm, batch, length).probes, PROBES * n)
    return np.diff(t.reshape(n, PROBES), axis=1) / 1000.0


def stage_us(lm: Any, scratch: mx.array, batch: int, length: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Microseconds of a launch's stages from block 0's global-timer stamps: (work [5 L], wait
    [5 L], output); stage 5 l + j is layer l's qkv, attention, out, gate, down (j = 0..4); work =
    block 0's own share, wait = then until every block had passed the barrier."""
    lay = _layout_of(lm, batch, length)
    d = np.diff(_timer(scratch, lay.stamps, lay.n_stamps)) / 1000.0
    return d[0:-1:2], d[1:-1:2], float(d[-1])


# ---- the contract, with MLX ops ------------------------------------------------------------------


def _rows(m: Mat, layer: int, n: int) -> mx.array:
    """Layer `layer`'s [n, K] rows of a family, dequantized, fp32."""
    w = m.w[layer * n : (layer + 1) * n]
    if m.bits:  # scale * q + bias in fp32, as the kernel (not rounded to the scales' dtype)
        s = m.scales[layer * n : (layer + 1) * n].astype(mx.float32)
        bi = m.biases[layer * n : (layer + 1) * n].astype(mx.float32)
        w = mx.dequantize(w, s, bi, group_size=m.group, bits=m.bits)
    return w.astype(mx.float32)


def reference(
    lm: Any,
    x: mx.array,
    pos: mx.array,
    start: mx.array,
    ks: list[mx.array],
    vs: list[mx.array],
    length: int,
    context: int,
    tune: TemporalTuning = TemporalTuning(),
) -> tuple[mx.array, mx.array, mx.array]:
    """What `launch` computes, with MLX ops in fp32 (same arguments and results; `tune` shapes only
    the kernel; the scratch is all zeros: no barrier, no stamps; the rings are not written: the
    caller does, functionally): the CPU tests' stand-in for the kernel."""
    packed: Packed = lm._temporal_packed
    cfg = lm.cfg
    b, d = x.shape
    h = cfg.num_heads
    hd = d // h
    f = cfg.hidden
    cap = ks[0].shape[2]
    eps = packed.eps
    dtype = x.dtype
    base = float(lm.transformer.layers[0].self_attn.max_period)
    rope_pos = (pos.astype(mx.int32) - start.astype(mx.int32)).astype(mx.int32)  # [B]
    slot = (pos.astype(mx.int32) % cap).reshape(1, 1, 1, 1)
    idx = mx.broadcast_to(slot, (b, h, 1, hd))
    mask = ring_attention.step_mask(
        pos.astype(mx.int32), start.astype(mx.int32), cap, min(context, cap), length
    )
    xf = x.astype(mx.float32)
    new_kv = []

    def rms(v: mx.array, g: mx.array) -> mx.array:
        return v * mx.rsqrt(mx.mean(v * v, axis=-1, keepdims=True) + eps) * g.astype(mx.float32)

    for i in range(len(ks)):
        qkv = rms(xf, packed.norm1[i]) @ _rows(packed.mats["wq"], i, 3 * d).T  # [B, 3D]
        q, k, v = (qkv[:, j * d : (j + 1) * d].reshape(b, h, 1, hd) for j in range(3))
        qk = mx.fast.rope(
            mx.concatenate([q, k], axis=1), hd, traditional=True, base=base, scale=1.0, offset=rope_pos
        )
        q, k = qk[:, :h], qk[:, h:]
        k, v = k.astype(dtype), v.astype(dtype)  # as the ring stores them
        new_kv.append(mx.stack([k.reshape(b, d), v.reshape(b, d)]))
        keys = mx.put_along_axis(ks[i], idx, k, axis=2)[:, :, :length].astype(mx.float32)
        values = mx.put_along_axis(vs[i], idx, v, axis=2)[:, :, :length].astype(mx.float32)
        a = mx.fast.scaled_dot_product_attention(q, keys, values, scale=hd**-0.5, mask=mask)
        xf = xf + a.reshape(b, d) @ _rows(packed.mats["wo"], i, d).T
        ab = rms(xf, packed.norm2[i]) @ _rows(packed.mats["wi"], i, 2 * f).T  # [B, 2F]
        u, w = ab[:, :f], ab[:, f:]
        xf = xf + (u * mx.sigmoid(u) * w) @ _rows(packed.mats["wd"], i, d).T
    nsplit, _ = split_plan(b, h, length, sm_count() or 1)
    scratch = mx.zeros((_Layout(b, d, f, h, nsplit, len(ks)).size,), mx.float32)
    return xf.astype(dtype), mx.stack(new_kv), scratch


# ---- the kernel source ---------------------------------------------------------------------------

_HEADER = r"""
__device__ inline void stamp(float* tm, int i) {
  // block 0 writes the global timer (ns) after stage i
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    tm[2 * i] = __uint_as_float(static_cast<unsigned int>(t & 0xffffffffull));
    tm[2 * i + 1] = __uint_as_float(static_cast<unsigned int>(t >> 32));
  }
}

__device__ inline void merge_softmax(float& m, float& l, float (&o)[8], float m2, float l2, const float (&o2)[8]) {
  // two online-softmax states (log2 domain) into one; a state that saw nothing has m = -inf
  const float M = fmaxf(m, m2);
  if (M == -INFINITY) return;
  const float a = exp2f(m - M), c = exp2f(m2 - M);
  l = l * a + l2 * c;
#pragma unroll
  for (int t = 0; t < 8; ++t) o[t] = o[t] * a + o2[t] * c;
  m = M;
}

template <typename T, int B, int D, int H, int HD, int C, int CTX, int LEN, int NSPLIT, int CHUNK, int NT, int U>
__device__ inline void attention_stage(
    const float* QKV, const T* kc, const T* vc, T* nkv, float* PM, float* PL, float* PO, int p,
    const int* start, const float* rope, float qscale, float* qs, float* kn, float* vn, float* rm,
    float* rl, float* ro, float* probe) {
  // items (row, head, split) over the blocks; a slot is read by LPS lanes, 8 values each
  constexpr int NW = NT / 32;
  constexpr int LPS = HD / 8;
  constexpr int SPW = 32 / LPS;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int grp = lane / LPS, sub = lane % LPS;
  const int cur = p % C;
  for (int item = blockIdx.x; item < B * H * NSPLIT; item += gridDim.x) {
    const int bh = item / NSPLIT, split = item % NSPLIT;
    const int b = bh / H, h = bh % H;
    const int st = start[b];
    __syncthreads();  // qs / kn / vn / reductions free
    if (probe && item == blockIdx.x) stamp(probe, 0);
    for (int i = threadIdx.x; i < HD / 2; i += NT) {
      const float cs = rope[(b * (HD / 2) + i) * 2], sn = rope[(b * (HD / 2) + i) * 2 + 1];
      const float* src = QKV + (size_t)b * 3 * D + h * HD + 2 * i;
      const float q0 = __ldcg(src), q1 = __ldcg(src + 1);
      const float k0 = __ldcg(src + D), k1 = __ldcg(src + D + 1);
      qs[2 * i] = (q0 * cs - q1 * sn) * qscale;
      qs[2 * i + 1] = (q0 * sn + q1 * cs) * qscale;
      const T ka = static_cast<T>(k0 * cs - k1 * sn), kb = static_cast<T>(k0 * sn + k1 * cs);
      const T va = static_cast<T>(__ldcg(src + 2 * D)), vb = static_cast<T>(__ldcg(src + 2 * D + 1));
      kn[2 * i] = static_cast<float>(ka);
      kn[2 * i + 1] = static_cast<float>(kb);
      vn[2 * i] = static_cast<float>(va);
      vn[2 * i + 1] = static_cast<float>(vb);
      if (split == 0) {
        T* kout = nkv + (size_t)b * D + h * HD + 2 * i;  // keys [B, D], values B * D further
        kout[0] = ka;
        kout[1] = kb;
        kout[B * D] = va;
        kout[B * D + 1] = vb;
        // and into the rings, in place: slot cur is never read from them in this step
        const size_t at = ((size_t)bh * C + cur) * HD + 2 * i;
        const_cast<T*>(kc)[at] = ka;
        const_cast<T*>(kc)[at + 1] = kb;
        const_cast<T*>(vc)[at] = va;
        const_cast<T*>(vc)[at + 1] = vb;
      }
    }
    if (probe && item == blockIdx.x) stamp(probe, 1);
    __syncthreads();
    if (probe && item == blockIdx.x) stamp(probe, 2);
    float qv[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) qv[t] = qs[sub * 8 + t];
    float m = -INFINITY, l = 0.f, o[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) o[t] = 0.f;
    const T* kb = kc + (size_t)bh * C * HD + sub * 8;
    const T* vb = vc + (size_t)bh * C * HD + sub * 8;
    const int j0 = split * CHUNK;
    const int j1 = min(LEN, j0 + CHUNK);
    for (int jb = j0 + warp * SPW; jb < j1; jb += NW * SPW * U) {
      float kv[U][8], vv[U][8];
      bool ok[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = jb + u * NW * SPW + grp;
        const int held = p - ((p - j + C) % C);
        ok[u] = j < j1 && (p < st ? j == cur : (held >= st && p - held < CTX));
        if (ok[u] && j != cur) {
          load8s(kb + (size_t)j * HD, kv[u]);  // streamed, as the weights: read once a frame
          load8s(vb + (size_t)j * HD, vv[u]);
        } else {
#pragma unroll
          for (int t = 0; t < 8; ++t) { kv[u][t] = kn[sub * 8 + t]; vv[u][t] = vn[sub * 8 + t]; }
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float s = 0.f;
#pragma unroll
        for (int t = 0; t < 8; ++t) s = fmaf(qv[t], kv[u][t], s);
#pragma unroll
        for (int off = LPS / 2; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (ok[u]) {
          const float M = fmaxf(m, s);
          const float a = exp2f(m - M), e = exp2f(s - M);
          l = l * a + e;
#pragma unroll
          for (int t = 0; t < 8; ++t) o[t] = fmaf(e, vv[u][t], o[t] * a);
          m = M;
        }
      }
    }
    if (probe && item == blockIdx.x) stamp(probe, 3);
    // the warp's slot groups, then the block's warps
#pragma unroll
    for (int off = LPS; off < 32; off <<= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
      const float l2 = __shfl_xor_sync(0xffffffffu, l, off);
      float o2[8];
#pragma unroll
      for (int t = 0; t < 8; ++t) o2[t] = __shfl_xor_sync(0xffffffffu, o[t], off);
      merge_softmax(m, l, o, m2, l2, o2);
    }
    if (grp == 0) {
#pragma unroll
      for (int t = 0; t < 8; ++t) ro[warp * HD + sub * 8 + t] = o[t];
      if (sub == 0) { rm[warp] = m; rl[warp] = l; }
    }
    __syncthreads();
    if (probe && item == blockIdx.x) stamp(probe, 4);
    for (int dd = threadIdx.x; dd < HD; dd += NT) {
      float M = -INFINITY;
      for (int w = 0; w < NW; ++w) M = fmaxf(M, rm[w]);
      float L = 0.f, O = 0.f;
      for (int w = 0; w < NW; ++w) {
        if (rm[w] == -INFINITY) continue;
        const float c = exp2f(rm[w] - M);
        L += c * rl[w];
        O += c * ro[w * HD + dd];
      }
      PO[(size_t)item * HD + dd] = O;
      if (dd == 0) { PM[item] = M; PL[item] = L; }
    }
    if (probe && item == blockIdx.x) stamp(probe, 5);
  }
}

template <int B, int D, int H, int HD, int NSPLIT, int NT, bool SWZ>
__device__ inline void combine_stage(const float* PM, const float* PL, const float* PO, float* xs, float* cw) {
  // every block: the attention output [B, D] from the splits' partial states, into shared memory;
  // cw [B * H * NSPLIT] (shared) first takes each split's weight 2^(m_s - M) / L
  __syncthreads();
  for (int i = threadIdx.x; i < B * H; i += NT) {
    float m[NSPLIT], l[NSPLIT];
    float M = -INFINITY;
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) {
      m[s] = __ldcg(PM + i * NSPLIT + s);
      l[s] = __ldcg(PL + i * NSPLIT + s);
    }
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) M = fmaxf(M, m[s]);
    float L = 0.f;
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) L += m[s] == -INFINITY ? 0.f : exp2f(m[s] - M) * l[s];
#pragma unroll
    for (int s = 0; s < NSPLIT; ++s) cw[i * NSPLIT + s] = m[s] == -INFINITY ? 0.f : exp2f(m[s] - M) / L;
  }
  __syncthreads();
  constexpr int N4 = B * D / 4;
  constexpr int UB = 4;
  const float4* po = reinterpret_cast<const float4*>(PO);
  float4* x4 = reinterpret_cast<float4*>(xs);
  for (int i0 = threadIdx.x; i0 < N4; i0 += NT * UB) {
    float4 acc[UB];
#pragma unroll
    for (int u = 0; u < UB; ++u) acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int s = 0; s < NSPLIT; ++s) {
#pragma unroll
      for (int u = 0; u < UB; ++u) {
        const int i = i0 + u * NT;  // float4 index: row b, dims c .. c + 3 of head c / HD
        if (i < N4) {
          const int bh = (i * 4) / HD;  // = b * H + h (rows of D = H * HD)
          const float w = cw[bh * NSPLIT + s];
          const float4 v = __ldcg(po + ((size_t)(bh * NSPLIT + s) * HD + (i * 4) % HD) / 4);
          acc[u].x = fmaf(w, v.x, acc[u].x);
          acc[u].y = fmaf(w, v.y, acc[u].y);
          acc[u].z = fmaf(w, v.z, acc[u].z);
          acc[u].w = fmaf(w, v.w, acc[u].w);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      if (i0 + u * NT < N4) x4[SWZ ? swz4(i0 + u * NT) : i0 + u * NT] = acc[u];
    }
  }
  __syncthreads();
}
"""


def _rows_call(
    name: str,
    n: str,
    k: str,
    gate: bool,
    row0: str,
    epi: str,
    bits: int,
    group: int,
    pairs: bool = False,
    stages: int = 0,
) -> str:
    g = "true" if gate else "false"
    if stages and bits:
        return (
            f"    rows_async<{n}, {k}, B, {g}, NT, {bits}, {group}, ST>"
            f"({name}, {name}_s, {name}_b, {row0}, xs, sums, ring, {epi});\n"
        )
    if pairs and not gate:
        if bits == 0:
            return f"    rows_dense_pairs<{n}, {k}, B, NT>({name}, {row0}, xs, {epi});\n"
        return (
            f"    rows_quant_pairs<{n}, {k}, B, NT, {bits}, {group}, UQ>"
            f"({name}, {name}_s, {name}_b, {row0}, xs, {epi});\n"
        )
    if bits == 0:
        return f"    rows_dense<{n}, {k}, B, {g}, NT>({name}, {row0}, xs, {epi});\n"
    return (
        f"    rows_quant<{n}, {k}, B, {g}, NT, {bits}, {group}, UQ>"
        f"({name}, {name}_s, {name}_b, {row0}, xs, {epi});\n"
    )


def _prefetch(name: str, rows: str, k: str, first: str, bits: int, group: int, pairs: bool = False) -> str:
    """L2 prefetch of the first wave of rows (one per warp of the grid) of a family's slice
    (emitted under `if constexpr (PREFETCH)`); `pairs`: of each half (rows_*_pairs)."""
    if pairs:
        half = f"({rows}) / 2"
        return _prefetch(name, half, k, first, bits, group) + _prefetch(
            name, half, k, f"({first}) + {half}", bits, group
        )
    wave = f"(size_t)min((int)({rows}), (int)(gridDim.x * (NT / 32)))"
    if bits == 0:
        row_bytes = f"(size_t)({k}) * sizeof(*{name})"
        out = f"prefetch_l2<NT>({name}, (size_t)({first}) * {row_bytes}, {wave} * {row_bytes}); "
    else:
        words = f"(size_t)({k}) / {32 // bits}"
        groups = f"(size_t)({k}) / {group}"
        out = f"prefetch_l2<NT>({name}, (size_t)({first}) * {words} * 4, {wave} * {words} * 4); "
        for part in ("_s", "_b"):
            size = f"{groups} * sizeof(*{name}{part})"
            out += f"prefetch_l2<NT>({name}{part}, (size_t)({first}) * {size}, {wave} * {size}); "
    return f"    if constexpr (PREFETCH) {{ {out}}}\n"


def _barrier(k: str) -> str:
    """The grid barrier after stage k: block 0 stamps the time it finished its own share of the
    stage (1 + 2k) and the time every block had (2 + 2k)."""
    return f"    stamp(TM, 1 + 2 * ({k}));\n    grid_sync(bar, epoch);\n    stamp(TM, 2 + 2 * ({k}));\n"


def _source(
    shape: tuple[int, ...],
    bits: dict[str, tuple[int, int]],
    eps: float,
    tune: Tuning = Tuning(),
    plan: Pipeline = Pipeline(0, 0, 0, 0, 0),
) -> str:
    d, h, f, n_layers, cap, ctx, length, nsplit, chunk = shape
    st = plan.stages
    swz = "true" if st else "false"
    pairs = tune.pairs and not st
    hd = d // h
    kp = ", ".join(f"k{i}" for i in range(n_layers))
    vp = ", ".join(f"v{i}" for i in range(n_layers))
    out = [
        f"  constexpr int D = {d};\n  constexpr int H = {h};\n  constexpr int HD = {hd};\n",
        f"  constexpr int F = {f};\n  constexpr int L = {n_layers};\n  constexpr int C = {cap};\n",
        f"  constexpr int CTX = {ctx};\n  constexpr int LEN = {length};\n",
        f"  constexpr int NSPLIT = {nsplit};\n  constexpr int CHUNK = {chunk};\n",
        f"  constexpr int NT = {tune.threads};\n  constexpr int NW = NT / 32;\n",
        f"  constexpr int UQ = {tune.words};\n  constexpr int SLOT_U = {tune.slot_passes};\n",
        f"  constexpr bool PREFETCH = {'true' if tune.prefetch else 'false'};\n",
        f"  constexpr bool PROBE = {'true' if tune.probe else 'false'};\n",
        f"  constexpr float EPS = {float(eps)!r}f;\n  constexpr int CONTROL = {CONTROL};\n",
        f"  const float QSCALE = {hd**-0.5 * _LOG2E!r}f;\n",
        f"  constexpr int ST = {st};\n  constexpr bool SWZ = {swz};\n  constexpr int VPC = {plan.vpc or 32};\n",
        f"""
  extern __shared__ float xs[];  // this block's stage input [B, max(D, F)] fp32 (swizzled when ST)
  float* sums = xs + B * (D > F ? D : F);  // ST: [B, K / VPC] chunk sums of the stage input
  uint32_t* ring = reinterpret_cast<uint32_t*>(sums + {plan.sums});  // ST: [NW, ST, slot] weight rings
  (void)sums; (void)ring; (void)UQ;
  __shared__ float qs[HD], kn[HD], vn[HD];
  __shared__ float rm[NW], rl[NW];
  __shared__ float ro[NW * HD];
  __shared__ float cw[B * H * NSPLIT];
  __shared__ const T* kp[L];
  __shared__ const T* vp[L];
  __shared__ int meta[1 + B];  // pos, start[B]: read once (a [1] array of MLX's CUDA backend lives
                               // in host memory, read over the bus)
  if (threadIdx.x <= B) meta[threadIdx.x] = threadIdx.x == 0 ? pos[0] : start[threadIdx.x - 1];
  if (threadIdx.x == 0) {{
    const T* ka[L] = {{{kp}}};
    const T* va[L] = {{{vp}}};
    for (int i = 0; i < L; ++i) {{ kp[i] = ka[i]; vp[i] = va[i]; }}
  }}
  unsigned int* bar = reinterpret_cast<unsigned int*>(ws);
  unsigned int epoch = 0u;
  float* X = ws + CONTROL;         // [B, D] residual stream
  float* QKV = X + B * D;          // [B, 3D]
  float* G = QKV + B * 3 * D;      // [B, F] gated hidden
  float* PM = G + B * F;           // [B * H * NSPLIT] partial maxima (log2 domain)
  float* PL = PM + B * H * NSPLIT; // partial sums
  float* PO = PL + B * H * NSPLIT; // [B * H * NSPLIT, HD] partial outputs
  float* TM = PO + B * H * NSPLIT * HD;  // stage stamps
  __syncthreads();
  const int p = meta[0];
  stamp(TM, 0);
  for (int i = blockIdx.x * NT + threadIdx.x; i < B * D; i += gridDim.x * NT) X[i] = static_cast<float>(x[i]);
  for (int l = 0; l < L; ++l) {{
    // S1: q | k | v = in_proj rms1(X); layer 0 reads its input directly (X is being written)
    if (l == 0) {{
      __syncthreads();
      for (int i = threadIdx.x; i < B * D; i += NT) xs[SWZ ? swz(i) : i] = static_cast<float>(x[i]);
      __syncthreads();
      block_rms_norm<B, D, NT, SWZ>(xs, n1, EPS);
    }} else {{
      stage<D, B, NT, true, SWZ>(xs, X, n1 + (size_t)l * D, EPS);
    }}
    if constexpr (ST > 0) chunk_sums<B, D, NT, VPC>(xs, sums);
""",
    ]
    b_q, b_o, b_i, b_d = (bits[n] for n in FAMILIES)
    out.append(
        _rows_call(
            "wq",
            "3 * D",
            "D",
            False,
            "(size_t)l * 3 * D",
            "[&](int b, int row, float v) { QKV[b * 3 * D + row] = v; }",
            *b_q,
            pairs,
            st,
        )
    )
    out.append(_prefetch("wo", "D", "D", "(size_t)l * D", *b_o, pairs))
    out.append(_barrier("5 * l"))
    out.append(
        "    attention_stage<T, B, D, H, HD, C, CTX, LEN, NSPLIT, CHUNK, NT, SLOT_U>(QKV, kp[l], vp[l],\n"
        "        new_kv + (size_t)l * 2 * B * D, PM, PL, PO, p, meta + 1, rope, QSCALE, qs, kn, vn, rm, rl, ro,\n"
        f"        PROBE ? TM + 2 * (10 * L + 2) + {2 * PROBES} * l : nullptr);\n"
        + _barrier("5 * l + 1")
        + "    combine_stage<B, D, H, HD, NSPLIT, NT, SWZ>(PM, PL, PO, xs, cw);\n"
        + "    if constexpr (ST > 0) chunk_sums<B, D, NT, VPC>(xs, sums);\n"
    )
    add_x = "[&](int b, int row, float v) { X[b * D + row] = __ldcg(X + b * D + row) + v; }"
    out.append(_rows_call("wo", "D", "D", False, "(size_t)l * D", add_x, *b_o, pairs, st))
    out.append(_prefetch("wi", "F", "D", "(size_t)l * 2 * F", *b_i))
    out.append(_barrier("5 * l + 2"))
    out.append("    stage<D, B, NT, true, SWZ>(xs, X, n2 + (size_t)l * D, EPS);\n")
    out.append("    if constexpr (ST > 0) chunk_sums<B, D, NT, VPC>(xs, sums);\n")
    out.append(
        _rows_call(
            "wi",
            "F",
            "D",
            True,
            "(size_t)l * 2 * F",
            "[&](int b, int row, float v) { G[b * F + row] = v; }",
            *b_i,
            False,
            st,
        )
    )
    out.append(_prefetch("wd", "D", "F", "(size_t)l * D", *b_d, pairs))
    out.append(_barrier("5 * l + 3"))
    out.append("    stage<F, B, NT, false, SWZ>(xs, G, (const float*)nullptr, 0.f);\n")
    out.append("    if constexpr (ST > 0) chunk_sums<B, F, NT, VPC>(xs, sums);\n")
    out.append(_rows_call("wd", "D", "F", False, "(size_t)l * D", add_x, *b_d, pairs, st))
    out.append(
        "    if (l + 1 < L) {\n"
        + _prefetch("wq", "3 * D", "D", "(size_t)(l + 1) * 3 * D", *b_q, pairs)
        + "    }\n"
    )
    out.append(_barrier("5 * l + 4") + "  }\n")
    out.append(
        "  for (int i = blockIdx.x * NT + threadIdx.x; i < B * D; i += gridDim.x * NT)\n"
        "    hidden[i] = static_cast<T>(__ldcg(X + i));\n"
        "  stamp(TM, 10 * L + 1);\n"
    )
    return "".join(out)


@cache
def _kernel(
    names: tuple[str, ...],
    shape: tuple[int, ...],
    bits: tuple[tuple[str, int, int], ...],
    eps: float,
    smem: int,
    tune: Tuning,
    plan: Pipeline,
) -> Any:
    source = _source(shape, {n: (b, g) for n, b, g in bits}, eps, tune, plan)
    return persistent_kernel(
        "temporal", list(names), ["hidden", "new_kv", "ws"], source, _HEADER, tune.threads, smem
    )
