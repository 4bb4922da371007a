"""Batches of prompts of unequal length (left padding): each conversation equals its batch-1 run,
greedy and sampled, past a ring wrap; one batched prefill pass; on-disk prefill rows restore into
batches with any padding; the persona compiler's frame count equals the engine's."""

from __future__ import annotations

import numpy as np
import pytest

from rolekit import models
from rolekit.engine.engine import Engine
from rolekit.engine.offline import run_offline
from rolekit.engine.snapshot import prefill_cached, state_equal
from rolekit.errors import ConfigError
from rolekit.frames import PrefillPlan
from rolekit.lm.sampling import SamplingParams
from rolekit.persona.compile import compile_persona
from rolekit.persona.loader import load_persona
from rolekit.persona.voices import voice_file, voice_frames
from rolekit.text import TINY_TOKENIZER, Tokenizer
from tests.engine.conftest import make_plan, user_frames

GREEDY = SamplingParams(greedy=True)
HOT = SamplingParams(text_temperature=0.9, text_top_k=20, audio_temperature=0.9, audio_top_k=40)
WARM = SamplingParams(text_temperature=0.6, text_top_k=0, audio_temperature=1.1, audio_top_k=250)


def _wav_voice(bundle, seconds: float):
    pcm = models.synthetic_voice(7, seconds)
    return models.voice_from_audio(bundle.mimi, pcm, f"synthetic-{seconds}s")


def _conversations(bundle):
    """Three conversations of different prompt lengths: two presets, one voice from audio."""
    plans = [make_plan("NATF0", 3, 1), make_plan("VARM4", 17, 2), make_plan("custom.wav", 8, 3)]
    voices = [models.load_voice(bundle, "NATF0"), models.load_voice(bundle, "VARM4"), _wav_voice(bundle, 0.5)]
    return plans, voices


def _run(engine: Engine, frames: np.ndarray):
    res = run_offline(engine, frames)
    return np.concatenate([res.text[..., None], res.audio], axis=-1), res.pcm


def _engine(bundle, plans, voices, params, seeds, **kw) -> Engine:
    engine = Engine(bundle, len(plans), params, seeds, **kw)
    engine.prefill(plans, voices)
    return engine


@pytest.mark.parametrize(
    ("context", "params", "compiled"),
    [
        ("full", [GREEDY] * 3, False),
        ("full", [HOT, GREEDY, WARM], True),
        ("short", [WARM, HOT, GREEDY], False),
    ],
)
def test_each_row_of_a_mixed_length_batch_equals_its_batch1_run(
    tiny_bundle, short_context, context, params, compiled
):
    bundle = tiny_bundle if context == "full" else short_context
    plans, voices = _conversations(bundle)
    seeds = [11, 12, 13]
    n = 30 if context == "short" else 14  # short: the session wraps the 8-frame ring again and again
    frames = np.concatenate([user_frames(n, 40 + i) for i in range(3)])  # different user audio
    batch = _engine(bundle, plans, voices, params, seeds, compiled=compiled)
    offsets = batch.offsets.tolist()
    assert len(set(offsets)) == 3  # really unequal prompt lengths
    tb, pb = _run(batch, frames)
    for i in range(3):
        single = _engine(bundle, [plans[i]], [voices[i]], params[i], seeds[i])
        assert single.offset == offsets[i]
        ts, ps = _run(single, frames[i : i + 1])
        np.testing.assert_array_equal(tb[i], ts[0], err_msg=f"conversation {i}")
        np.testing.assert_allclose(pb[i], ps[0], atol=1e-5)
    assert batch.offsets.tolist() == [o + n for o in offsets]


def test_mixed_length_prefill_is_one_batched_pass_and_equals_stepwise(short_context, monkeypatch):
    plans, voices = _conversations(short_context)
    calls = []
    real = short_context.lm.temporal
    monkeypatch.setattr(
        short_context.lm, "temporal", lambda x, c, *b: (calls.append(x.shape), real(x, c, *b))[1]
    )
    batched = _engine(short_context, plans, voices, [GREEDY] * 3, 0)
    assert len(calls) == 1 and calls[0][1] == max(batched.offsets) - 1  # [B, longest, D]
    stepwise = Engine(short_context, 3, GREEDY)
    stepwise.prefill(plans, voices, stepwise=True)
    monkeypatch.undo()
    assert state_equal(batched.snapshot(), stepwise.snapshot(), atol=2e-5)
    frames = user_frames(10, 5, batch=3)
    np.testing.assert_array_equal(_run(batched, frames)[0], _run(stepwise, frames)[0])


def test_cached_rows_restore_into_batches_with_other_padding(tiny_bundle, tmp_path):
    plans, voices = _conversations(tiny_bundle)
    params, seeds = [HOT, GREEDY, WARM], [3, 4, 5]
    # cache each row from its own batch-1 prefill (no padding) ...
    for p, v, q, s in zip(plans, voices, params, seeds, strict=True):
        assert prefill_cached(Engine(tiny_bundle, 1, q, s), [p], [v], tmp_path) is False
    # ... and serve a mixed batch from those rows (padded now), in another order too
    order = [2, 0, 1]
    restored = Engine(tiny_bundle, 3, [params[i] for i in order], [seeds[i] for i in order])
    assert prefill_cached(restored, [plans[i] for i in order], [voices[i] for i in order], tmp_path)
    fresh = _engine(tiny_bundle, [plans[i] for i in order], [voices[i] for i in order],
                    [params[i] for i in order], [seeds[i] for i in order])  # fmt: skip
    assert state_equal(fresh.snapshot(), restored.snapshot(), atol=2e-5)
    frames = np.concatenate([user_frames(12, 50 + i) for i in order])
    np.testing.assert_array_equal(_run(fresh, frames)[0], _run(restored, frames)[0])
    # a row saved from a padded batch restores into batch 1 (and the other way round)
    sub = tmp_path / "from-batch"
    batch = Engine(tiny_bundle, 3, params, seeds)
    assert prefill_cached(batch, plans, voices, sub) is False
    for i in range(3):
        one = Engine(tiny_bundle, 1, params[i], seeds[i])
        assert prefill_cached(one, [plans[i]], [voices[i]], sub) is True
        ref = _engine(tiny_bundle, [plans[i]], [voices[i]], params[i], seeds[i])
        assert state_equal(one.snapshot(), ref.snapshot(), atol=2e-5)


def test_a_prompt_too_short_to_be_ready_cannot_join_a_mixed_batch(tiny_bundle):
    tiny_plan = PrefillPlan(voice="x.wav", text_ids=(), silence_frames=0)
    short_voice = _wav_voice(tiny_bundle, 0.08)  # one frame: LMGen offset 1, no output yet
    engine = Engine(tiny_bundle, 2, GREEDY)
    with pytest.raises(ConfigError, match="cannot share a batch"):
        engine.prefill(
            [tiny_plan, make_plan("NATF0", 3, 1)], [short_voice, models.load_voice(tiny_bundle, "NATF0")]
        )
    engine.prefill([tiny_plan, tiny_plan], [short_voice, short_voice])  # equal offsets are fine
    assert engine.offsets.tolist() == [1, 1]


@pytest.mark.parametrize("voice", ["NATF1", "wav"])
def test_compiled_persona_frames_equal_the_engine_prefill(tiny_bundle, tmp_path, voice):
    if voice == "wav":
        import soundfile

        path = tmp_path / "me.wav"
        soundfile.write(str(path), models.synthetic_voice(3, 1.3), 24000)
        voice = str(path)
    else:
        path = voice_file(tiny_bundle.model_dir, voice)
    persona = load_persona("personas/spanish-tutor.yaml")
    plan = compile_persona(persona, {}, Tokenizer(TINY_TOKENIZER), voice_frames(path))
    engine = Engine(tiny_bundle, 1, GREEDY)
    engine.prefill([plan], [models.load_voice(tiny_bundle, voice)])
    assert plan.frames == engine.offset
    assert engine.lm_cache.offset == plan.frames - 1  # the first call only primes
