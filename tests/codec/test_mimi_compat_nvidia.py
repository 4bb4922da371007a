"""`--compat nvidia` for Mimi: the streaming transformer ring of NVIDIA's fork, against Kyutai's
PyTorch Mimi with the fork's RingKVCache positions (tests/lm/nv_fork_ring.py)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from rolekit.codec.config import tiny

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.lm.nv_fork_ring import fork_ring  # noqa: E402

pytestmark = pytest.mark.oracle

FRAMES = 13  # 26 transformer steps: the context-8 ring wraps three times


def test_compat_nvidia_mimi_streams_like_the_fork(tmp_path_factory, oracle):
    from rolekit.bench.kyutai_mimi import save_reference
    from rolekit.codec.weights import load_mimi

    cfg = tiny()
    ref, mimi = oracle.pair(tmp_path_factory, cfg, seed=11)
    path = save_reference(ref, tmp_path_factory.mktemp("mimi-nv") / "tiny.safetensors")
    nv = load_mimi(path, num_codebooks=cfg.num_codebooks, cfg=cfg, compat="nvidia")
    assert nv.cfg.context == cfg.context - 1
    torch = oracle.torch
    pcm = oracle.make_pcm(1, FRAMES, seed=4)
    with fork_ring():
        fork_codes, _ = oracle.torch_stream(ref, pcm)
    codes, _ = oracle.mlx_stream(nv, pcm)
    assert (codes == fork_codes).mean() >= 0.99  # encoder: equal codes but for near-ties
    # decoder, on the same codes frame by frame: the fork's ring exactly, Kyutai's without compat
    given = np.random.default_rng(3).integers(0, 64, size=(1, cfg.num_codebooks, FRAMES))

    def torch_decode(fork: bool) -> np.ndarray:
        with torch.no_grad(), ref.streaming(1):
            with fork_ring() if fork else _nothing():
                return np.concatenate(
                    [ref.decode(torch.from_numpy(given[..., i : i + 1])).numpy() for i in range(FRAMES)], -1
                )

    def mlx_decode(model) -> np.ndarray:
        state = model.make_state(1)
        return np.concatenate(
            [
                np.array(model.decode_step(mx.array(given[..., i : i + 1].astype(np.int32)), state))
                for i in range(FRAMES)
            ],
            -1,
        )

    fork_pcm, kyutai_pcm = torch_decode(True), torch_decode(False)
    assert oracle.rel_err(mlx_decode(nv), fork_pcm) <= 1e-4
    assert oracle.rel_err(mlx_decode(mimi), kyutai_pcm) <= 1e-4
    assert oracle.rel_err(fork_pcm, kyutai_pcm) > 1e-3  # the fork's ring really differs after the wrap


@contextmanager
def _nothing():
    yield
