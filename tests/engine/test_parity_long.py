"""A session 10x longer than the temporal context equals the PyTorch reference token for token.

Same reference loop as test_parity.py, on a tiny checkpoint whose LM context is 16 frames, so the
ring KV cache wraps during the prefill and ~10 more times in the conversation (Kyutai 0.2.13 ring
semantics: a query sees exactly `context` keys, itself included).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rolekit import models
from rolekit.audio.loudness import normalize_lufs
from rolekit.cli.app import app
from rolekit.engine.engine import Engine
from rolekit.engine.offline import frame_user_audio, run_offline
from rolekit.frames import PrefillPlan
from rolekit.lm.sampling import SamplingParams
from rolekit.text import TINY_TOKENIZER
from tests.engine.checkpoint import user_audio, write_checkpoint
from tests.engine.reference import TorchPersonaPlex, build_lm, load_mimi

pytestmark = pytest.mark.oracle

CONTEXT = 16


def test_ten_contexts_equal_reference(tiny_bundle, tmp_path):
    lm_cfg, mimi_cfg = models.tiny_configs()
    lm_cfg = dataclasses.replace(lm_cfg, context=CONTEXT)
    lm_kwargs = lm_cfg.to_kyutai()
    tlm = build_lm(lm_kwargs, seed=23)
    mimi_file = tiny_bundle.model_dir / models.MIMI_FILE
    tmimi = load_mimi(mimi_file, mimi_cfg.to_kyutai())

    maker = TorchPersonaPlex(tlm, tmimi)
    maker.voice_from_codes(maker.encode_voice(normalize_lufs(models.synthetic_voice(2, 0.8))), save=True)
    voice = {
        "embeddings": torch.stack(maker.saved_embeddings).detach(),
        "cache": torch.tensor(maker.tok.cache),
    }
    maker.close()
    src = write_checkpoint(tmp_path / "src", tlm, lm_kwargs, mimi_file, TINY_TOKENIZER, {"VARF3": voice})
    res = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "mlx"), "--bits", "16"])
    assert res.exit_code == 0, res.output

    text_ids = [int(i) for i in np.random.default_rng(4).integers(4, 900, 12)]
    frames = frame_user_audio(user_audio(10 * CONTEXT * 0.08, seed=9))[0]
    ref = TorchPersonaPlex(tlm, tmimi)
    ref.prompts(text_ids, embeddings=voice["embeddings"], cache=voice["cache"])
    expected = np.stack([ref.step(f)[0] for f in frames])
    ref.close()

    bundle = models.load(str(tmp_path / "mlx"))
    assert bundle.lm.cfg.context == CONTEXT
    engine = Engine(bundle, 1, SamplingParams(greedy=True))
    engine.prefill(
        [PrefillPlan(voice="VARF3", text_ids=tuple(text_ids))], [models.load_voice(bundle, "VARF3")]
    )
    result = run_offline(engine, frames[None])
    got = np.concatenate([result.text[0][:, None], result.audio[0]], axis=1)
    assert got.shape[0] == 10 * CONTEXT
    mismatch = np.argwhere(got != expected)
    assert mismatch.size == 0, f"first mismatch (frame, stream) {mismatch[0]}"
    assert len(set(got[:, 0])) > 3
