"""`rolekit respond` (fp32, greedy) equals the PyTorch reference loop token for token.

Reference: Kyutai's PyTorch LMModel / MimiModel driven by NVIDIA PersonaPlex's LMGen bookkeeping
and prompt phases (tests/engine/reference.py). Checkpoint: a tiny random model written in NVIDIA's
naming and converted with `rolekit convert`. Compared: the model inputs of every prompt call, then
text + all 8 agent codebooks of >= 100 conversation frames, the user codes, and the decoded audio.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rolekit import models
from rolekit.audio.loudness import normalize_lufs
from rolekit.audio.wav import read_audio, write_wav
from rolekit.cli.app import app
from rolekit.engine.engine import Engine
from rolekit.engine.offline import frame_user_audio
from rolekit.engine.prefill import prefill_inputs
from rolekit.engine.ring import initial_tokens
from rolekit.frames import PrefillPlan
from rolekit.lm.sampling import SamplingParams
from rolekit.persona.compile import wrap_system
from rolekit.text import TINY_TOKENIZER, Tokenizer
from tests.engine.checkpoint import user_audio, write_checkpoint
from tests.engine.reference import TorchPersonaPlex, build_lm, load_mimi

pytestmark = pytest.mark.oracle

PROMPT = "You answer questions about trains and you keep it short."
FRAMES = 110
WAV_FRAMES = 25


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    old = os.environ.get("ROLEKIT_CACHE")
    os.environ["ROLEKIT_CACHE"] = str(root / "cache")
    try:
        tiny = models.resolve("tiny")
        lm_cfg, mimi_cfg = models.tiny_configs()
        lm_kwargs = lm_cfg.to_kyutai()
        tlm = build_lm(lm_kwargs, seed=11)
        mimi_file = tiny / models.MIMI_FILE
        tmimi = load_mimi(mimi_file, mimi_cfg.to_kyutai())

        # A voice preset made by the reference's voice prompt phase (NVIDIA save_voice_prompt_embeddings).
        maker = TorchPersonaPlex(tlm, tmimi)
        codes = maker.encode_voice(normalize_lufs(models.synthetic_voice(5)))
        maker.voice_from_codes(codes, save=True)
        voice_state = {
            "embeddings": torch.stack(maker.saved_embeddings).detach(),  # [T-1, 1, 1, D]
            "cache": torch.tensor(maker.tok.cache),  # [1, 17, 4]
        }
        maker.close()
        src = write_checkpoint(
            root / "src", tlm, lm_kwargs, mimi_file, TINY_TOKENIZER, {"NATF0": voice_state}
        )
        dst = root / "mlx"
        res = CliRunner().invoke(app, ["convert", str(src), str(dst), "--bits", "16"])
        assert res.exit_code == 0, res.output

        tok = Tokenizer(TINY_TOKENIZER)
        text_ids = tok.encode(wrap_system(PROMPT))
        write_wav(root / "user.wav", user_audio(FRAMES * 0.08 - 0.03))
        user = read_audio(root / "user.wav")

        ref = TorchPersonaPlex(tlm, tmimi)
        ref.prompts(text_ids, embeddings=voice_state["embeddings"], cache=voice_state["cache"])
        prompt_inputs = np.stack(ref.inputs)
        steps = [ref.step(f) for f in frame_user_audio(user)[0]]
        ref.close()

        res = CliRunner().invoke(
            app,
            [
                "respond", "--model", str(dst), "--voice", "NATF0", "--prompt", PROMPT,
                "--input", str(root / "user.wav"), "--output", str(root / "agent.wav"),
                "--tokens-out", str(root / "tokens.json"), "--text-out", str(root / "text.json"),
                "--greedy", "--no-cache", "-q", "--tail", "0",
            ],
        )  # fmt: skip
        assert res.exit_code == 0, res.output

        # The voice WAV path: -24 LUFS, streaming Mimi encode, voice codes forced on the agent stream.
        write_wav(root / "voice.wav", models.synthetic_voice(7, 1.0))
        ref = TorchPersonaPlex(tlm, tmimi)
        wav_codes = ref.encode_voice(normalize_lufs(read_audio(root / "voice.wav")))
        ref.prompts(text_ids, codes=wav_codes)
        wav_steps = [ref.step(f) for f in frame_user_audio(user)[0][:WAV_FRAMES]]
        ref.close()
        write_wav(root / "user_short.wav", user[: WAV_FRAMES * 1920])
        res = CliRunner().invoke(
            app,
            [
                "respond", "--model", str(dst), "--voice", str(root / "voice.wav"), "--prompt", PROMPT,
                "--input", str(root / "user_short.wav"), "--output", str(root / "agent_wav.wav"),
                "--tokens-out", str(root / "tokens_wav.json"), "--greedy", "--no-cache", "-q", "--tail", "0",
            ],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        yield {
            "wav_codes": wav_codes,
            "wav_tokens": np.stack([s[0] for s in wav_steps]),
            "root": root,
            "dst": dst,
            "text_ids": text_ids,
            "user": user,
            "prompt_inputs": prompt_inputs,
            "ref_tokens": np.stack([s[0] for s in steps]),
            "ref_user_codes": np.stack([s[1] for s in steps]),
            "ref_pcm": np.concatenate([s[2] for s in steps]),
            "summary": json.loads(res.output.strip().splitlines()[-1]),
        }
    finally:
        if old is None:
            os.environ.pop("ROLEKIT_CACHE", None)
        else:
            os.environ["ROLEKIT_CACHE"] = old


def test_prompt_phase_inputs_match_reference(parity):
    bundle = models.load(str(parity["dst"]))
    voice = models.load_voice(bundle, "NATF0")
    plan = PrefillPlan(voice="NATF0", text_ids=tuple(parity["text_ids"]))
    rows = prefill_inputs(plan, voice, initial_tokens(np, bundle.lm.cfg.text_card, bundle.lm.cfg.card))
    # The reference records the token columns it fed after the voice replay: all of them must agree.
    np.testing.assert_array_equal(rows.tokens, parity["prompt_inputs"])
    assert rows.offset == len(voice.embeddings) + 1 + len(rows.tokens)


def test_respond_tokens_equal_reference(parity):
    tokens = json.loads((parity["root"] / "tokens.json").read_text())
    ref = parity["ref_tokens"]
    assert len(tokens["text"]) == len(ref) >= 100
    got = np.concatenate([np.array(tokens["text"])[:, None], np.array(tokens["audio"])], axis=1)
    mismatch = np.argwhere(got != ref)
    assert mismatch.size == 0, (
        f"first mismatch (frame, stream) {mismatch[0]}: {got[mismatch[0][0]]} vs {ref[mismatch[0][0]]}"
    )
    assert len(set(tokens["text"])) > 3  # the model really generated (not stuck on PAD)
    pieces = json.loads((parity["root"] / "text.json").read_text())
    assert len(pieces) == len(ref) and pieces[0] == "PAD"


def test_decoded_audio_matches_reference(parity):
    agent = read_audio(parity["root"] / "agent.wav")
    ref = parity["ref_pcm"]
    assert agent.shape == ref.shape
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(agent, np.clip(ref, -1, 1), atol=2e-3)


def test_user_codes_equal_reference(parity):
    bundle = models.load(str(parity["dst"]))
    plan = PrefillPlan(voice="NATF0", text_ids=tuple(parity["text_ids"]))
    engine = Engine(bundle, 1, SamplingParams(greedy=True))
    engine.prefill([plan], [models.load_voice(bundle, "NATF0")])
    frames = frame_user_audio(parity["user"])[0]
    for i in range(20):
        out = engine.step(frames[i : i + 1])
        np.testing.assert_array_equal(engine.last_user_codes[0], parity["ref_user_codes"][i])
        np.testing.assert_array_equal(np.r_[out.text, out.audio[0]], parity["ref_tokens"][i])


def test_voice_wav_path_equals_reference(parity):
    bundle = models.load(str(parity["dst"]))
    voice = models.load_voice(bundle, str(parity["root"] / "voice.wav"))
    np.testing.assert_array_equal(voice.codes, parity["wav_codes"])
    tokens = json.loads((parity["root"] / "tokens_wav.json").read_text())
    got = np.concatenate([np.array(tokens["text"])[:, None], np.array(tokens["audio"])], axis=1)
    np.testing.assert_array_equal(got, parity["wav_tokens"])
