"""Micro-benchmark of the temporal attention's memory traffic at real shapes: the ring KV write
(slice_update of a [B, H, C, Dh] buffer per layer) and SDPA over the ring, with and without a mask.

Each measurement runs `layers` independent buffers per evaluation, like the 32 layers of one step,
and reports ms per step (all layers). A ring write that is donated costs ~nothing; one that copies
moves the whole ring (2 x B x 24.6 MB per layer in bf16).
"""

from __future__ import annotations

import time
from typing import Any

import mlx.core as mx


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
