"""Left padding in the temporal LM cache and per-row sampling keys: every row of a batch equals its
batch-1 run (prompts of unequal length, past a ring wrap; sampled with one key per row)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.lm.config import tiny
from rolekit.lm.model import LM
from rolekit.lm.sampling import SamplingParams, sample, split_keys
from rolekit.lm.temporal import pad_rows, unpad_row
from rolekit.nn.attention import padded_mask

CTX = 8
LENGTHS = [3, 11, 7]  # prompt lengths: one shorter and one longer than the context
STEPS = 12  # one-step calls after the prompts: the ring wraps again


@pytest.fixture(scope="module")
def lm():
    mx.random.seed(5)
    model = LM(tiny(context=CTX))
    mx.eval(model.parameters())
    return model


def _tokens(seed: int, n: int) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 64, (1, 17, n)).astype(np.int32))


def _batch1(lm: LM, prompt: mx.array, steps: mx.array) -> tuple[list[np.ndarray], dict]:
    cache = lm.make_cache(1)
    h, _ = lm.temporal(lm.embed(prompt), cache)
    out = [np.array(h[0])]
    for t in range(steps.shape[2]):
        h, _ = lm.temporal(lm.embed(steps[:, :, t : t + 1]), cache)
        out.append(np.array(h[0]))
    return out, cache.snapshot()


def test_padded_mask_hides_padding_and_never_empties_a_row():
    m = padded_mask(np.arange(4), np.arange(4), 8, np.array([0, 2]))  # [B, 1, Tq, Tk]
    assert m.shape == (2, 1, 4, 4)
    assert m[0, 0].tolist() == np.tril(np.ones((4, 4), bool)).tolist()
    assert m[1, 0, 3].tolist() == [False, False, True, True]  # real query: no padded keys
    assert m[1, 0, 0].tolist() == [True, False, False, False]  # padded query: only itself
    assert m.any(axis=-1).all()


@pytest.mark.parametrize("stepwise", [False, True])
def test_left_padded_rows_equal_their_batch1_runs(lm, stepwise):
    prompts = [_tokens(i, n) for i, n in enumerate(LENGTHS)]
    steps = [_tokens(10 + i, STEPS) for i in range(len(LENGTHS))]
    longest = max(LENGTHS)
    x = mx.concatenate(
        [
            mx.concatenate([mx.zeros((1, longest - n, lm.cfg.dim)), lm.embed(p)], axis=1)
            for p, n in zip(prompts, LENGTHS, strict=True)
        ]
    )  # [B, longest, D], left-padded
    cache = lm.make_cache(len(LENGTHS))
    cache.start = longest - np.array(LENGTHS)
    if stepwise:
        hs = [lm.temporal(x[:, t : t + 1], cache)[0] for t in range(longest)]
        h = mx.concatenate(hs, axis=1)
    else:
        h, _ = lm.temporal(x, cache)
    assert cache.positions.tolist() == LENGTHS
    batch_steps = [np.array(h)]
    for t in range(STEPS):
        tok = mx.concatenate([s[:, :, t : t + 1] for s in steps])  # [B, 17, 1]
        batch_steps.append(np.array(lm.temporal(lm.embed(tok), cache)[0]))
    snap = cache.snapshot()
    for b, n in enumerate(LENGTHS):
        ref, ref_snap = _batch1(lm, prompts[b], steps[b])
        np.testing.assert_allclose(batch_steps[0][b, longest - n :], ref[0], atol=2e-5, rtol=1e-4)
        for t in range(STEPS):
            np.testing.assert_allclose(batch_steps[1 + t][b], ref[1 + t], atol=2e-5, rtol=1e-4)
        row = unpad_row(snap, b)  # the unpadded row is the batch-1 cache
        assert int(row["offset"].item()) == int(ref_snap["offset"].item()) == n + STEPS
        for k, v in ref_snap.items():
            if k.startswith("layers."):
                np.testing.assert_allclose(np.array(row[k]), np.array(v), atol=2e-5, rtol=1e-4, err_msg=k)


def test_rows_cached_unpadded_resume_under_any_padding(lm):
    """Batch-1 caches of different lengths, assembled into one batch, continue like batch-1 runs."""
    lengths = [2, 9, 5]
    prompts = [_tokens(20 + i, n) for i, n in enumerate(lengths)]
    steps = [_tokens(30 + i, 6) for i in range(3)]
    rows, refs = [], []
    for p, s in zip(prompts, steps, strict=True):
        cache = lm.make_cache(1)
        lm.temporal(lm.embed(p), cache)
        rows.append(cache.snapshot())
        refs.append(_batch1(lm, p, s)[0][1:])
    cache = lm.make_cache(3)
    cache.restore(pad_rows(rows))
    assert cache.start.tolist() == [7, 0, 4] and cache.offset == 9
    for t in range(6):
        h, _ = lm.temporal(lm.embed(mx.concatenate([s[:, :, t : t + 1] for s in steps])), cache)
        for b in range(3):
            np.testing.assert_allclose(np.array(h[b]), refs[b][t], atol=2e-5, rtol=1e-4)


def test_per_row_keys_make_each_sample_independent_of_the_batch():
    logits = mx.random.normal((3, 300), key=mx.random.key(0))
    keys = mx.stack([mx.random.key(s) for s in (4, 5, 6)])  # [B, 2]
    temps, top_k = [0.8, 1.3, 0.0], [250, 7, 0]
    rows = sample(logits, mx.array(temps), mx.array(top_k), keys)
    for b in range(3):
        one = sample(logits[b : b + 1], temps[b], top_k[b], keys[b : b + 1])
        assert one.item() == rows[b].item()
    assert rows[2].item() == mx.argmax(logits[2]).item()  # temperature 0 = greedy
    again = sample(logits, mx.array(temps), mx.array(top_k), mx.stack([mx.random.key(s) for s in (9, 5, 6)]))
    assert again[1:].tolist() == rows[1:].tolist()  # another key for row 0 changes nothing else
    split = split_keys(keys, 4)
    assert np.array_equal(np.array(split[2][1]), np.array(mx.random.split(keys[1], 4)[2]))


def test_one_batched_depformer_equals_per_row_calls(lm):
    b = 3
    hidden = mx.random.normal((b, lm.cfg.dim), key=mx.random.key(1))
    text = mx.array([5, 9, 11], dtype=mx.int32)
    provided = mx.full((b, lm.cfg.dep_q), -1, dtype=mx.int32)
    provided = mx.concatenate([provided[:, :8], mx.full((b, lm.cfg.dep_q - 8), 4, dtype=mx.int32)], axis=1)
    params = SamplingParams(audio_temperature=mx.array([0.8, 1.5, 0.0]), audio_top_k=mx.array([250, 3, 0]))
    keys = mx.stack([mx.random.key(s) for s in (1, 2, 3)])
    batched = lm.depformer(hidden, text, provided, params, keys)  # [B, dep_q]
    temps, tops = [0.8, 1.5, 0.0], [250, 3, 0]
    for r in range(b):
        p = SamplingParams(audio_temperature=temps[r], audio_top_k=tops[r])
        one = lm.depformer(hidden[r : r + 1], text[r : r + 1], provided[r : r + 1], p, keys[r : r + 1])
        assert np.array(one)[0].tolist() == np.array(batched)[r].tolist(), f"row {r}"
    assert (np.array(batched)[:, 8:] == 4).all()  # provided columns come back as given
