"""`Kernels.dense_prompt`: a q4 or q8 checkpoint's prompt pass through MLX's dense product with each weight
dequantized (`nn.fused.dense_product`), the default on CUDA, where MLX's quantized GEMM of many rows
is compiled at run time. Here on CPU (fp32): the pass leaves MLX's quantized product to the text
head alone, and the conversation that follows is the one the quantized prompt pass gives."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from rolekit.engine.engine import Engine
from rolekit.frames import PrefillPlan
from rolekit.nn.kernels import Kernels


@pytest.fixture(scope="module", params=["q4", "q8"])
def bundle(request):
    from rolekit.codec.config import tiny as tiny_mimi
    from rolekit.codec.mimi import Mimi
    from rolekit.lm.config import tiny
    from rolekit.models import ModelBundle
    from rolekit.randlm import build_lm

    lm = build_lm(tiny(card=2048, context=64), request.param)
    mimi = Mimi(tiny_mimi(bins=2048, total_codebooks=8, num_codebooks=8, context=250))
    mimi.prepare()
    return ModelBundle(lm, mimi, None, Path("."), f"tiny-{request.param}", True)


def _run(bundle, kernels: Kernels, monkeypatch) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple]]:
    """(ring KV after the prefill, text + audio tokens of 6 greedy steps, the prefill's quantized products)."""
    from rolekit.lm.sampling import SamplingParams

    calls: list[tuple] = []
    quantized = mx.quantized_matmul

    def spy(x, w, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append((x.shape, w.shape))
        return quantized(x, w, *args, **kwargs)

    engine = Engine(bundle, batch=1, params=SamplingParams(greedy=True), kernels=kernels)
    plan = PrefillPlan(voice="x.wav", text_ids=tuple(range(5, 45)), silence_frames=2)
    voice = SimpleNamespace(codes=np.random.default_rng(0).integers(0, 2048, (8, 6)).astype(np.int32))
    with monkeypatch.context() as m:
        m.setattr(mx, "quantized_matmul", spy)
        engine.prefill([plan], [voice])
    cache = [np.array(a) for a in engine.lm_cache.arrays()]
    pcm = np.random.default_rng(1).standard_normal((6, 1, 1920)).astype(np.float32) * 0.1
    tokens = []
    for frame in pcm:
        out = engine.step(frame)
        tokens.append(np.concatenate([out.text[:, None], out.audio], axis=1))
    return cache, tokens, calls


def test_a_dense_prompt_pass_equals_the_quantized_one(bundle, monkeypatch):
    cache_q, tokens_q, calls_q = _run(bundle, Kernels(), monkeypatch)
    cache_d, tokens_d, calls_d = _run(bundle, Kernels(dense_prompt=True), monkeypatch)
    layers = bundle.lm.cfg.num_layers
    # every temporal product of the prompt (in_proj, out_proj, linear_in, linear_out per layer) went
    # dense; what is left is the text head's product, traced but never evaluated
    assert len(calls_q) == 4 * layers + len(calls_d) and len(calls_d) <= 1
    assert all(x[1] > 1 for x, _ in calls_q)  # the prompt's positions, all at once
    for a, b in zip(cache_q, cache_d, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.stack(tokens_q), np.stack(tokens_d))
