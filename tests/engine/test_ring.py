"""The token ring (numpy and MLX) against a literal transcription of NVIDIA's LMGen bookkeeping."""

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
        ring = R.provide(xp, ring, xp.array(tokens.astype(np.int32)), xp.array(mask), offset, initial)
        if offset == 0:
            assert prepared is None
            ring = R.prime(xp, ring, initial)
            offset = 1
            np.testing.assert_array_equal(_to_np(ring.cache), nv.cache)
            continue
        np.testing.assert_array_equal(_to_np(R.model_input(xp, ring, offset)), prepared[0])
        s_text = rng.integers(0, TEXT_CARD, (B,))
        s_audio = rng.integers(0, CARD, (B, 16))
        nv_text, nv_target, nv_prov = nv.forced(prepared, s_text)
        np.testing.assert_array_equal(_to_np(R.forced_text(xp, ring, offset, xp.array(s_text))), nv_text)
        dep = _to_np(R.depformer_provided(xp, ring, offset, 16))
        np.testing.assert_array_equal(dep, np.where(nv_prov, nv_target, -1))
        ring = R.commit(xp, ring, offset, xp.array(s_text), xp.array(s_audio))
        out = nv.process(s_text, s_audio)
        if out is None:
            assert offset <= 1
        else:
            np.testing.assert_array_equal(_to_np(R.output(xp, ring, offset)), out[:, :9])
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
        ring = R.provide(np, ring, user, mask, offset, initial)
        if offset == 0:
            ring = R.prime(np, ring, initial)
            continue
        fed.append(R.model_input(np, ring, offset)[0])
        ring = R.commit(np, ring, offset, np.array([offset]), np.full((1, 8), 10 * offset))
    fed = np.stack(fed)
    assert fed[0, 9] == CARD and fed[0, 10] == CARD  # call 1 feeds the start tokens (frame 0 dropped)
    assert fed[1, 9] == 101 and fed[1, 10] == CARD  # call 2: user cb0 of frame 1, cb1 still initial
    assert fed[2, 9] == 102 and fed[2, 10] == 101  # acoustic codebooks one frame later
    out = R.output(np, ring, 5)  # call 5 wrote text 5, audio 50 at column 5
    assert out[0, 0] == 4 and out[0, 1] == 40 and out[0, 2] == 50
