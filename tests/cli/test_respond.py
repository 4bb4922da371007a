"""`rolekit respond` on the tiny model: outputs, formats, prefill cache, determinism, input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from rolekit.audio.wav import write_wav
from rolekit.cli.app import app
from rolekit.randmodel import TINY_LABEL
from tests.engine.conftest import user_frames

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def user_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("respond") / "user.wav"
    write_wav(path, user_frames(20, 2)[0].reshape(-1)[:-500])  # 19.7 frames -> 20 input frames
    return path


def _respond(tmp_path, user_wav, *extra):
    args = ["respond", "--input", str(user_wav), "--output", str(tmp_path / "agent.wav"), "-q", *extra]
    res = RUNNER.invoke(app, args)
    return res


def test_respond_writes_audio_text_tokens_and_a_summary(tiny_bundle, tmp_path, user_wav):
    res = _respond(
        tmp_path, user_wav, "--prompt", "You are a wise and friendly teacher.", "--voice", "NATF1",
        "--text-out", str(tmp_path / "text.json"), "--tokens-out", str(tmp_path / "tokens.json"),
        "--tail", "0.8", "--greedy",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["frames"] == 30 and summary["input_frames"] == 20 and summary["tail_frames"] == 10
    assert summary["random_weights"] is True and summary["greedy"] is True and summary["ms_per_step"] > 0
    assert summary["rtf"] == pytest.approx(summary["ms_per_step"] / 80, abs=1e-2)
    assert (
        summary["max_step_ms"] >= summary["ms_per_step"] and 0 <= summary["late_steps"] <= summary["frames"]
    )
    pcm, sr = sf.read(tmp_path / "agent.wav")
    assert sr == 24000 and pcm.ndim == 1 and pcm.shape[0] == 30 * 1920
    tokens = json.loads((tmp_path / "tokens.json").read_text())
    assert len(tokens["text"]) == 30 and len(tokens["audio"]) == 30
    assert all(len(a) == 8 for a in tokens["audio"])
    text = json.loads((tmp_path / "text.json").read_text())
    assert len(text) == 30 and text[0] == "PAD"  # frame 0 = last prompt frame (text PAD, delays undone)
    for piece, tid in zip(text, tokens["text"], strict=True):
        assert (piece in ("PAD", "EPAD")) == (tid in (0, 3))


def test_second_run_restores_the_prefill_and_greedy_is_deterministic(tiny_bundle, tmp_path, user_wav):
    args = ["--prompt", "Be brief.", "--voice", "VARF1", "--greedy", "--tokens-out", str(tmp_path / "t.json")]
    first = _respond(tmp_path, user_wav, *args)
    tokens1 = (tmp_path / "t.json").read_text()
    second = _respond(tmp_path, user_wav, *args)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    s1 = json.loads(first.output.strip().splitlines()[-1])
    s2 = json.loads(second.output.strip().splitlines()[-1])
    assert s1["prefill_cached"] is False and s2["prefill_cached"] is True
    assert (tmp_path / "t.json").read_text() == tokens1
    nocache = _respond(tmp_path, user_wav, *args, "--no-cache")
    assert json.loads(nocache.output.strip().splitlines()[-1])["prefill_cached"] is False
    assert (tmp_path / "t.json").read_text() == tokens1


def test_respond_with_a_persona_file_and_vars(tiny_bundle, tmp_path, user_wav):
    res = _respond(
        tmp_path, user_wav, "--persona", "personas/appointment-caller.yaml", "--var", "patient_name=Ana",
        "--seed", "5", "--temp-text", "0.9", "--topk-audio", "50",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["persona"] == "appointment-caller" and summary["voice"] == "NATM0" and summary["seed"] == 5
    assert summary["tail_frames"] == 50  # default --tail 4 s: the agent gets time to answer


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --prompt"),
        (["--prompt", "x", "--persona", "refund-desk"], "exactly one of --prompt"),
        (["--prompt", "x", "--tail", "-1"], "--tail"),
        (["--prompt", "x", "--temp-text", "-0.5"], "--temp-text"),
        (["--prompt", "x", "--topk-audio", "0"], "--topk-audio"),
        (["--prompt", "x", "--voice", "NOPE1"], "unknown voice"),
        (["--prompt", "x", "--var", "a=b"], "--var needs --persona"),
        (["--persona", "personas/appointment-caller.yaml", "--var", "oops"], "NAME=VALUE"),
        (["--prompt", "x", "--model", "/no/such/model-folder"], "model-folder"),
        (["--prompt", "x", "--persona-typo"], "No such option"),
    ],
)
def test_bad_input_exits_2_with_one_message(tiny_bundle, tmp_path, user_wav, extra, message):
    res = _respond(tmp_path, user_wav, *extra)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_unreadable_input_audio_exits_2(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    res = _respond(tmp_path, bad, "--prompt", "x")
    assert res.exit_code == 2 and "Traceback" not in res.output
    res = _respond(tmp_path, tmp_path / "missing.wav", "--prompt", "x")
    assert res.exit_code == 2 and "no such file" in res.output
    silent = tmp_path / "empty.wav"
    sf.write(silent, np.zeros(0, np.float32), 24000)
    res = _respond(tmp_path, silent, "--prompt", "x")
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_respond_off_a_terminal_prints_plain_progress_lines(tiny_bundle, tmp_path, user_wav):
    args = ["respond", "--input", str(user_wav), "--output", str(tmp_path / "a.wav"), "--prompt", "Hi."]
    res = RUNNER.invoke(app, [*args, "--tail", "0.8", "--greedy"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if "respond:" in ln]
    assert lines[0].endswith("respond: 30 frames"), res.stderr
    assert "respond: frame 30/30 (" in lines[-1] and "ms/step, RTF" in lines[-1], res.stderr
    assert "\x1b[" not in res.stderr  # no terminal control sequences in a log
    random = [ln for ln in res.stderr.splitlines() if ln.startswith("random weights: ")]
    assert random == [f"random weights: {TINY_LABEL}"]  # the tiny model is random: said after the run
    assert json.loads(res.stdout.strip().splitlines()[-1])["frames"] == 30
