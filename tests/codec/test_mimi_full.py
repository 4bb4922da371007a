"""MLX Mimi vs Kyutai's PyTorch MimiModel at the real size (random weights, 8 of 32 codebooks)."""

import mlx.core as mx
import numpy as np
import pytest

from rolekit.bench.kyutai_mimi import build_reference, save_reference
from rolekit.codec.config import mimi_202407
from rolekit.codec.weights import load_mimi

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

FRAMES = 3


@pytest.fixture(scope="module")
def models(tmp_path_factory, oracle):
    ref = build_reference(mimi_202407(), seed=11)
    path = save_reference(
        ref, tmp_path_factory.mktemp("mimi") / "tokenizer-e351c8d8-checkpoint125.safetensors"
    )
    return ref, load_mimi(path.parent)  # a folder holding the Kyutai file name


def test_full_size_whole_clip(models, oracle):
    ref, mimi = models
    torch = oracle.torch
    pcm = oracle.make_pcm(1, FRAMES, seed=12)
    with torch.no_grad():
        x = torch.from_numpy(pcm)
        ref_codes = ref.encode(x).numpy()
        latent = ref._encode_to_unquantized_latent(x).numpy()
        ref_pcm = ref.decode(torch.from_numpy(ref_codes)).numpy()
    codes = np.array(mimi.encode(mx.array(pcm)))
    assert codes.shape == (1, 8, FRAMES)
    oracle.assert_codes_match(codes, ref_codes, ref, latent)
    assert oracle.rel_err(np.array(mimi.decode(mx.array(ref_codes))), ref_pcm) <= 1e-4


def test_full_size_streaming(models, oracle):
    ref, mimi = models
    pcm = oracle.make_pcm(1, FRAMES, seed=13)
    ref_codes, ref_pcm = oracle.torch_stream(ref, pcm)
    codes, out = oracle.mlx_stream(mimi, pcm)
    with oracle.torch.no_grad():
        latent = ref._encode_to_unquantized_latent(oracle.torch.from_numpy(pcm)).numpy()
    oracle.assert_codes_match(codes, ref_codes, ref, latent)
    assert oracle.rel_err(out, ref_pcm) <= 1e-4
    # streaming equals whole clip on our side too (no wrap within 3 frames)
    np.testing.assert_array_equal(codes, np.array(mimi.encode(mx.array(pcm))))
    assert oracle.rel_err(out, np.array(mimi.decode(mx.array(codes)))) <= 1e-5
