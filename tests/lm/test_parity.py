"""Parity of the MLX LM with Kyutai's PyTorch moshi 0.2.13 (fp32, tiny random PersonaPlex-shaped model)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.lm.sampling import SamplingParams

pytestmark = pytest.mark.oracle

ATOL = 2e-5


def _np(x) -> np.ndarray:
    return np.array(x)


@pytest.fixture(scope="module")
def reference(tiny_oracle, tokens, oracle):
    torch = oracle.torch()
    cfg = tiny_oracle.cfg
    seq = tokens(cfg, batch=2, steps=60)  # 60 steps > context 24: the ring wraps twice
    with torch.no_grad():
        hidden, text_logits = tiny_oracle.model.forward_text(seq)
        dep_logits = tiny_oracle.model.forward_depformer_training(seq, hidden)  # [B, dep_q, T, card]
    return seq, hidden.numpy(), text_logits[:, 0].numpy(), dep_logits.numpy()


def test_temporal_whole_sequence_matches_torch(tiny_oracle, reference):
    seq, hidden, text_logits, _ = reference
    lm = tiny_oracle.lm
    x = lm.embed(mx.array(seq.numpy().astype(np.int32)))
    h, logits = lm.temporal(x, lm.make_cache(2))
    np.testing.assert_allclose(_np(h), hidden, atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(_np(logits), text_logits, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("chunks", [[1] * 60, [5, 1, 30, 1, 23], [24, 24, 12], [50, 10]])
def test_temporal_stepwise_and_chunked_match_torch_and_whole(tiny_oracle, reference, chunks):
    seq, hidden, text_logits, _ = reference
    lm = tiny_oracle.lm
    toks = mx.array(seq.numpy().astype(np.int32))
    cache = lm.make_cache(2)
    hs, ls, t = [], [], 0
    for n in chunks:
        h, logits = lm.temporal(lm.embed(toks[:, :, t : t + n]), cache)
        hs.append(_np(h))
        ls.append(_np(logits))
        t += n
    assert cache.offset == 60
    np.testing.assert_allclose(np.concatenate(hs, 1), hidden, atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(np.concatenate(ls, 1), text_logits, atol=ATOL, rtol=1e-4)


def test_embed_zero_token_is_exact_zero(tiny_oracle):
    lm = tiny_oracle.lm
    toks = mx.full((1, 17, 2), -1, dtype=mx.int32)
    assert float(mx.abs(lm.embed(toks)).max()) == 0.0


def test_depformer_teacher_forced_matches_torch(tiny_oracle, reference):
    seq, hidden, _, dep_logits = reference
    lm, cfg = tiny_oracle.lm, tiny_oracle.cfg
    b, t = 2, seq.shape[-1]
    toks = seq.numpy().astype(np.int32)
    hid = mx.array(hidden.reshape(b * t, -1))
    text = mx.array(toks[:, 0].reshape(-1))
    audio = mx.array(toks[:, 1:].transpose(0, 2, 1).reshape(b * t, -1))
    got = _np(lm.depformer_logits(hid, text, audio)).reshape(b, t, cfg.dep_q, -1).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(got, dep_logits, atol=ATOL, rtol=1e-4)
    # Steps 9..16 attend to more than 8 earlier steps: the depformer context is dep_q, not 8.
    assert np.abs(got[:, 8:] - dep_logits[:, 8:]).max() < ATOL


def test_greedy_generation_token_exact_against_lmgen(tiny_oracle, oracle):
    """220 greedy steps of Kyutai's LMGen (dep_q 16: it generates all 17 streams) vs our LM API.

    The loop below is Kyutai's LMGen convention: call o feeds position o (initial tokens while
    o <= delay), samples position o + 1, and outputs the frame undelayed by max_delay.
    """
    torch = oracle.torch()
    from moshi.models.lm import LMGen

    cfg, lm = tiny_oracle.cfg, tiny_oracle.lm
    b, n = 2, 220
    gen = LMGen(tiny_oracle.model, use_sampling=False)
    ref = []
    with gen.streaming(b), torch.no_grad():
        for _ in range(n):
            out = gen.step(torch.zeros(b, 0, 1, dtype=torch.long))
            if out is not None:
                ref.append(out[:, :, 0].numpy())
    ref = np.stack(ref, -1)  # [B, 17, n - max_delay]

    initial = np.array([cfg.text_card] + [cfg.card] * cfg.n_q)
    delays = np.array(cfg.delays)
    cache = lm.make_cache(b)
    params = SamplingParams(greedy=True)
    provided = mx.full((b, cfg.dep_q), -1, dtype=mx.int32)
    generated: dict[int, np.ndarray] = {}
    outs = []
    for o in range(n):
        inp = np.stack([initial[k].repeat(b) if o <= delays[k] else generated[o][:, k] for k in range(17)], 1)
        hidden, text_logits = lm.temporal(lm.embed(mx.array(inp[:, :, None].astype(np.int32))), cache)
        text = mx.argmax(text_logits[:, -1], axis=-1).astype(mx.int32)
        audio = lm.depformer(hidden[:, -1], text, provided, params, None)
        generated[o + 1] = np.concatenate([_np(text)[:, None], _np(audio)], 1)
        if o + 1 > cfg.max_delay:
            outs.append(np.stack([generated[o + 1 - cfg.max_delay + delays[k]][:, k] for k in range(17)], 1))
    outs = np.stack(outs, -1)
    assert outs.shape == ref.shape == (b, 17, n - cfg.max_delay)
    assert cache.offset == n > 4 * cfg.context
    mismatch = np.argwhere(outs != ref)
    assert mismatch.size == 0, f"first mismatch (batch, stream, step): {mismatch[:3].tolist()}"
    assert len(np.unique(ref[:, 1])) > 10  # a non-degenerate run


def test_bf16_checkpoint_loads_and_stays_close(tiny_oracle, oracle, tmp_path, reference):
    """NVIDIA ships bf16: load it (fp32 compute) and compare loosely with the fp32 oracle."""
    torch = oracle.torch()
    from rolekit.lm.weights import load_lm

    oracle.save(tiny_oracle.model, tmp_path, dtype=torch.bfloat16)
    oracle.write_config(tiny_oracle.cfg, tmp_path)
    lm = load_lm(tmp_path)
    seq, hidden, text_logits, _ = reference
    _, logits = lm.temporal(lm.embed(mx.array(seq.numpy().astype(np.int32))), lm.make_cache(2))
    err = np.abs(_np(logits) - text_logits).max() / np.abs(text_logits).max()
    assert 0 < err < 0.05
    top1 = (_np(logits).argmax(-1) == text_logits.argmax(-1)).mean()
    assert top1 > 0.9
