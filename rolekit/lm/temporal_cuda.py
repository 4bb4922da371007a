"""The temporal transformer's one-position step (all 32 layers) as ONE CUDA kernel.

Why: as MLX ops (or `nn.fused` products and `ring_attention` kernels) the temporal layers are
most of the LM step's launches (5-6 products and attention kernels a layer plus the ring writes),
and on a CUDA GPU each launch costs host time. Here the layers are one persistent kernel: one block per SM,
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
block under launch bounds (`CudaKernel.threads`, 128 registers a thread). The step's position
and the rows' padding are read once per block into shared memory: MLX's CUDA backend keeps an
array of 8 bytes or less in host memory that the GPU reads over the bus, so each read crosses it.

The kernel writes the step's keys and values into the ring arrays IN PLACE (slot pos % C of each
layer; no other slot changes, and that slot is never read from the ring in the step: its key and
value come from S1) and also returns them (`new_kv` [L, 2, B, D], for the checks). In place,
because the op path's alternative is 64 `put_along_axis` writes a frame; so `LmCache.snapshot`
and `restore` copy the rings. Visibility of a ring slot is `ring_attention`'s rule (context
window, each row's left padding, a padding row sees only itself), evaluated in the kernel.

`reference` computes the same contract with MLX ops (fp32 throughout): the CPU tests run the
engine through it in place of the kernel, and it documents what the CUDA source implements.
Where the kernel does not apply (`Kernels.temporal` off, not CUDA, batch > MAX_ROWS, a layout it
does not cover), `engine.compiled` runs the fused per-layer ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.lm.temporal_source import FAMILIES, PROBES, Pipeline, source
from rolekit.nn import ring_attention
from rolekit.nn.attention import RingKV, StepView
from rolekit.nn.cuda import shared_optin, sm_count
from rolekit.nn.grid import (
    CONTROL,
    Mat,
    family_inputs,
    mat_ok,
    persistent_kernel,
    shared_memory,
    stack_linears,
    stack_norms,
)
from rolekit.nn.kernels import TemporalTuning

MAX_ROWS = 4
Tuning = TemporalTuning  # the kernel's shape, a field of the `Kernels` policy


_STATIC_SMEM = 16 * 1024  # upper bound of the kernel's static shared memory


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


def packed_weights(lm: Any) -> Packed | None:
    """The kernel's view of the LM's weights after `pack(lm)`; None before (or where it cannot)."""
    return getattr(lm, "_temporal_packed", None)


def covers(lm: Any, batch: int, cache_dtype: mx.Dtype) -> bool:
    """The kernel can serve this step (the caller's `Kernels.temporal` chose it): packed model, a
    CUDA device, 1..MAX_ROWS rows, the ring cache in the activation dtype."""
    if packed_weights(lm) is None:
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
    lane_values = 128 // bits
    sums = -(-(b * max(d, f) // lane_values) // 4) * 4
    scale_bytes = 32 * lane_values // group * size
    slot_words = 128 + 2 * (-(-scale_bytes // 16) * 4)
    room = (shared_optin() or 48 * 1024) - _STATIC_SMEM - xs - 4 * sums
    per_stage = (tune.threads // 32) * slot_words * 4
    stages = min(tune.stages, room // per_stage)
    if stages < 2:
        return Pipeline(0, 0, 0, 0, xs)
    return Pipeline(stages, lane_values, sums, slot_words, xs + 4 * sums + stages * per_stage)


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
    weight_names, weights, bits = family_inputs([(n, packed.mats[n]) for n in FAMILIES])
    names += weight_names
    inputs += weights
    n_layers = len(ks)
    names += [f"k{i}" for i in range(n_layers)] + [f"v{i}" for i in range(n_layers)]
    inputs += list(ks) + list(vs)
    layout = _Layout(b, cfg.dim, cfg.hidden, cfg.num_heads, nsplit, n_layers)
    shape = (cfg.dim, cfg.num_heads, cfg.hidden, n_layers, cap, min(context, cap), length, nsplit, chunk)
    plan = pipeline(packed, b, cfg.dim, cfg.hidden, x.dtype, tune)
    smem = shared_memory(plan.smem, _STATIC_SMEM)
    body = source(shape, bits, packed.eps, tune, plan)
    kernel = persistent_kernel(
        "temporal", tuple(names), ("hidden", "new_kv", "ws"), body, "", tune.threads, smem
    )
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


@dataclass(frozen=True)
class TemporalKernel:
    """The temporal layers of one step as one launch, in place of `Transformer.step` inside
    `engine.step.lm_step`. `launch`: `launch` (the CUDA kernel, which writes the step's keys and
    values into the rings in place) or a stand-in with its arguments and results (`reference`:
    any device, the rings not written: `writes_rings` False, so they are written here)."""

    launch: Callable[..., tuple[mx.array, mx.array, mx.array]]
    writes_rings: bool

    def step(
        self, lm: Any, x: mx.array, rings: list[RingKV], view: StepView, tune: TemporalTuning
    ) -> mx.array:
        """x [B, 1, D] at `view.pos` -> hidden [B, 1, D] before the final norm; each ring then
        holds this position's keys and values."""
        ks, vs = [r.keys for r in rings], [r.values for r in rings]
        hidden, new_kv, _ = self.launch(
            lm, x[:, 0], view.pos, view.start, ks, vs, view.length, lm.context, tune
        )
        if not self.writes_rings:
            b, h, _, hd = ks[0].shape
            for ring, kv in zip(rings, new_kv, strict=True):  # kv [2, B, D]
                ring.update_and_fetch(kv[0].reshape(b, h, 1, hd), kv[1].reshape(b, h, 1, hd), view.pos)
        return hidden[:, None]


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


KERNEL = TemporalKernel(launch, writes_rings=True)  # the CUDA kernel
REFERENCE = TemporalKernel(reference, writes_rings=False)  # its contract with MLX ops (CPU tests)
