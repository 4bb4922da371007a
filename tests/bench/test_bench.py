"""`rolekit bench`: well-formed results from the CLI, statistics, the compiled step's tokens, the
random-checkpoint writer. No timing assertions: benchmarks are commands, not tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from rolekit.bench.lm import CompiledLmStepper, LmStepper, build_lm, lm_config
from rolekit.bench.timing import summarize
from rolekit.engine.step import EagerStep
from rolekit.frames import MAX_DELAY
from rolekit.lm.sampling import SamplingParams


def _rolekit(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_TORCH_COMPILE="1", OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "rolekit", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _check_stats(stats: dict, n: int) -> None:
    assert stats["n"] == n
    for key in ("median", "p10", "p90", "min"):
        assert isinstance(stats[key], float) and stats[key] > 0
    assert stats["min"] <= stats["p10"] <= stats["median"] <= stats["p90"]


def test_bench_lm_tiny_json_is_well_formed():
    proc = _rolekit("bench", "lm", "--size", "tiny", "--steps", "3", "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["what"] == "lm" and report["options"]["steps"] == 3
    assert {"date", "machine", "cpus"} <= set(report["host"])
    ours, ref = report["results"]
    assert ours["runtime"] == "rolekit-mlx" and ours["size"] == "tiny" and ours["batch"] == 1
    assert ours["quant"] == "fp32" and ours["dep_steps"] == 16
    _check_stats(ours["step"], 3)
    _check_stats(ours["temporal"], 1)
    _check_stats(ours["depformer"], 1)
    assert ours["params_b"] > 0 and ours["peak_rss_gb"] > 0
    # Kyutai's PyTorch LMGen at the same size, in the same process.
    assert ref["runtime"] == "kyutai-moshi-torch" and ref["dtype"] == "float32", ref
    _check_stats(ref["step"], 3)
    assert ref["params_b"] == pytest.approx(ours["params_b"], rel=0.01)
    assert ours["speedup_vs_reference"] == pytest.approx(
        ref["step"]["median"] / ours["step"]["median"], rel=0.01
    )


def test_bench_prefill_reports_batched_stepwise_and_restored():
    proc = _rolekit("bench", "prefill", "--size", "tiny", "--steps", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    one_pass, modes = json.loads(proc.stdout)["results"]
    assert one_pass["variant"] == "prefill" and one_pass["frames"] == 250
    _check_stats(one_pass["step"], 1)
    assert modes["variant"] == "prefill-modes" and modes["frames"] == 48 + 6 + 180 + 6
    for key in ("batched_ms", "stepwise_ms", "first_run_with_save_ms", "restored_ms"):
        assert modes[key] > 0, key
    assert modes["stepwise_over_batched"] == pytest.approx(
        modes["stepwise_ms"] / modes["batched_ms"], rel=0.02
    )


def test_bench_bad_option_is_a_clean_error():
    proc = _rolekit("bench", "lm", "--size", "huge", "--steps", "1")
    assert proc.returncode == 2
    assert "--size" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_table_output_and_full_size_guard():
    proc = _rolekit("bench", "lm", "--size", "tiny", "--steps", "2", "--warmup", "0", "--no-reference")
    assert proc.returncode == 0, proc.stderr
    assert "rolekit-mlx" in proc.stdout and "kyutai" not in proc.stdout
    # A full-size fp32 LM (34 GB) is refused up front on a CPU, with the way out in the message.
    proc = _rolekit("bench", "lm", "--size", "full", "--steps", "1")
    assert proc.returncode == 2 and "--quant q4" in proc.stderr and "Traceback" not in proc.stderr


def test_summarize_percentiles():
    s = summarize([float(x) for x in range(1, 11)])
    assert s == {"n": 10, "median": 5.5, "p10": 1.9, "p90": 9.1, "min": 1.0}
    assert summarize([])["n"] == 0


@pytest.mark.parametrize("quant", ["fp32", "q4"])
def test_compiled_lm_stepper_equals_the_eager_step_across_the_ring_wrap(quant):
    """`bench lm --compiled` times the engine's compiled step: greedy, its tokens equal those of
    `lm_step` called directly (EagerStep) across the ring wrap (tiny context 24, 30 frames); the
    depformer stops at 8 codebooks and the user's are the ones given."""
    lm = build_lm(lm_config("tiny"), quant)
    greedy = SamplingParams(greedy=True)
    compiled = CompiledLmStepper(lm, 2, 8, greedy, seed=3)
    eager = CompiledLmStepper(lm, 2, 8, greedy, seed=3)
    eager.step_fn = EagerStep(eager.step_fn.constants)
    outs = []
    for _ in range(30):
        a, b = compiled.step(), eager.step()
        mx.eval(*compiled.sync_arrays(), *eager.sync_arrays())
        np.testing.assert_array_equal(np.array(a), np.array(b))
        outs.append(np.array(a))
    assert compiled.cache.offset == 30 > lm.cfg.context and compiled.offset == 31
    out = np.stack(outs)[MAX_DELAY:]  # [T, B, 9] from the first frame LMGen gives (offset > MAX_DELAY)
    assert ((out[..., 0] >= 0) & (out[..., 0] < lm.cfg.text_card)).all()
    assert ((out[..., 1:] >= 0) & (out[..., 1:] < lm.cfg.card)).all()
    assert len(np.unique(out[..., 1:])) > 3  # really generating agent codes
    ring = np.array(compiled.ring.cache)
    assert np.isin(np.array(compiled.user), ring[:, 9:]).all()  # the user's codes sit in the ring


def test_eager_stepper_feeds_back_its_tokens():
    lm = build_lm(lm_config("tiny"), "fp32")
    st = LmStepper(lm, 1, greedy=True)
    first = np.array(st.step())
    assert st.cache.offset == 1 and first.shape == (1, 17, 1)
    assert (np.array(st.tokens) == first).all()


def test_random_checkpoint_converts(tmp_path):
    from rolekit.bench.convert import bench_convert

    res = bench_convert("tiny", str(tmp_path), bits=(4,))
    assert res["tensors"] > 100
    (run,) = res["runs"]
    assert run["exit_code"] == 0, run
    assert run["peak_rss_gb"] > 0 and run["seconds"] > 0
    assert not (tmp_path / "src").exists()


def test_bench_engine_can_start_past_the_lm_context():
    from rolekit.bench.engine import bench_engine

    r = bench_engine("tiny", steps=2, warmup=1, compiled=True, start=300)
    assert r["start"] == 300 and r["step"]["n"] == 2 and r["step"]["median"] > 0


def test_bench_engine_memory_diagnostics_hold_and_restore():
    """`hold` keeps each array the step reads on the host (3 a ready step: pcm, tokens, user codes);
    `cache` sets MLX's buffer-cache limit for the run only."""
    from rolekit.bench.engine import bench_engine
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
    from rolekit.bench.engine import bench_engine_phases

    r = bench_engine_phases("tiny", steps=3, warmup=1)
    over, ser = r["overlapped"], r["serialized"]
    for m in (over, ser):
        assert m["step"]["n"] == 3 and all(m[k] > 0 for k in ("encode", "lm", "decode"))
    # building graphs is a part of the overlapped step; serialized phases include their device work
    assert over["encode"] + over["lm"] + over["decode"] < over["step"]["median"]
    assert ser["encode"] + ser["lm"] + ser["decode"] <= ser["step"]["median"] * 1.05
    from rolekit.bench.runner import BenchOptions, run_bench

    rep = run_bench("phases", BenchOptions(steps=2, warmup=1))
    assert [r["bench"] for r in rep["results"]] == ["phases"]
    assert rep["results"][0]["serialized"]["step"]["n"] == 2
