"""Parity on the default GPU dtype: bf16 weights and activations against Kyutai's PyTorch moshi in
bf16 (tiny random model, teacher-forced). bf16 is approximate (moshi.md P16: even torch's own
streaming and whole-sequence runs differ by ~3e-2), so the contract is top-1 agreement >= 99 %
and a bounded logit error; the fp32 tests stay token-exact."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

pytestmark = pytest.mark.oracle

STEPS = 80  # context 24: the ring wraps


@pytest.fixture(scope="module")
def bf16_pair(oracle, tmp_path_factory, tokens):
    from rolekit.lm.config import tiny
    from rolekit.lm.weights import load_lm

    torch = oracle.torch()
    cfg = tiny()
    model = oracle.build(cfg, seed=2)
    folder = tmp_path_factory.mktemp("bf16")
    oracle.save(model, folder, dtype=torch.bfloat16)
    oracle.write_config(cfg, folder)
    model = model.to(torch.bfloat16)
    seq = tokens(cfg, batch=2, steps=STEPS, seed=4)
    with torch.no_grad():
        hidden, text_logits = model.forward_text(seq)
        dep_logits = model.forward_depformer_training(seq, hidden)  # [B, dep_q, T, card]
    ref = {
        "text": text_logits[:, 0].float().numpy(),
        "dep": dep_logits.float().numpy(),
        "hidden": hidden.float().numpy(),  # bf16 values, exact in fp32
    }
    return cfg, load_lm(folder, mx.bfloat16), seq, ref


def _agreement(ours: np.ndarray, ref: np.ndarray) -> float:
    return float((ours.argmax(-1) == ref.argmax(-1)).mean())


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_bf16_text_logits_agree_with_torch_bf16(bf16_pair):
    cfg, lm, seq, ref = bf16_pair
    assert lm.dtype == mx.bfloat16
    toks = mx.array(seq.numpy().astype(np.int32))
    cache = lm.make_cache(2)
    steps = [
        lm.temporal(lm.embed(toks[:, :, t : t + 1]), cache)[1] for t in range(STEPS)
    ]  # as generation runs
    ours = np.array(mx.concatenate(steps, axis=1).astype(mx.float32))
    assert _agreement(ours, ref["text"]) >= 0.99
    assert _rel(ours, ref["text"]) < 0.1


def test_bf16_depformer_logits_agree_with_torch_bf16(bf16_pair):
    """Teacher-forced: the reference's temporal output and tokens in, all 16 steps' logits out."""
    cfg, lm, seq, ref = bf16_pair
    toks = seq.numpy().astype(np.int32)
    hidden = mx.array(ref["hidden"]).astype(mx.bfloat16)
    b, t = 2, STEPS
    got = lm.depformer_logits(
        hidden.reshape(b * t, -1),
        mx.array(toks[:, 0].reshape(-1)),
        mx.array(toks[:, 1:].transpose(0, 2, 1).reshape(b * t, -1)),
    )
    ours = np.array(got.astype(mx.float32)).reshape(b, t, cfg.dep_q, -1).transpose(0, 2, 1, 3)
    assert _agreement(ours, ref["dep"]) >= 0.99
    assert _rel(ours, ref["dep"]) < 0.1
