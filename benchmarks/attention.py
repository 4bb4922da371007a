"""Micro-benchmark of the temporal attention's memory traffic at real shapes: the ring KV write
(slice_update of a [B, H, C, Dh] buffer per layer) and SDPA over the ring, with and without a mask.

Each measurement runs `layers` independent buffers per evaluation, like the 32 layers of one step,
and reports ms per step (all layers). A ring write that is donated costs ~nothing; one that copies
moves the whole ring (2 x B x 24.6 MB per layer in bf16).

`check_ring_attention` compares the ring-attention CUDA kernels (rolekit.nn.ring_attention) and
MLX's masked SDPA with an fp32 reference (on CPU only the MLX path runs).
"""

from __future__ import annotations

import time
from typing import Any

import mlx.core as mx
import numpy as np


def _median_ms(fn: Any, trials: int) -> float:
    fn()
    out = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    out.sort()
    return round(out[len(out) // 2], 3)


def bench_attention(
    batch: int = 1,
    layers: int = 32,
    heads: int = 32,
    context: int = 3000,
    head_dim: int = 128,
    trials: int = 10,
) -> dict[str, Any]:
    """ms per step (all layers) of: ring write eager / compiled, SDPA no mask / bool mask / prefix."""
    dtype = mx.bfloat16 if mx.default_device() == mx.gpu else mx.float32
    shape = (batch, heads, context, head_dim)  # [B, H, C, Dh]
    rings = [mx.random.normal(shape).astype(dtype) for _ in range(layers)]
    mx.eval(rings)
    new = mx.random.normal((batch, heads, 1, head_dim)).astype(dtype)  # [B, H, 1, Dh]
    q = mx.random.normal((batch, heads, 1, head_dim)).astype(dtype)
    mx.eval(new, q)
    state = {"pos": 0}

    def write_eager() -> None:
        nonlocal rings
        slot = mx.array([state["pos"] % context])
        rings = [mx.slice_update(r, new, slot, axes=(2,)) for r in rings]
        state["pos"] += 1
        mx.eval(rings)

    put = mx.compile(lambda r, u, s: mx.slice_update(r, u, s, axes=(2,)))

    def write_static() -> None:
        # Python-int slice (static SliceUpdate), the way mlx-lm's KV caches write.
        p = state["pos"] % context
        for r in rings:
            r[:, :, p : p + 1, :] = new
        state["pos"] += 1
        mx.eval(rings)

    def write_scatter() -> None:
        nonlocal rings
        idx = mx.broadcast_to(mx.array(state["pos"] % context, dtype=mx.int32).reshape(1, 1, 1, 1), new.shape)
        rings = [mx.put_along_axis(r, idx, new, axis=2) for r in rings]
        state["pos"] += 1
        mx.eval(rings)

    def write_compiled() -> None:
        nonlocal rings
        slot = mx.array([state["pos"] % context])
        old, rings = rings, []
        rings = [put(r, new, slot) for r in old]
        del old
        state["pos"] += 1
        mx.eval(rings)

    scale = head_dim**-0.5
    bool_mask = (mx.arange(context) < context // 10)[None, None, None, :]  # 10 % of the ring written
    prefix = context // 10

    def sdpa(kind: str) -> None:
        outs = []
        for r in rings:
            if kind == "none":
                outs.append(mx.fast.scaled_dot_product_attention(q, r, r, scale=scale))
            elif kind == "mask":
                outs.append(mx.fast.scaled_dot_product_attention(q, r, r, scale=scale, mask=bool_mask))
            else:
                k = r[:, :, :prefix]
                outs.append(mx.fast.scaled_dot_product_attention(q, k, k, scale=scale))
        mx.eval(outs)

    ring_gb = 2 * layers * batch * heads * context * head_dim * (2 if dtype == mx.bfloat16 else 4) / 1e9
    return {
        "runtime": "mlx-attention",
        "device": str(mx.default_device()),
        "batch": batch,
        "ring_gb_k_and_v": round(ring_gb, 2),
        "write_eager_ms": _median_ms(write_eager, trials),  # K only: x2 for K and V
        "write_compiled_ms": _median_ms(write_compiled, trials),
        "write_static_ms": _median_ms(write_static, trials),
        "write_scatter_ms": _median_ms(write_scatter, trials),
        "sdpa_nomask_ms": _median_ms(lambda: sdpa("none"), trials),
        "sdpa_boolmask_ms": _median_ms(lambda: sdpa("mask"), trials),
        "sdpa_prefix10pct_ms": _median_ms(lambda: sdpa("prefix"), trials),
    }


def _visible_reference(pos: int, start: list[int], cap: int, context: int, length: int) -> np.ndarray:
    """[B, length] bool by simulating the ring: slot j holds the newest position p <= pos with
    p % cap == j (none yet: invisible); a row sees it when p >= start and pos - p < context, and a
    row still in its padding (pos < start) sees only the slot it just wrote."""
    out = np.zeros((len(start), length), dtype=bool)
    for b, s in enumerate(start):
        for j in range(length):
            held = pos - (pos - j) % cap  # Python's %: >= 0
            out[b, j] = (0 <= held and held >= s and pos - held < context) or (pos < s and j == pos % cap)
    return out


def _attention_reference(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, visible: np.ndarray, scale: float
) -> np.ndarray:
    """q [B, H, 1, Dh], k / v [B, H, L, Dh], visible [B, L] -> masked softmax attention (float64)."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) * scale  # [B, H, 1, L]
    scores = np.where(visible[:, None, None, :], scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w /= w.sum(axis=-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", w, v)


def _rel_err(out: mx.array, ref: np.ndarray) -> float:
    got = np.array(out.astype(mx.float32)).astype(np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


def _ring_attention_with(
    switch: bool,
    q: mx.array,
    k_buf: mx.array,
    v_buf: mx.array,
    pos: mx.array,
    start: mx.array,
    context: int,
    length: int,
    scale: float,
) -> tuple[mx.array, bool]:
    """`masked_step_attention` with the kernels asked for (`switch`, on CUDA) or not -> (out,
    whether the CUDA kernels ran)."""
    from rolekit.nn import ring_attention as ra
    from rolekit.nn.kernels import Kernels

    ran = switch and Kernels.for_device().ring_attention and ra.covers(q, k_buf, v_buf, length, context)
    out = ra.masked_step_attention(q, k_buf, v_buf, pos, start, context, length, scale, use_kernel=ran)
    mx.eval(out)
    return out, ran


def check_ring_attention(seed: int = 0) -> list[dict[str, Any]]:
    """Ring attention before the wrap (one wrapped ring with context < C, one growing ring with C <
    context): the kernel path
    (asked for) and MLX's masked SDPA (not asked for) against an fp32 reference.

    Rows {case, dtype, rel_err (the path `masked_step_attention` takes with the switch on),
    mlx_rel_err, ran (whether that was the CUDA kernel), ok}; ok: finite and rel_err below 1e-2
    (bf16) / 1e-4 (fp32). Ring slots past `length` hold NaN: a kernel reading them fails."""
    from rolekit.engine.compiled import CompiledStep, prefix_length

    head_dim = 128
    scale = head_dim**-0.5
    cases: list[tuple[str, int, int, int, int, int, list[int]]] = []  # name, B, H, C, pos, context, start
    for cap in (512, 4096):
        for batch, start in ((1, [0]), (2, [0, 37])):
            for pos in (0, 5, 300) + ((3000,) if cap == 4096 else ()):
                cases.append((f"B{batch}-H4-C{cap}-pos{pos}", batch, 4, cap, pos, cap, start))
    cases.append(("B2-H32-C4096-pos300", 2, 32, 4096, 300, 4096, [0, 37]))
    cases.append(("B1-H32-C4096-pos3000", 1, 32, 4096, 3000, 4096, [0]))
    cases.append(("wrapped-B2-H4-C512-ctx400-pos700", 2, 4, 512, 700, 400, [0, 37]))
    cases.append(("wrapped-padded-B2-H4-C512-ctx400-pos700", 2, 4, 512, 700, 400, [0, 650]))
    # a growing ring (`LmCache.reserve`) smaller than the context, before it is grown again
    cases.append(("growing-B2-H32-C512-ctx3000-pos500", 2, 32, 512, 500, 3000, [0, 37]))

    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for name, batch, heads, cap, pos, context, start in cases:
        length = prefix_length(pos + 1, cap, CompiledStep.MIN_PREFIX)
        q_np = rng.standard_normal((batch, heads, 1, head_dim), dtype=np.float32)
        kv_np = []
        for _ in range(2):
            ring = np.full((batch, heads, cap, head_dim), np.nan, dtype=np.float32)  # never read
            ring[:, :, :length] = rng.standard_normal((batch, heads, length, head_dim), dtype=np.float32)
            kv_np.append(ring)
        visible = _visible_reference(pos, start, cap, context, length)
        pos_mx = mx.array(pos, dtype=mx.int32)
        start_mx = mx.array(np.asarray(start, dtype=np.int32))
        for dtype, tol in ((mx.bfloat16, 1e-2), (mx.float32, 1e-4)):
            q, k_buf, v_buf = (mx.array(a).astype(dtype) for a in (q_np, *kv_np))
            mx.eval(q, k_buf, v_buf)
            # reference from the dtype-rounded inputs
            q_r, k_r, v_r = (
                np.array(a.astype(mx.float32)) for a in (q, k_buf[:, :, :length], v_buf[:, :, :length])
            )
            ref = _attention_reference(q_r, k_r, v_r, visible, scale)

            args = (q, k_buf, v_buf, pos_mx, start_mx, context, length, scale)
            out, ran = _ring_attention_with(True, *args)
            mlx_out, _ = _ring_attention_with(False, *args)
            assert out.shape == (batch, heads, 1, head_dim) and out.dtype == dtype
            err = _rel_err(out, ref)
            rows.append(
                {
                    "case": name,
                    "dtype": str(dtype).split(".")[-1],
                    "rel_err": err,
                    "mlx_rel_err": _rel_err(mlx_out, ref),
                    "ran": ran,
                    "ok": bool(np.isfinite(err) and err < tol),
                }
            )
    return rows
