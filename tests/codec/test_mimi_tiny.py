"""MLX Mimi vs Kyutai's PyTorch MimiModel on a tiny random config (context 8: rings wrap at frame 4)."""

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from rolekit.codec.config import tiny

pytestmark = pytest.mark.oracle

FRAMES = 13  # 26 transformer steps: the context-8 ring wraps three times over


@pytest.fixture(scope="module")
def models(tmp_path_factory, oracle):
    return oracle.pair(tmp_path_factory, tiny())


def test_whole_clip_encode_decode_match_reference(models, oracle):
    ref, mimi = models
    torch = oracle.torch
    pcm = oracle.make_pcm(2, FRAMES)[..., :-700]  # not a multiple of 1920: encode pads
    with torch.no_grad():
        x = torch.from_numpy(pcm)
        ref_codes = ref.encode(x).numpy()
        latent = ref._encode_to_unquantized_latent(x).numpy()
        ref_pcm = ref.decode(torch.from_numpy(ref_codes)).numpy()
    codes = np.array(mimi.encode(mx.array(pcm)))
    assert codes.shape == (2, 4, FRAMES) and codes.dtype == np.int32
    oracle.assert_codes_match(codes, ref_codes, ref, latent)
    out = np.array(mimi.decode(mx.array(ref_codes)))
    assert out.shape == (2, 1, FRAMES * 1920)
    assert oracle.rel_err(out, ref_pcm) <= 1e-4


def test_long_whole_clip_crosses_attention_blocks_and_conv_chunks(models, oracle):
    """140 frames = 280 transformer steps (> one 256-query block) and 3 conv chunks of 50 frames."""
    ref, mimi = models
    torch = oracle.torch
    pcm = oracle.make_pcm(1, 140, seed=9)
    with torch.no_grad():
        x = torch.from_numpy(pcm)
        ref_codes = ref.encode(x).numpy()
        latent = ref._encode_to_unquantized_latent(x).numpy()
        ref_pcm = ref.decode(torch.from_numpy(ref_codes)).numpy()
    oracle.assert_codes_match(np.array(mimi.encode(mx.array(pcm))), ref_codes, ref, latent)
    assert oracle.rel_err(np.array(mimi.decode(mx.array(ref_codes))), ref_pcm) <= 1e-4


def test_streaming_matches_reference_streaming_far_past_context(models, oracle):
    """40 frames = 80 steps: the context-8 ring has wrapped ten times."""
    ref, mimi = models
    pcm = oracle.make_pcm(2, 40, seed=1)
    ref_codes, ref_pcm = oracle.torch_stream(ref, pcm)
    codes, out = oracle.mlx_stream(mimi, pcm)
    with oracle.torch.no_grad():
        latent = ref._encode_to_unquantized_latent(oracle.torch.from_numpy(pcm)).numpy()
    assert (codes == ref_codes).mean() >= 0.999
    if (codes != ref_codes).any():  # a flip must be a near-tie; judge it on the whole-clip latent
        oracle.assert_codes_match(codes, ref_codes, ref, latent, tol=1e-2)
    assert oracle.rel_err(out, ref_pcm) <= 1e-4


def test_decode_stream_vs_whole_clip_follows_the_reference_ring(models, oracle):
    """Same codes decoded frame by frame and whole: equal before the ring wraps; after it, they
    differ on both sides by the same amount (Kyutai's RingKVCache semantics, moshi.md P4)."""
    ref, mimi = models
    torch = oracle.torch
    codes = np.random.default_rng(3).integers(0, 64, size=(1, 4, FRAMES)).astype(np.int64)
    with torch.no_grad():
        ref_full = ref.decode(torch.from_numpy(codes)).numpy()
        with ref.streaming(1):
            ref_steps = np.concatenate(
                [ref.decode(torch.from_numpy(codes[..., i : i + 1])).numpy() for i in range(FRAMES)], -1
            )
    full = np.array(mimi.decode(mx.array(codes.astype(np.int32))))
    state = mimi.make_state(1)
    steps = np.concatenate(
        [
            np.array(mimi.decode_step(mx.array(codes[..., i : i + 1].astype(np.int32)), state))
            for i in range(FRAMES)
        ],
        -1,
    )
    assert oracle.rel_err(full, ref_full) <= 1e-4
    assert oracle.rel_err(steps, ref_steps) <= 1e-4
    before = 4 * 1920  # frames 0-3 = transformer steps 0-7 < context 8
    assert oracle.rel_err(steps[..., :before], full[..., :before]) <= 1e-5
    ref_gap = np.abs(ref_steps - ref_full)[..., before:].max()
    our_gap = np.abs(steps - full)[..., before:].max()
    assert ref_gap > 1e-5  # the reference itself differs once the ring wraps
    assert our_gap == pytest.approx(ref_gap, rel=0.05)


def test_stream_equals_whole_clip_without_wrap(tmp_path_factory, oracle):
    cfg = tiny(context=250)
    ref, mimi = oracle.pair(tmp_path_factory, cfg, seed=5)
    pcm = oracle.make_pcm(1, 8, seed=2)
    codes, out = oracle.mlx_stream(mimi, pcm)
    full_codes = np.array(mimi.encode(mx.array(pcm)))
    assert (codes == full_codes).mean() >= 0.999
    full = np.array(mimi.decode(mx.array(codes)))
    assert oracle.rel_err(out, full) <= 1e-5
    ref_codes, ref_out = oracle.torch_stream(ref, pcm)
    assert (codes == ref_codes).mean() >= 0.999
    assert oracle.rel_err(out, ref_out) <= 1e-4


@pytest.mark.parametrize("k", [1, 8])
def test_number_of_codebooks(tmp_path_factory, oracle, k):
    cfg = replace(tiny(), num_codebooks=k)
    ref, mimi = oracle.pair(tmp_path_factory, cfg, seed=7)
    pcm = oracle.make_pcm(1, 3, seed=4)
    with oracle.torch.no_grad():
        ref_codes = ref.encode(oracle.torch.from_numpy(pcm)).numpy()
        latent = ref._encode_to_unquantized_latent(oracle.torch.from_numpy(pcm)).numpy()
        ref_pcm = ref.decode(oracle.torch.from_numpy(ref_codes)).numpy()
    codes = np.array(mimi.encode(mx.array(pcm)))
    assert codes.shape == (1, k, 3)
    oracle.assert_codes_match(codes, ref_codes, ref, latent)
    assert oracle.rel_err(np.array(mimi.decode(mx.array(ref_codes))), ref_pcm) <= 1e-4


def test_batch_rows_are_independent(models, oracle):
    _, mimi = models
    pcm = oracle.make_pcm(3, 5, seed=6)
    codes, out = oracle.mlx_stream(mimi, pcm)
    one_codes, one_out = oracle.mlx_stream(mimi, pcm[1:2])
    np.testing.assert_array_equal(codes[1:2], one_codes)
    np.testing.assert_allclose(out[1:2], one_out, atol=1e-6)


def test_snapshot_restore_and_reset(models, oracle, tmp_path):
    _, mimi = models
    pcm = oracle.make_pcm(2, 9, seed=8)
    frames = [mx.array(pcm[..., i * 1920 : (i + 1) * 1920]) for i in range(9)]
    state = mimi.make_state(2)

    def run(chunk):
        outs = []
        for f in chunk:
            c = mimi.encode_step(f, state)
            outs.append((np.array(c), np.array(mimi.decode_step(c, state))))
        return outs

    first = run(frames[:5])
    snap = state.snapshot()
    assert all(isinstance(v, mx.array) for v in snap.values())
    after = run(frames[5:])
    # a snapshot survives a trip through a safetensors file (the engine's on-disk cache)
    path = str(tmp_path / "state.safetensors")
    mx.save_safetensors(path, snap)
    state.restore(mx.load(path))
    again = run(frames[5:])
    for (c1, p1), (c2, p2) in zip(after, again, strict=True):
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(p1, p2)
    state.reset()
    fresh = run(frames[:5])
    for (c1, p1), (c2, p2) in zip(first, fresh, strict=True):
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(p1, p2)
    with pytest.raises(ValueError):
        mimi.make_state(1).restore(snap)


def test_step_shape_errors(models):
    _, mimi = models
    state = mimi.make_state(1)
    with pytest.raises(ValueError):
        mimi.encode_step(mx.zeros((1, 1, 1000)), state)
    with pytest.raises(ValueError):
        mimi.decode_step(mx.zeros((1, 4, 2), dtype=mx.int32), state)


def test_transformer_narrower_than_latent_uses_projections(tmp_path_factory, oracle):
    """d_model != dimension: Kyutai's ProjectedTransformer adds input_proj / output_projs.0."""
    cfg = tiny(d_model=16, num_heads=2)
    ref, mimi = oracle.pair(tmp_path_factory, cfg, seed=9)
    assert "input_proj" in mimi.encoder_transformer and "output_proj" in mimi.decoder_transformer
    pcm = oracle.make_pcm(1, 5, seed=10)
    with oracle.torch.no_grad():
        x = oracle.torch.from_numpy(pcm)
        ref_codes = ref.encode(x).numpy()
        latent = ref._encode_to_unquantized_latent(x).numpy()
        ref_pcm = ref.decode(oracle.torch.from_numpy(ref_codes)).numpy()
    oracle.assert_codes_match(np.array(mimi.encode(mx.array(pcm))), ref_codes, ref, latent)
    assert oracle.rel_err(np.array(mimi.decode(mx.array(ref_codes))), ref_pcm) <= 1e-4
