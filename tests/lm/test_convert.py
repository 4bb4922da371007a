"""`rolekit convert`: PyTorch folder -> MLX folder (bits 4/8/16), voices .pt -> .safetensors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import mlx.core as mx
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rolekit.convert import MIMI_FILE, TOKENIZER_FILE, convert
from rolekit.errors import ModelError
from rolekit.lm.checkpoint import SafetensorsFile
from rolekit.lm.weights import load_lm


def _voice(oracle, frames: int = 5, dim: int = 64) -> dict:
    torch = oracle.torch()
    g = torch.Generator().manual_seed(frames)
    return {
        "embeddings": torch.randn(frames, 1, 1, dim, generator=g).to(torch.bfloat16),
        "cache": torch.randint(0, 2048, (1, 17, 4), generator=g),
    }


@pytest.fixture(scope="module")
def src(tiny_oracle, oracle, tmp_path_factory):
    torch = oracle.torch()
    folder = tmp_path_factory.mktemp("src")
    oracle.save(tiny_oracle.model, folder, dtype=torch.bfloat16)
    oracle.write_config(tiny_oracle.cfg, folder)
    (folder / MIMI_FILE).write_bytes(b"mimi-bytes" * 100)
    (folder / TOKENIZER_FILE).write_bytes(b"spm-bytes")
    (folder / "voices").mkdir()
    torch.save(_voice(oracle, 5), folder / "voices" / "NATF2.pt")
    torch.save(_voice(oracle, 7), folder / "voices" / "VARM0.pt")
    from safetensors.numpy import save_file

    save_file(
        {"embeddings": np.zeros((3, 1, 1, 64), np.float16)}, str(folder / "voices" / "CUSTOM.safetensors")
    )
    return folder


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_convert_round_trip_loads(src, tmp_path, bits, tiny_oracle, tokens):
    dst = tmp_path / f"mlx{bits}"
    result = convert(src, dst, bits=bits)
    assert result.voices == ["CUSTOM", "NATF2", "VARM0"]
    assert not (tmp_path / f"mlx{bits}.partial").exists()
    assert (dst / "mimi.safetensors").read_bytes() == (src / MIMI_FILE).read_bytes()
    assert (dst / TOKENIZER_FILE).read_bytes() == b"spm-bytes"
    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "personaplex" and config["voices"] == result.voices
    assert ("quantization" in config) == (bits != 16)
    lm = load_lm(dst)
    # Same model up to bf16 / quantization: top-1 of teacher-forced text logits mostly agree.
    seq = mx.array(tokens(tiny_oracle.cfg, 1, 30).numpy().astype(np.int32))
    ref = np.array(tiny_oracle.lm.temporal(tiny_oracle.lm.embed(seq), tiny_oracle.lm.make_cache(1))[1])
    got = np.array(lm.temporal(lm.embed(seq), lm.make_cache(1))[1])
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= {4: 0.6, 8: 0.9, 16: 0.9}[bits]
    if bits == 16:
        assert (
            SafetensorsFile(dst / "temporal.safetensors").dtype("layers.0.gating.linear_in.weight") == "BF16"
        )


def test_voices_are_fp16_embeddings_and_fp32_cache(src, tmp_path, oracle):
    convert(src, tmp_path / "out", bits=16)
    v = SafetensorsFile(tmp_path / "out" / "voices" / "NATF2.safetensors")
    assert v.dtype("embeddings") == "F16" and v.shapes["embeddings"] == (5, 1, 1, 64)
    assert v.dtype("cache") == "F32" and v.shapes["cache"] == (1, 17, 4)
    ref = _voice(oracle, 5)
    np.testing.assert_array_equal(np.array(v.get("cache")), ref["cache"].numpy().astype(np.float32))


def test_voices_from_tgz(src, tmp_path, oracle):
    torch = oracle.torch()
    alt = tmp_path / "alt"
    alt.mkdir()
    for name in ("model.safetensors", "config.json", MIMI_FILE, TOKENIZER_FILE):
        (alt / name).write_bytes((src / name).read_bytes())
    with tarfile.open(alt / "voices.tgz", "w:gz") as tar:
        buf = io.BytesIO()
        torch.save(_voice(oracle, 4), buf)
        info = tarfile.TarInfo("voices/NATM1.pt")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    result = convert(alt, tmp_path / "out", bits=8)
    assert result.voices == ["NATM1"]
    assert (tmp_path / "out" / "voices" / "NATM1.safetensors").exists()


def test_convert_errors(src, tmp_path):
    with pytest.raises(ModelError, match="source folder not found"):
        convert(tmp_path / "nope", tmp_path / "dst")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError) as err:
        convert(empty, tmp_path / "dst")
    assert len(err.value.problems) == 3  # LM, Mimi and tokenizer all named
    with pytest.raises(ModelError, match="--bits"):
        convert(src, tmp_path / "dst", bits=3)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelError, match="destination exists"):
        convert(src, tmp_path / "taken")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("model.safetensors", "config.json", MIMI_FILE, TOKENIZER_FILE):
        (bad / name).write_bytes((src / name).read_bytes())
    (bad / "voices").mkdir()
    (bad / "voices" / "BROKEN.pt").write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="BROKEN.pt"):
        convert(bad, tmp_path / "dst2")
    assert not (tmp_path / "dst2").exists() and not (tmp_path / "dst2.partial").exists()


def test_cli_convert(src, tmp_path):
    from rolekit.cli.model import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    result = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "q8"), "--bits", "8"])
    assert result.exit_code == 0, result.output
    assert "temporal.safetensors" in result.output and "voices: 3" in result.output
    result = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "x"), "--bits", "5"])
    assert result.exit_code != 0 and "--bits" in str(result.exception)


def test_convert_and_weights_import_without_torch():
    code = "import sys; sys.modules['torch'] = None; import rolekit.convert, rolekit.lm.weights, rolekit.cli.model"
    subprocess.run([sys.executable, "-c", code], check=True)
