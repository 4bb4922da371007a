"""The token ring (numpy and MLX) against a literal transcription of NVIDIA's LMGen bookkeeping."""

import re

import mlx.core as mx
import numpy as np
import pytest

from rolekit.engine import ring as R
from tests.engine.nv_lmgen import NvLMGenTokens

TEXT_CARD, CARD = 1000, 2048


def _to_np(x):
    return np.asarray(x)


@pytest.mark.parametrize("xp", [np, mx], ids=["numpy", "mlx"])
def test_ring_matches_nvidia_lmgen(xp):
    rng = np.random.default_rng(0)
    B, calls = 3, 40
    nv = NvLMGenTokens(B, TEXT_CARD, CARD)
    ring = R.new_ring(xp, B)
    initial = R.initial_tokens(xp, TEXT_CARD, CARD)
    offset = 0
    for call in range(calls):
        # Prompt-like calls provide everything; conversation calls provide the user stream only.
        give_user = call % 7 != 3
        give_agent = call < 12 or call % 5 == 0
        give_text = call < 15 or call % 4 == 0
        user = rng.integers(0, CARD, (B, 8))
        agent = rng.integers(0, CARD, (B, 8))
        text = rng.integers(0, TEXT_CARD, (B,))
        prepared = nv.prepare(
            user if give_user else None, agent if give_agent else None, text if give_text else None
        )
        tokens = np.concatenate([text[:, None], agent, user], axis=1)
        mask = np.zeros((B, 17), bool)
        mask[:, 0] = give_text
        mask[:, 1:9] = give_agent
        mask[:, 9:] = give_user
        at = R.columns(xp, offset)
        ring = R.provide(xp, ring, xp.array(tokens.astype(np.int32)), xp.array(mask), at, initial)
        if offset == 0:
            assert prepared is None
            ring = R.prime(xp, ring, initial)
            offset = 1
            np.testing.assert_array_equal(_to_np(ring.cache), nv.cache)
            continue
        np.testing.assert_array_equal(_to_np(R.model_input(xp, ring, at)), prepared[0])
        s_text = rng.integers(0, TEXT_CARD, (B,))
        s_audio = rng.integers(0, CARD, (B, 16))
        nv_text, nv_target, nv_prov = nv.forced(prepared, s_text)
        np.testing.assert_array_equal(_to_np(R.forced_text(xp, ring, at, xp.array(s_text))), nv_text)
        dep = _to_np(R.depformer_provided(xp, ring, at, 16))
        np.testing.assert_array_equal(dep, np.where(nv_prov, nv_target, -1))
        ring = R.commit(xp, ring, at, xp.array(s_text), xp.array(s_audio))
        out = nv.process(s_text, s_audio)
        if out is None:
            assert offset <= 1
        else:
            np.testing.assert_array_equal(_to_np(R.output(xp, ring, at)), out[:, :9])
        offset += 1
        np.testing.assert_array_equal(_to_np(ring.cache), nv.cache)
        np.testing.assert_array_equal(_to_np(ring.provided), nv.provided)
    assert offset == nv.offset


def test_first_user_frame_is_dropped_and_outputs_undo_delays():
    """Kyutai/NVIDIA alignment: user frame u is fed at call u + delay; frame 0 never reaches the model."""
    initial = R.initial_tokens(np, TEXT_CARD, CARD)
    ring = R.new_ring(np, 1)
    mask = np.zeros((1, 17), bool)
    mask[:, 9:] = True
    fed = []
    for offset in range(6):
        user = np.full((1, 17), 100 + offset, np.int32)
        at = R.columns(np, offset)
        ring = R.provide(np, ring, user, mask, at, initial)
        if offset == 0:
            ring = R.prime(np, ring, initial)
            continue
        fed.append(R.model_input(np, ring, at)[0])
        ring = R.commit(np, ring, at, np.array([offset]), np.full((1, 8), 10 * offset))
    fed = np.stack(fed)
    assert fed[0, 9] == CARD and fed[0, 10] == CARD  # call 1 feeds the start tokens (frame 0 dropped)
    assert fed[1, 9] == 101 and fed[1, 10] == CARD  # call 2: user cb0 of frame 1, cb1 still initial
    assert fed[2, 9] == 102 and fed[2, 10] == 101  # acoustic codebooks one frame later
    out = R.output(np, ring, R.columns(np, 5))  # call 5 wrote text 5, audio 50 at column 5
    assert out[0, 0] == 4 and out[0, 1] == 40 and out[0, 2] == 50


def test_the_device_does_no_index_arithmetic_in_a_step_s_ring_work(tmp_path):
    """The engine makes a step's ring columns on the host (`step_columns`); what is left on the
    device is selects and column reads. Each distinct fused chain of a step is a kernel that a
    machine without MLX's kernel cache compiles, one at a time (bench/RESULTS.md)."""
    B = 2
    at = R.unpack(mx.array(R.pack(np, R.step_columns(np, np.array([5, 9])))))
    ring = R.Ring(cache=mx.zeros((B, 17, R.CT), mx.int32), provided=mx.zeros((B, 17, R.CT), mx.bool_))
    ring = R.provide(mx, ring, mx.ones((B, 17), mx.int32), None, at, R.initial_tokens(mx, TEXT_CARD, CARD))
    fed = R.model_input(mx, ring, at)
    text = R.forced_text(mx, ring, at, mx.zeros((B,), mx.int32))
    given = R.depformer_provided(mx, ring, at, 8)
    ring = R.commit(mx, ring, at, text, mx.zeros((B, 8), mx.int32))
    out = R.output(mx, ring, at)
    mx.export_to_dot(str(tmp_path / "ring.dot"), fed, text, given, out, ring.cache, ring.provided)
    ops = set(re.findall(r'label ="(\w+)"', (tmp_path / "ring.dot").read_text()))
    assert {"Select", "Sum"} <= ops  # the ring's work was traced
    arithmetic = {
        "Remainder",
        "Add",
        "Subtract",
        "Equal",
        "NotEqual",
        "Less",
        "LessEqual",
        "Greater",
        "GreaterEqual",
    }
    assert not ops & arithmetic


def test_the_columns_repeat_every_ct_calls_past_the_delays():
    """`same_columns` keys the engine's cache of a step's columns: equal keys, equal columns."""
    offsets = np.arange(0, 40)
    keys = R.same_columns(offsets)
    assert keys.max() <= R.MAX_DELAY + R.CT and (keys % R.CT == offsets % R.CT).all()
    assert len(set(keys.tolist())) == R.MAX_DELAY + 1 + R.CT
    for o, k in zip(offsets, keys, strict=True):
        np.testing.assert_array_equal(R.pack(np, R.step_columns(np, o)), R.pack(np, R.step_columns(np, k)))
