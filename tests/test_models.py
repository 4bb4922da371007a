"""The embedded tiny model and voice loading (models.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rolekit import models
from rolekit.audio.wav import write_wav
from rolekit.engine.prefill import prompt_frames, simulate
from rolekit.engine.ring import initial_tokens
from rolekit.errors import ModelError
from rolekit.frames import VOICES, PrefillPlan


def test_tiny_is_built_once_in_the_real_layout(tiny_bundle):
    folder = tiny_bundle.model_dir
    for name in ("temporal.safetensors", "depformer.safetensors", "embeddings.safetensors",
                 models.MIMI_FILE, "tokenizer_spm_32k_3.model", "config.json", "README.txt"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert sorted(p.stem for p in (folder / "voices").glob("*.safetensors")) == sorted(VOICES)
    assert tiny_bundle.is_random and "noise" in tiny_bundle.label
    assert tiny_bundle.model_id == models.TINY_VERSION
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert models.resolve("tiny") == folder  # cached: not rebuilt
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    cfg = tiny_bundle.lm.cfg
    assert (cfg.n_q, cfg.dep_q, cfg.card) == (16, 16, 2048)
    assert tiny_bundle.mimi.frame_size == 1920 and tiny_bundle.mimi.num_codebooks == 8


def test_tiny_build_is_deterministic(tiny_bundle, tmp_path):
    other = models.build_tiny(tmp_path / "tiny-again")
    for name in (
        "temporal.safetensors",
        "embeddings.safetensors",
        "voices/NATF2.safetensors",
        models.MIMI_FILE,
    ):
        assert (other / name).read_bytes() == (tiny_bundle.model_dir / name).read_bytes(), name


def test_presets_have_the_nvidia_format(tiny_bundle):
    voice = models.load_voice(tiny_bundle, "NATM1")
    assert voice.embeddings.shape == (
        14,
        tiny_bundle.lm.cfg.dim,
    )  # 15 frames of 80 ms, minus the priming call
    assert voice.cache.shape == (17, 4) and voice.codes is None
    assert (voice.cache[0] == 3).all()  # text PAD during the voice prompt
    import mlx.core as mx

    raw = mx.load(str(tiny_bundle.model_dir / "voices" / "NATM1.safetensors"))
    assert raw["embeddings"].shape == (14, 1, 1, tiny_bundle.lm.cfg.dim) and raw["cache"].shape == (1, 17, 4)


def test_voice_prompt_phase_closed_form_equals_the_ring_simulation(tiny_bundle):
    initial = initial_tokens(np, 1000, 2048)
    codes = np.random.default_rng(0).integers(0, 2048, (8, 11)).astype(np.int32)
    inputs, ring = models.voice_prompt_phase(codes, initial)
    plan = PrefillPlan(voice="x", text_ids=(), silence_frames=0)
    sim = simulate(initial, prompt_frames(plan, codes))
    np.testing.assert_array_equal(inputs, sim.tokens)
    np.testing.assert_array_equal(ring, sim.ring.cache[0])
    assert sim.offset == 11


@pytest.mark.torch
def test_load_voice_from_wav_pt_and_codes(tiny_bundle, tmp_path):
    import torch

    pcm = models.synthetic_voice(4, 0.5)
    write_wav(tmp_path / "me.wav", pcm)
    v = models.load_voice(tiny_bundle, str(tmp_path / "me.wav"))
    assert v.embeddings is None and v.codes.shape == (8, 7) and v.codes.dtype == np.int32
    preset = models.load_voice(tiny_bundle, "NATF0")
    torch.save(
        {
            "embeddings": torch.from_numpy(preset.embeddings[:, None, None]),
            "cache": torch.from_numpy(preset.cache[None]),
        },
        tmp_path / "mine.pt",
    )
    pt = models.load_voice(tiny_bundle, str(tmp_path / "mine.pt"))
    np.testing.assert_array_equal(pt.embeddings, preset.embeddings)
    np.testing.assert_array_equal(pt.cache, preset.cache)
    assert pt.identity == preset.identity


@pytest.mark.torch
def test_bad_voices_are_model_errors(tiny_bundle, tmp_path):
    import torch

    with pytest.raises(ModelError, match="unknown voice"):
        models.load_voice(tiny_bundle, "NOPE9")
    with pytest.raises(ModelError):
        models.load_voice(tiny_bundle, str(tmp_path / "missing.safetensors"))
    torch.save({"embeddings": torch.zeros(3, 1, 1, 7), "cache": torch.zeros(1, 17, 4)}, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="embeddings"):
        models.load_voice(tiny_bundle, str(tmp_path / "bad.pt"))
