"""`--compat nvidia`: the temporal ring of NVIDIA's fork (one key less once the ring is full),
against Kyutai's PyTorch moshi with the fork's RingKVCache positions (tests/lm/nv_fork_ring.py)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from tests.lm.nv_fork_ring import fork_ring

pytestmark = pytest.mark.oracle

STEPS = 60  # context 24: the ring wraps twice


def _torch_stream(model, seq, torch, fork: bool) -> np.ndarray:
    outs = []
    with torch.no_grad(), model.streaming(seq.shape[0]):
        if fork:
            with fork_ring():
                outs = [model.forward_text(seq[..., t : t + 1])[1] for t in range(seq.shape[-1])]
        else:
            outs = [model.forward_text(seq[..., t : t + 1])[1] for t in range(seq.shape[-1])]
    return np.concatenate([o[:, 0].numpy() for o in outs], 1)  # [B, T, text_card]


def _mlx_stream(lm, seq) -> np.ndarray:
    toks = mx.array(seq.numpy().astype(np.int32))
    cache = lm.make_cache(seq.shape[0])
    return np.concatenate(
        [np.array(lm.temporal(lm.embed(toks[:, :, t : t + 1]), cache)[1]) for t in range(seq.shape[-1])], 1
    )


def test_compat_nvidia_lm_equals_the_fork_ring_and_kyutai_default_does_not(tiny_oracle, tokens, oracle):
    from rolekit.lm.weights import load_lm

    torch = oracle.torch()
    cfg = tiny_oracle.cfg
    seq = tokens(cfg, batch=2, steps=STEPS)
    fork = _torch_stream(tiny_oracle.model, seq, torch, fork=True)
    kyutai = _torch_stream(tiny_oracle.model, seq, torch, fork=False)
    nv = _mlx_stream(load_lm(tiny_oracle.folder, mx.float32, compat="nvidia"), seq)
    ours = _mlx_stream(tiny_oracle.lm, seq)
    np.testing.assert_allclose(nv, fork, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(ours, kyutai, atol=2e-5, rtol=1e-4)
    c = cfg.context
    # identical until the ring is full, then the two rings see different keys
    np.testing.assert_allclose(fork[:, : c - 1], kyutai[:, : c - 1], atol=2e-5, rtol=1e-4)
    assert np.abs(fork[:, c - 1 :] - kyutai[:, c - 1 :]).max() > 1e-2
