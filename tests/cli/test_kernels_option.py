"""`--kernels`: parsed once into the `Kernels` policy by the shared model options and handed to the
Engine; a bad value is exit 2 naming `--kernels` and the field, before anything loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rolekit.cli import options as model_opts
from rolekit.errors import ConfigError
from rolekit.nn.kernels import OPS, Kernels
from tests.hardening.cli import assert_clean, invoke

BAD = [
    ("fused=2", "fused='2': expected 0 or 1"),
    ("bogus=1", "unknown kernel 'bogus'"),
    ("depformer_threads=100", "depformer_threads='100': a multiple of 32"),
    ("temporal_tuning=threads=x", "temporal_tuning.threads='x': expected an integer"),
    ("fused", "expected NAME=VALUE, got 'fused'"),
    ("fused=1", "fused: rolekit's kernels need a CUDA GPU"),  # this machine has no CUDA GPU
]


def test_load_options_parses_the_text_once_into_a_policy():
    load = model_opts.load_options("auto", "auto", "kyutai", kernels="fused=0, depformer_threads=512")
    assert isinstance(load.kernels, Kernels)
    assert load.kernels == Kernels.for_device(None, {"depformer_threads": 512})
    assert load.kernels.depformer_threads == 512 and not load.kernels.any  # CPU: every kernel off
    assert model_opts.load_options("auto", "auto", "kyutai").kernels is None  # default: the device's


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_load_options_rejects_bad_values_naming_the_option(spec, message):
    with pytest.raises(ConfigError, match="--kernels") as info:
        model_opts.load_options("auto", "auto", "kyutai", kernels=spec)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "command",
    [
        ["respond", "--prompt", "hi", "--input", "{wav}", "--output", "{out}/a.wav"],
        ["run", "{scenario}", "--out", "{out}"],
        ["test", "{scenario}", "--out", "{out}"],
        ["live", "assistant"],
        ["warmup"],
        ["bench", "engine"],
        ["bench", "prefill"],
    ],
)
def test_every_model_command_rejects_a_bad_value_before_loading(tmp_path, command):
    from rolekit.audio.wav import write_wav

    wav = tmp_path / "u.wav"
    write_wav(wav, np.zeros(1920, np.float32))
    scenario = tmp_path / "s.yaml"
    scenario.write_text("persona: assistant\nsteps:\n  - say: hi\n")
    (tmp_path / "out").mkdir()
    argv = [a.format(wav=wav, out=tmp_path / "out", scenario=scenario) for a in command]
    argv += ["--kernels", "depformer_threads=33"]
    result = invoke(argv, cwd=tmp_path)
    assert_clean(result, argv)
    assert result.code == 2, result.text
    assert "--kernels depformer_threads='33'" in result.text
    assert not (tmp_path / "out" / "a.wav").exists()


def test_respond_hands_the_policy_to_the_engine(tiny_bundle, tmp_path, monkeypatch):
    from rolekit.audio.wav import write_wav
    from rolekit.engine import engine as engine_mod

    seen = []
    init = engine_mod.Engine.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("kernels"))
        init(self, *args, **kwargs)
        seen.append(self.kernels)

    monkeypatch.setattr(engine_mod.Engine, "__init__", spy)
    wav = tmp_path / "u.wav"
    write_wav(wav, 0.1 * np.sin(np.arange(3 * 1920, dtype=np.float32) / 9))
    out = tmp_path / "a.wav"
    argv = ["respond", "-q", "--prompt", "hi", "--input", str(wav), "--output", str(out), "--no-cache"]
    result = invoke([*argv, "--kernels", "fused=0,depformer_threads=512,temporal_tuning=stages=0"])
    assert result.code == 0, result.text
    summary = json.loads(result.out.strip().splitlines()[-1])
    assert summary["frames"] >= 3 and out.is_file()
    expected = Kernels.for_device(None, "depformer_threads=512,temporal_tuning=stages=0")
    assert seen == [expected, expected]  # the parsed policy, not one the Engine picked itself
    assert expected.temporal_tuning.stages == 0 and expected != OPS
    seen.clear()
    assert invoke(argv).code == 0
    assert seen == [None, Kernels.for_device()]  # no --kernels: the Engine's own choice for the device
