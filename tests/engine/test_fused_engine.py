"""The engine's compiled step through rolekit.nn.fused's block kernels and rolekit.nn.ring_attention's
masked attention kernels, with float32 stand-ins for the CUDA kernels (the `kernel_model` fixture of tests/conftest.py): every
block product reaches the kernel, and the tokens equal the MLX path's."""

from __future__ import annotations

import numpy as np

from rolekit.engine.engine import Engine
from rolekit.lm.sampling import SamplingParams
from rolekit.nn import ring_attention
from rolekit.nn.kernels import OPS, Kernels
from tests.engine.conftest import user_frames


def test_engine_steps_through_the_kernels_with_the_same_tokens(tiny_bundle, kernel_model, monkeypatch):
    """The tiny engine's compiled step with the kernel stand-in gives the tokens of the MLX path,
    and every block product of the temporal and depformer layers went to the kernel. (The shared
    bundle's Mimi keeps its CPU layout: its kernels are tested in tests/codec/test_mimi_fused.py.)"""
    import rolekit.codec.compiled as compiled_mimi

    monkeypatch.setattr(compiled_mimi, "rows_layout", lambda transformer: None)
    frames = user_frames(6, 3)
    params = SamplingParams(greedy=True)

    def run(kernels: Kernels) -> np.ndarray:
        engine = Engine(tiny_bundle, 1, params, 5, compiled=True, kernels=kernels)
        out = [engine.step(frames[:, i]) for i in range(frames.shape[1])]
        return np.array([np.concatenate([o.text, o.audio[0]]) for o in out if o.ready])

    with_kernel = run(Kernels(fused=True))
    cfg = tiny_bundle.lm.cfg
    # counted per trace of the compiled step (one here: the ring does not wrap in 6 frames)
    dep_steps = Engine(tiny_bundle, 1, params, 5).dep_steps
    assert len(kernel_model) == 4 * cfg.num_layers + dep_steps * (1 + 4 * cfg.depformer_num_layers)
    n = len(kernel_model)
    np.testing.assert_array_equal(with_kernel, run(OPS))
    assert len(kernel_model) == n  # the op path never reached the kernel


def test_masked_steps_hand_position_padding_and_prefix_to_the_ring_kernel(tiny_bundle, monkeypatch):
    """The temporal attention of a masked compiled step gives ring_attention's kernel what the mask is
    built from (stand-in: its own MLX fallback): same tokens as MLX's masked attention."""
    calls = []
    real = ring_attention.masked_step_attention

    def fake_kernel(q, k_buf, v_buf, pos, start, context, length, scale):
        calls.append((length, context))
        return real(q, k_buf, v_buf, pos, start, context, length, scale, use_kernel=False)

    frames = user_frames(5, 4)

    def run(kernels: Kernels) -> np.ndarray:
        engine = Engine(tiny_bundle, 1, SamplingParams(greedy=True), 6, compiled=True, kernels=kernels)
        out = [engine.step(frames[:, i]) for i in range(frames.shape[1])]
        return np.array([np.concatenate([o.text, o.audio[0]]) for o in out if o.ready])

    want = run(OPS)
    monkeypatch.setattr(ring_attention, "covers", lambda *a: True)
    monkeypatch.setattr(ring_attention, "_kernel_attention", fake_kernel)
    got = run(Kernels(ring_attention=True))
    np.testing.assert_array_equal(got, want)
    assert calls and all(c == (calls[0][0], tiny_bundle.lm.cfg.context) for c in calls)


def test_compiled_engine_runs_the_depformer_kernel_with_the_same_tokens(
    tiny_bundle, dep_kernel_model, monkeypatch
):
    """Sampled batch-2 conversations through the compiled step with the depformer kernel's float32
    stand-in (`dep_kernel_model`) give the tokens of the MLX depformer: the per-row keys, the
    noise, the given user codebooks and the step count reach the kernel as the op path uses them."""

    frames = user_frames(6, 3, batch=2)
    params = SamplingParams()

    def run(kernels: Kernels) -> np.ndarray:
        engine = Engine(tiny_bundle, 2, params, [5, 6], compiled=True, kernels=kernels)
        out = [engine.step(frames[:, i]) for i in range(frames.shape[1])]
        return np.array([np.concatenate([o.text, o.audio.reshape(-1)]) for o in out if o.ready])

    try:
        with_kernel = run(Kernels(depformer=True))
        assert dep_kernel_model and all(
            c["B"] == 2 and c["NS"] == 8 and not c["GREEDY"] for c in dep_kernel_model
        )
        n = len(dep_kernel_model)
        np.testing.assert_array_equal(with_kernel, run(OPS))
        assert len(dep_kernel_model) == n
    finally:
        tiny_bundle.lm.__dict__.pop("_dep_packed", None)
