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


def _kyutai_greedy_loop(lm, cfg, batch: int, steps: int, user: np.ndarray | None) -> np.ndarray:
    """Greedy generation with our LM API in Kyutai's LMGen convention.

    Call o feeds position o (initial tokens while o <= delay), samples position o + 1, and
    outputs the frame undelayed by max_delay. User codes given at call o land at position o + delay
    (so user frame 0 is never fed: it is overwritten by the initial token). Returns the outputs of
    the dep_q + 1 generated streams, [B, dep_q + 1, steps - max_delay].
    """
    n_gen = 1 + cfg.dep_q
    initial = np.array([cfg.text_card] + [cfg.card] * cfg.n_q)
    delays = np.array(cfg.delays)
    cache = lm.make_cache(batch)
    params = SamplingParams(greedy=True)
    provided = mx.full((batch, cfg.dep_q), -1, dtype=mx.int32)
    generated: dict[int, np.ndarray] = {}
    outs = []
    for o in range(steps):
        cols = []
        for k in range(17):
            if o <= delays[k]:
                cols.append(initial[k].repeat(batch))
            elif k < n_gen:
                cols.append(generated[o][:, k])
            else:
                cols.append(user[:, k - n_gen, o - delays[k]])
        inp = np.stack(cols, 1)[:, :, None].astype(np.int32)
        hidden, text_logits = lm.temporal(lm.embed(mx.array(inp)), cache)
        text = mx.argmax(text_logits[:, -1], axis=-1).astype(mx.int32)
        audio = lm.depformer(hidden[:, -1], text, provided, params, None)
        generated[o + 1] = np.concatenate([_np(text)[:, None], _np(audio)], 1)
        if o + 1 > cfg.max_delay:
            outs.append(
                np.stack([generated[o + 1 - cfg.max_delay + delays[k]][:, k] for k in range(n_gen)], 1)
            )
    assert cache.offset == steps
    return np.stack(outs, -1)


def _lmgen_reference(model, batch: int, steps: int, user: np.ndarray | None, torch) -> np.ndarray:
    from moshi.models.lm import LMGen

    gen = LMGen(model, use_sampling=False)
    ref = []
    with gen.streaming(batch), torch.no_grad():
        for o in range(steps):
            if user is None:
                given = torch.zeros(batch, 0, 1, dtype=torch.long)
            else:
                given = torch.from_numpy(user[:, :, o : o + 1].astype(np.int64))
            out = gen.step(given)
            if out is not None:
                ref.append(out[:, :, 0].numpy())
    return np.stack(ref, -1)


def test_greedy_generation_token_exact_against_lmgen(tiny_oracle, oracle):
    """220 greedy steps of Kyutai's LMGen with dep_q 16 (it generates all 17 streams itself)."""
    torch = oracle.torch()
    cfg, lm = tiny_oracle.cfg, tiny_oracle.lm
    b, n = 2, 220
    ref = _lmgen_reference(tiny_oracle.model, b, n, None, torch)
    outs = _kyutai_greedy_loop(lm, cfg, b, n, None)
    assert outs.shape == ref.shape == (b, 17, n - cfg.max_delay)
    assert n > 4 * cfg.context  # the ring wrapped many times
    mismatch = np.argwhere(outs != ref)
    assert mismatch.size == 0, f"first mismatch (batch, stream, step): {mismatch[:3].tolist()}"
    assert len(np.unique(ref[:, 1])) > 10  # a non-degenerate run


def test_greedy_generation_with_user_stream_against_lmgen(oracle, tmp_path):
    """Moshi layout (dep_q 8): the user's 8 codebooks come from outside, 200 greedy steps."""
    torch = oracle.torch()
    from rolekit.lm.config import tiny
    from rolekit.lm.weights import load_lm

    cfg = tiny(dep_q=8, context=16)
    model = oracle.build(cfg, seed=5)
    oracle.save(model, tmp_path)
    oracle.write_config(cfg, tmp_path)
    lm = load_lm(tmp_path)
    b, n = 2, 200
    user = np.random.default_rng(9).integers(0, cfg.card, (b, 8, n))
    ref = _lmgen_reference(model, b, n, user, torch)
    outs = _kyutai_greedy_loop(lm, cfg, b, n, user)
    assert outs.shape == ref.shape == (b, 9, n - cfg.max_delay)
    mismatch = np.argwhere(outs != ref)
    assert mismatch.size == 0, f"first mismatch (batch, stream, step): {mismatch[:3].tolist()}"


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
