"""`benchmarks/lm.py`: the lab LM step on `rolekit.randlm`'s random model: well-formed results
next to Kyutai's LMGen, and the compiled stepper's tokens. No timing assertions."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from benchmarks.lm import CompiledLmStepper, LmStepper, bench_lm_with_reference
from rolekit.engine.step import EagerStep
from rolekit.frames import MAX_DELAY
from rolekit.lm.sampling import SamplingParams
from rolekit.randlm import build_lm, lm_config


def _check_stats(stats: dict, n: int) -> None:
    assert stats["n"] == n
    for key in ("median", "p10", "p90", "min"):
        assert isinstance(stats[key], float) and stats[key] > 0
    assert stats["min"] <= stats["p10"] <= stats["median"] <= stats["p90"]


def test_bench_lm_is_well_formed_next_to_the_reference():
    ours, ref = bench_lm_with_reference("tiny", batch=1, steps=3, warmup=1)
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


@pytest.mark.parametrize("quant", ["fp32", "q4"])
def test_compiled_lm_stepper_equals_the_eager_step_across_the_ring_wrap(quant):
    """`bench_lm(compiled=True)` times the engine's compiled step: greedy, its tokens equal those of
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
