"""The product load path: quantize on first load (cached, atomic, locked), the random NVIDIA-layout
model, the shared model options of the CLI, and `--channel`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from rolekit import models
from rolekit.cli.app import app
from rolekit.errors import AudioInputError, ConfigError, ModelError
from rolekit.frames import VOICES

RUNNER = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def small_random(tmp_path_factory):
    """random-7b's layout and builder at tiny sizes (real vocabulary, card and Mimi frame)."""
    from rolekit.lm.config import tiny
    from rolekit.randmodel import build_random_7b, tiny_configs

    _, mimi_cfg = tiny_configs()
    lm_cfg = tiny(text_card=32000, card=2048, context=3000)
    folder = tmp_path_factory.mktemp("random") / "random-small"
    seen = []
    build_random_7b(folder, lambda d, t: seen.append((d, t)), lm_cfg=lm_cfg, mimi_cfg=mimi_cfg)
    return folder, lm_cfg, mimi_cfg, seen


def test_random_model_is_a_complete_nvidia_layout_folder(small_random):
    from rolekit.lm.checkpoint import SafetensorsFile
    from rolekit.lm.weights import nvidia_keys
    from rolekit.text import Tokenizer

    folder, lm_cfg, _, seen = small_random
    f = SafetensorsFile(folder / "model.safetensors")
    assert f.shapes == nvidia_keys(lm_cfg) and {f.dtype(k) for k in f.keys()} == {"BF16"}
    assert seen[-1][0] == seen[-1][1] == sum(int(np.prod(s)) * 2 for s in f.shapes.values())
    assert np.all(np.array(f.get("out_norm.alpha").astype(mx.float32)) == 1.0)
    assert Tokenizer(folder / "tokenizer_spm_32k_3.model").vocab_size == 32000
    voices = sorted(p.stem for p in (folder / "voices").glob("*.pt"))
    assert voices == sorted(VOICES) and len(voices) == 18
    import torch

    pt = torch.load(folder / "voices" / "NATF2.pt", weights_only=True)
    assert pt["embeddings"].dtype == torch.bfloat16 and pt["embeddings"].shape[1:] == (1, 1, lm_cfg.dim)
    assert pt["cache"].dtype == torch.int64 and tuple(pt["cache"].shape) == (1, 17, 4)
    config = json.loads((folder / "config.json").read_text())
    assert config["random_weights"] is True and "noise" in config["label"]


def test_random_model_build_is_deterministic(small_random, tmp_path):
    from rolekit.randmodel import write_random_lm

    folder, lm_cfg, _, _ = small_random
    write_random_lm(tmp_path / "again.safetensors", lm_cfg)
    assert (tmp_path / "again.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def test_random_model_loads_labelled_random_with_its_pt_voices(small_random, cache):
    folder = small_random[0]
    bundle = models.load(str(folder), models.LoadOptions(quant="bf16"))
    assert bundle.is_random and "noise" in bundle.label and bundle.quant == "bf16"
    assert bundle.describe()["random_weights"] is True and bundle.describe()["label"] == bundle.label
    voice = models.load_voice(bundle, "VARM3")
    assert voice.embeddings.shape[1] == bundle.lm.cfg.dim and voice.cache.shape == (17, 4)


def test_quantize_on_first_load_converts_once_into_the_cache(small_random, cache):
    folder = small_random[0]
    lines: list[str] = []
    ticks: list[tuple[str, int, int]] = []
    first = models.load(str(folder), models.LoadOptions(quant="q4"), lines.append, lambda *a: ticks.append(a))
    out = cache / "models" / f"{models.model_id_of(folder)}-q4"
    assert first.model_dir == out and first.quant == "q4" and first.is_random
    assert (out / "config.json").is_file() and json.loads((out / "config.json").read_text())["random_weights"]
    assert any(line.startswith("converted q4 copy") for line in lines)
    assert ticks and ticks[-1][1] == ticks[-1][2] and "q4" in ticks[-1][0]
    lines.clear()
    second = models.load(str(folder), models.LoadOptions(quant="q4"), lines.append)
    assert any(line.startswith("using q4 copy") for line in lines) and second.model_dir == out
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, out.name + ".lock"]


def test_quant_auto_says_what_and_why(small_random, cache):
    lines: list[str] = []
    bundle = models.load(str(small_random[0]), models.LoadOptions(), lines.append)
    assert bundle.quant == "q4"
    assert any(line.startswith("--quant auto: q4 (cpu") for line in lines), lines


def test_a_crashed_conversion_leaves_nothing_that_loads(small_random, cache):
    folder = small_random[0]

    def crash(task, done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        models.load(str(folder), models.LoadOptions(quant="q8"), progress=crash)
    parent = cache / "models"
    assert [p.name for p in parent.iterdir() if not p.name.endswith(".lock")] == []
    bundle = models.load(str(folder), models.LoadOptions(quant="q8"))
    assert bundle.quant == "q8"


def test_concurrent_first_loads_convert_once(small_random, cache):
    code = (
        "import sys; from rolekit import models\n"
        "lines = []\n"
        "b = models.load(sys.argv[1], models.LoadOptions(quant='q8'), lines.append)\n"
        "print([l for l in lines if 'copy' in l][0].split()[0], b.quant)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROLEKIT_CACHE": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(small_random[0])], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = sorted(p.communicate(timeout=600)[0].strip() for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert outs == ["converted q8", "using q8"]


def test_tiny_quantizes_on_first_load_and_an_mlx_q4_folder_refuses_other_formats(cache):
    q4 = models.load("tiny", models.LoadOptions(quant="q4"))
    assert q4.quant == "q4" and q4.model_id == "tiny-v2-q4" and q4.is_random
    with pytest.raises(ConfigError, match="--quant q8"):
        models.load(str(q4.model_dir), models.LoadOptions(quant="q8"))
    assert models.load(str(q4.model_dir)).quant == "q4"  # auto: as stored


def test_compat_is_checked_and_nvidia_shortens_both_rings(cache):
    with pytest.raises(ConfigError, match="--compat"):
        models.load("tiny", models.LoadOptions(compat="pytorch"))
    base = models.load("tiny")
    nv = models.load("tiny", models.LoadOptions(compat="nvidia"))
    assert nv.lm.cfg.context == base.lm.cfg.context - 1 and nv.mimi.cfg.context == base.mimi.cfg.context - 1
    assert nv.compat == "nvidia" and nv.describe()["compat"] == "nvidia"


def test_read_audio_takes_the_chosen_channel(tmp_path):
    from rolekit.audio.wav import read_audio

    t = np.arange(24000) / 24000
    left, right = 0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 330 * t)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1).astype(np.float32), 24000, subtype="FLOAT")
    assert np.allclose(read_audio(tmp_path / "st.wav", channel=0), left, atol=1e-6)
    assert np.allclose(read_audio(tmp_path / "st.wav", channel=1), right, atol=1e-6)
    assert np.allclose(read_audio(tmp_path / "st.wav"), (left + right) / 2, atol=1e-6)
    with pytest.raises(AudioInputError, match="--channel 2: the file has 2 channel"):
        read_audio(tmp_path / "st.wav", channel=2)


def test_respond_uses_channel_0_of_stereo_and_the_shared_model_options(cache, tmp_path):
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((8 * 1920, 2))).astype(np.float32)
    sf.write(tmp_path / "in.wav", stereo, 24000, subtype="FLOAT")
    sf.write(tmp_path / "left.wav", stereo[:, 0], 24000, subtype="FLOAT")
    base = ["respond", "--output", str(tmp_path / "a.wav"), "--prompt", "Hi.", "--greedy", "-q", "-m", "tiny"]
    runs = {}
    for name, extra in {
        "stereo": ["--input", str(tmp_path / "in.wav")],
        "left": ["--input", str(tmp_path / "left.wav")],
    }.items():
        res = RUNNER.invoke(
            app, [*base, *extra, "--tokens-out", str(tmp_path / f"{name}.json"), "--quant", "q4"]
        )
        assert res.exit_code == 0, res.output
        runs[name] = json.loads(res.output.strip().splitlines()[-1])
    assert (
        runs["stereo"]["quant"] == "q4"
        and runs["stereo"]["dtype"] == "fp32"
        and runs["stereo"]["channel"] == 0
    )
    assert (tmp_path / "stereo.json").read_text() == (tmp_path / "left.json").read_text()
    res = RUNNER.invoke(app, [*base, "--input", str(tmp_path / "in.wav"), "--channel", "3"])
    assert res.exit_code == 2 and "--channel 3" in res.output and "Traceback" not in res.output
    res = RUNNER.invoke(app, [*base, "--input", str(tmp_path / "in.wav"), "--dtype", "fp8"])
    assert res.exit_code == 2 and "--dtype" in res.output


def test_a_quantized_mlx_folder_is_not_a_conversion_source(cache):
    from rolekit.convert import lm_source

    q4 = models.load("tiny", models.LoadOptions(quant="q4"))
    with pytest.raises(ModelError, match="already quantized"):
        lm_source(q4.model_dir)
