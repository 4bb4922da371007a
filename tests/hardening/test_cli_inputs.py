"""Bad numbers and output paths on the command line: exit 2 naming the option, before any work."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests.hardening.cli import assert_clean


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "user.wav"
    sf.write(str(path), np.zeros(24000, np.float32), 24000)
    return path


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--tail", "nan"], "--tail"),
        (["--tail", "inf"], "--tail"),
        (["--tail", "-1"], "--tail"),
        (["--temp-text", "nan"], "--temp-text"),
        (["--temp-audio", "inf"], "--temp-audio"),
        (["--seed", "123456789012345678901234"], "--seed"),
        (["--seed", "-1"], "--seed"),
        (["--topk-text", "0"], "--topk-text"),
    ],
)
def test_respond_numbers(cli, wav, tmp_path, extra, option):
    result = cli(
        ["respond", "--input", str(wav), "--output", str(tmp_path / "o.wav"), "--prompt", "hi", *extra]
    )
    assert_clean(result)
    assert result.code == 2 and option in result.err
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("option", ["--output", "--text-out", "--tokens-out"])
def test_respond_output_that_is_a_folder(cli, wav, tmp_path, option):
    argv = [
        "respond",
        "--input",
        str(wav),
        "--output",
        str(tmp_path / "o.wav"),
        "--prompt",
        "hi",
        "-m",
        "tiny",
    ]
    folder = tmp_path / "adir"
    folder.mkdir()
    argv += [option, str(folder)] if option != "--output" else []
    if option == "--output":
        argv[argv.index("--output") + 1] = str(folder)
    result = cli(argv)
    assert_clean(result)
    assert result.code == 2 and option in result.err and "is a folder" in result.err


def test_respond_corrupt_voice_file(cli, wav, tmp_path):
    voice = tmp_path / "v.safetensors"
    voice.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    result = cli(
        [
            "respond",
            "--input",
            str(wav),
            "--output",
            str(tmp_path / "o.wav"),
            "--prompt",
            "hi",
            "--voice",
            str(voice),
        ]
    )
    assert_clean(result)
    assert result.code == 2 and "--voice" in result.err and "v.safetensors" in result.err


def test_test_junit_folder_and_out_file_fail_before_the_suite(cli, tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text("persona: refund-desk\nuser:\n  - say: hi\n")
    (tmp_path / "j").mkdir()
    result = cli(["test", str(scen), "--junit", str(tmp_path / "j"), "--out", str(tmp_path / "o")])
    assert_clean(result)
    assert result.code == 2 and "--junit" in result.err and not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    result = cli(["test", str(scen), "--out", str(tmp_path / "file")])
    assert_clean(result)
    assert result.code == 2 and "--out" in result.err and "is a file" in result.err


def test_convert_and_import_ct2_into_a_file(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    for argv in (
        ["convert", str(tmp_path), str(tmp_path / "file"), "--overwrite"],
        ["whisper", "import-ct2", str(tmp_path), str(tmp_path / "file")],
    ):
        result = cli(argv)
        assert_clean(result)
        assert result.code == 2 and "is a file" in result.err
    assert not list(tmp_path.glob("*.partial"))


def test_convert_overwrite_replaces_only_a_rolekit_model_folder(tmp_path):
    from rolekit.convert import _written_by_rolekit

    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    assert _written_by_rolekit(tmp_path / "empty") and not _written_by_rolekit(tmp_path / "mine")


@pytest.mark.parametrize(
    "field, value",
    [("tail", ".inf"), ("lead_in", ".nan"), ("seed", "123456789012345678901234"), ("tail", "1e300")],
)
def test_scenario_numbers(cli, tmp_path, field, value):
    scen = tmp_path / "s.yaml"
    scen.write_text(f"persona: refund-desk\n{field}: {value}\nuser:\n  - say: hi\n  - at: .inf\n    say: x\n")
    result = cli(["test", str(scen), "--out", str(tmp_path / "o"), "--no-transcribe", "-m", "tiny"])
    assert_clean(result)
    assert result.code == 2 and f"s.yaml:2: {field}" in result.err and "s.yaml:5: user[1].at" in result.err
    assert not (tmp_path / "o").exists()


def test_persona_float_variable_inf(cli, tmp_path):
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "p.yaml").write_text(
        "prompt: 'You are {{ x }}'\nvariables: {x: {type: float, default: 1.0}}\n"
    )
    result = cli(["persona", "render", "p", "--var", "x=inf"], cwd=tmp_path)
    assert_clean(result)
    assert result.code == 2 and "finite" in result.err


def test_lint_empty_and_too_long_prompts_are_errors(cli, tmp_path):
    (tmp_path / "empty.yaml").write_text("prompt: '{{ \"\" }}'\n")
    (tmp_path / "long.yaml").write_text("prompt: '{% for i in range(3000) %}refund {% endfor %}'\n")
    result = cli(["persona", "lint", str(tmp_path / "empty.yaml"), str(tmp_path / "long.yaml"), "--json"])
    assert_clean(result)
    import json

    rules = {(f["file"].rsplit("/", 1)[-1], f["rule"], f["severity"]) for f in json.loads(result.out)}
    assert ("empty.yaml", "empty", "error") in rules and ("long.yaml", "too-long", "error") in rules
    assert result.code == 1
