"""The temporal-step kernel (`rolekit.lm.temporal_cuda`) checked on the GPU (the `gpu`-marked test
in test_temporal_cuda.py; on CPU through its contract in place of the kernel).
After a prefill of `prefill` positions through the op path (batch > 1: row b left-padded by 3 b
positions), for `steps` steps of random inputs:
- the kernel's hidden state and keys/values against its contract `temporal_cuda.reference` (fp32
  MLX ops on the same dequantized weights; MLX may run its fp32 products in TF32 on the GPU) and
  against the op path in the activation dtype (`lm.transformer`, informative: bf16 rounding);
- that the kernel wrote its keys and values into the rings in place (slot pos % C);
- the barrier's timeout flag; its stages' GPU time from block 0's global-timer stamps (per stage
  kind: whole, and block 0's own work; reported, never asserted).
The op path then advances the cache, so every step starts from the same rings on both sides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.engine.compiled import CompiledStep
from rolekit.lm import temporal_cuda
from rolekit.nn import grid
from rolekit.nn.attention import attended
from rolekit.nn.kernels import Kernels, TemporalTuning
from rolekit.randlm import build_lm, lm_config

STAGES = ("qkv", "attention", "out", "gate", "down")


def _rel(a: mx.array, b: mx.array) -> float:
    a, b = a.astype(mx.float32), b.astype(mx.float32)
    return float((mx.sqrt(mx.sum((a - b) ** 2)) / mx.maximum(mx.sqrt(mx.sum(b**2)), 1e-30)).item())


def check_temporal_kernel(
    size: str = "full",
    quant: str = "q4",
    batch: int = 1,
    steps: int = 4,
    prefill: int = 100,
    layers: int = 0,
    context: int = 0,
    heads: int = 0,
    seed: int = 0,
    tunes: str = "",
    ring_floor: int = 0,
) -> dict[str, Any]:
    """`ok`: the kernel ran, no timeout, hidden and keys within 2e-3 of the fp32 contract at every step.
    `layers` / `context` / `heads` > 0 change the model (e.g. a context the prefill wraps);
    `ring_floor` > 0 the growing ring's first size (the steps then cross a growth).
    `tunes`: kernel shapes to run after the default one on the same model, "-" between them, "/"
    between their `TemporalTuning` fields (e.g. "slot_passes=2-prefetch=0/words=8"): each gets its own
    `steps` steps, reported under `tunes`."""
    cfg = lm_config(size)
    if layers:
        cfg = dataclasses.replace(cfg, num_layers=layers)
    if context:
        cfg = dataclasses.replace(cfg, context=context)
    if heads:
        cfg = dataclasses.replace(cfg, num_heads=heads)
    lm = build_lm(cfg, quant, seed)
    if ring_floor:  # the ring's first size (`LM.make_cache`), so that a short run grows it
        lm.ring_floor = ring_floor
    packed = temporal_cuda.pack(lm)
    row: dict[str, Any] = {"quant": quant, "batch": batch, "layers": cfg.num_layers, "context": cfg.context}
    row["packed"] = packed is not None
    cache = lm.make_cache(batch)
    row["ran"] = packed is not None and temporal_cuda.covers(lm, batch, cache.rings[0].keys.dtype)
    if not row["ran"]:
        row["ok"] = False
        return row
    rng = np.random.default_rng(seed)
    start = np.arange(batch, dtype=np.int64) * 3
    cache.start = start if start.any() else None
    x0 = mx.array(rng.standard_normal((batch, prefill, cfg.dim)).astype(np.float32)).astype(lm.dtype)
    lm.transformer(x0, cache)
    mx.eval(*cache.arrays())
    row.update(_steps(lm, cache, start, rng, steps, TemporalTuning()))
    row["tunes"] = {}
    for tune in filter(None, tunes.split("-")):
        tuning = Kernels().with_values({"temporal_tuning": tune}).temporal_tuning
        try:
            row["tunes"][tune] = _steps(lm, cache, start, rng, steps, tuning)
        except Exception as e:  # a shape the device refuses (e.g. registers): reported, not fatal
            row["tunes"][tune] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return row


def _steps(
    lm: Any, cache: Any, start: np.ndarray, rng: np.random.Generator, steps: int, tune: TemporalTuning
) -> dict[str, Any]:
    """`steps` kernel steps from the cache's position, each checked, then taken by the op path."""
    cfg = lm.cfg
    batch = len(start)
    start_mx = mx.array(start.astype(np.int32))
    worst = {"hidden_vs_ref": 0.0, "kv_vs_ref": 0.0, "hidden_vs_ops": 0.0, "kv_vs_ops": 0.0}
    timed_out = False
    stages = None
    probes = None
    in_place = getattr(temporal_cuda.launch, "__name__", "") == "launch"  # not a CPU stand-in
    written = True
    for _ in range(steps):
        pos = cache.offset
        cache.reserve(pos + 1)  # a growing ring (`LM.make_cache`) gets room first, as in the engine
        cap = cache.rings[0].capacity
        length, _ = attended(pos, cap, cfg.context, start, CompiledStep.MIN_PREFIX)  # as the engine
        x = mx.array(rng.standard_normal((batch, cfg.dim)).astype(np.float32)).astype(lm.dtype)
        ks = [r.keys for r in cache.rings]
        vs = [r.values for r in cache.rings]
        args = (lm, x, mx.array(pos, dtype=mx.int32), start_mx, ks, vs, length, cfg.context)
        hidden, new_kv, scratch = temporal_cuda.launch(*args, tune)
        mx.eval(hidden, new_kv, scratch)
        timed_out |= grid.timed_out(scratch)
        if in_place:  # the kernel wrote new_kv into the rings at slot pos % C
            slot = pos % cap
            ring = mx.stack(
                [
                    mx.stack([k[:, :, slot].reshape(batch, -1), v[:, :, slot].reshape(batch, -1)])
                    for k, v in zip(ks, vs, strict=True)
                ]
            )
            written &= bool(mx.array_equal(ring, new_kv).item())
        ref_h, ref_kv, _ = temporal_cuda.reference(*args, tune)
        worst["hidden_vs_ref"] = max(worst["hidden_vs_ref"], _rel(hidden, ref_h))
        worst["kv_vs_ref"] = max(worst["kv_vs_ref"], _rel(new_kv, ref_kv))
        mx.clear_cache()  # the stamped launch's scratch is fresh device memory, not a buffer the host read
        _, _, scratch = temporal_cuda.launch(*args, tune)
        mx.eval(scratch)
        work, wait, _ = temporal_cuda.stage_us(lm, scratch, batch, length)
        probe = temporal_cuda.probe_us(lm, scratch, batch, length)
        if tune.probe:
            # attention of block 0: until its first item, rotary part, sync, slots, warp merge, block merge
            attn = np.stack([work[1::5] - probe.sum(axis=1), *probe.T], axis=1).sum(axis=0)
            probes = attn if probes is None else probes + attn
        us = np.stack([work, wait])
        stages = us if stages is None else stages + us
        ops_h = lm.transformer(x[:, None], cache)[:, 0]  # advances the cache (the op path's write)
        slot = pos % cap
        ops_kv = mx.stack(
            [
                mx.stack([r.keys[:, :, slot].reshape(batch, -1), r.values[:, :, slot].reshape(batch, -1)])
                for r in cache.rings
            ]
        )
        worst["hidden_vs_ops"] = max(worst["hidden_vs_ops"], _rel(hidden, ops_h))
        worst["kv_vs_ops"] = max(worst["kv_vs_ops"], _rel(new_kv, ops_kv))
        mx.eval(*cache.arrays())
    row: dict[str, Any] = dict(worst)
    row["timed_out"] = timed_out
    row["rings_written"] = written if in_place else None
    row["positions"] = [cache.offset - steps, cache.offset - 1]
    per = stages / steps
    # per stage kind over the layers: whole (block 0's own work, then the wait at the barrier)
    row["stage_us"] = {name: round(float(per[:, i::5].sum()), 1) for i, name in enumerate(STAGES)}
    row["work_us"] = {name: round(float(per[0, i::5].sum()), 1) for i, name in enumerate(STAGES)}
    row["gpu_us"] = round(float(per.sum()), 1)
    if probes is not None:
        row["attention_phases_us"] = [round(float(v), 1) for v in probes / steps]
    row["ok"] = (not timed_out) and written and worst["hidden_vs_ref"] < 2e-3 and worst["kv_vs_ref"] < 2e-3
    return row
