"""`benchmarks/engine.py`: the lab engine benchmarks on the harness's own random model (a step deep
into a conversation, the memory diagnostics, the step split into phases, the prefill modes).
No timing assertions."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from benchmarks.engine import bench_engine, bench_engine_phases, bench_prefill, bench_prefill_modes


def test_bench_engine_can_start_past_the_lm_context():
    r = bench_engine("tiny", steps=2, warmup=1, compiled=True, start=300)
    assert r["start"] == 300 and r["step"]["n"] == 2 and r["step"]["median"] > 0


def test_bench_engine_memory_diagnostics_hold_and_restore():
    """`hold` keeps each array the step reads on the host (3 a ready step: pcm, tokens, user codes);
    `cache` sets MLX's buffer-cache limit for the run only."""
    from rolekit.engine import engine as engine_module

    limit = mx.set_cache_limit(1 << 30)
    try:
        r = bench_engine("tiny", steps=2, warmup=1, hold=True, cache=0)
        assert r["hold"] and r["cache"] == 0 and r["held"] >= 3 * r["step"]["n"]
        assert mx.set_cache_limit(1 << 30) == 1 << 30  # restored after the run
        assert engine_module.np is np
    finally:
        mx.set_cache_limit(limit)


def test_bench_engine_phases_splits_the_step():
    r = bench_engine_phases("tiny", steps=3, warmup=1)
    over, ser = r["overlapped"], r["serialized"]
    for m in (over, ser):
        assert m["step"]["n"] == 3 and all(m[k] > 0 for k in ("encode", "lm", "decode"))
    # building graphs is a part of the overlapped step; serialized phases include their device work
    assert over["encode"] + over["lm"] + over["decode"] < over["step"]["median"]
    assert ser["encode"] + ser["lm"] + ser["decode"] <= ser["step"]["median"] * 1.05


def test_harness_prefill_one_pass_and_modes():
    one_pass = bench_prefill("tiny", steps=1, warmup=1)
    assert one_pass["variant"] == "prefill" and one_pass["frames"] == 250 and one_pass["step"]["n"] == 1
    modes = bench_prefill_modes("tiny")
    assert modes["variant"] == "prefill-modes" and modes["frames"] == 48 + 6 + 180 + 6
    for key in ("batched_ms", "stepwise_ms", "first_run_with_save_ms", "restored_ms"):
        assert modes[key] > 0, key
    assert modes["stepwise_over_batched"] == pytest.approx(
        modes["stepwise_ms"] / modes["batched_ms"], rel=0.02
    )
