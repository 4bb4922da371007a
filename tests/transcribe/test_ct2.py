"""CTranslate2 -> mlx-whisper conversion on a small synthetic model.bin (float16 and int8 weights)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from rolekit.errors import ModelError
from rolekit.transcribe.ct2 import convert_ct2, read_ct2_model
from rolekit.transcribe.whisper import resolve_whisper

D, HEADS, VOCAB, TEXT_CTX, AUDIO_CTX, MELS = 64, 2, 51864, 448, 1500, 80
_DT = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}


def _write_ct2(path, variables, aliases):
    def s(x):
        b = x.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", 6), s("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, a in variables.items():
        a = np.ascontiguousarray(a)
        out += [
            s(name),
            bytes([a.ndim]),
            b"".join(struct.pack("<I", d) for d in a.shape),
            bytes([_DT[a.dtype]]),
            struct.pack("<I", a.nbytes),
            a.tobytes(),
        ]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases:
        out += [s(alias), s(target)]
    path.write_bytes(b"".join(out))


def _synthetic(rng, int8_layer=False):
    f16 = lambda *shape: (rng.standard_normal(shape) * 0.05).astype(np.float16)  # noqa: E731
    v = {
        "encoder/num_heads": np.array(HEADS, np.int16),
        "decoder/num_heads": np.array(HEADS, np.int16),
        "encoder/conv1/weight": f16(D, MELS, 3),
        "encoder/conv1/bias": f16(D),
        "encoder/conv2/weight": f16(D, D, 3),
        "encoder/conv2/bias": f16(D),
        "encoder/position_encodings/encodings": f16(AUDIO_CTX, D),
        "decoder/embeddings/weight": f16(VOCAB, D),
        "decoder/position_encodings/encodings": f16(TEXT_CTX, D),
    }

    def ln(p):
        v[f"{p}/gamma"], v[f"{p}/beta"] = f16(D), f16(D)

    def lin(p, o, i):
        v[f"{p}/weight"], v[f"{p}/bias"] = f16(o, i), f16(o)

    def block(p, cross):
        ln(f"{p}/self_attention/layer_norm")
        lin(f"{p}/self_attention/linear_0", 3 * D, D)
        lin(f"{p}/self_attention/linear_1", D, D)
        if cross:
            ln(f"{p}/attention/layer_norm")
            lin(f"{p}/attention/linear_0", D, D)
            lin(f"{p}/attention/linear_1", 2 * D, D)
            lin(f"{p}/attention/linear_2", D, D)
        ln(f"{p}/ffn/layer_norm")
        lin(f"{p}/ffn/linear_0", 4 * D, D)
        lin(f"{p}/ffn/linear_1", D, 4 * D)

    block("encoder/layer_0", False)
    ln("encoder/layer_norm")
    for i in range(2):
        block(f"decoder/layer_{i}", True)
    ln("decoder/layer_norm")
    if int8_layer:  # CTranslate2 int8: q = round(w * scale), scale = 127 / max|w| per row
        w = v["encoder/layer_0/ffn/linear_0/weight"].astype(np.float32)
        scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
        v["encoder/layer_0/ffn/linear_0/weight"] = np.round(w * scale[:, None]).astype(np.int8)
        v["encoder/layer_0/ffn/linear_0/weight_scale"] = scale
    return v


@pytest.fixture
def ct2_dir(tmp_path):
    v = _synthetic(np.random.default_rng(0), int8_layer=True)
    src = tmp_path / "ct2"
    src.mkdir()
    _write_ct2(src / "model.bin", v, [("decoder/projection/weight", "decoder/embeddings/weight")])
    (src / "config.json").write_text(json.dumps({"alignment_heads": [[1, 0], [1, 1]], "suppress_ids": [1]}))
    return src, v


def test_reader_resolves_aliases_and_dtypes(ct2_dir):
    src, v = ct2_dir
    got = read_ct2_model(src / "model.bin")
    assert got["decoder/projection/weight"] is got["decoder/embeddings/weight"]
    assert got["encoder/layer_0/ffn/linear_0/weight"].dtype == np.int8
    np.testing.assert_array_equal(got["encoder/conv1/weight"], v["encoder/conv1/weight"])


@pytest.mark.asr
def test_convert_splits_fused_projections_and_loads_in_mlx_whisper(ct2_dir, tmp_path):
    src, v = ct2_dir
    dst = convert_ct2(src, tmp_path / "mlx")
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg == {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 64,
        "n_audio_head": 2,
        "n_audio_layer": 1,
        "n_vocab": 51864,
        "n_text_ctx": 448,
        "n_text_state": 64,
        "n_text_head": 2,
        "n_text_layer": 2,
        "model_type": "whisper",
    }
    from safetensors.numpy import load_file

    w = load_file(str(dst / "weights.safetensors"))
    qkv = v["decoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(w["decoder.blocks.1.attn.query.weight"], qkv[:D])
    np.testing.assert_array_equal(w["decoder.blocks.1.attn.key.weight"], qkv[D : 2 * D])
    np.testing.assert_array_equal(w["decoder.blocks.1.attn.value.weight"], qkv[2 * D :])
    assert "decoder.blocks.1.attn.key.bias" not in w and "decoder.blocks.0.cross_attn.key.bias" not in w
    kv = v["decoder/layer_0/attention/linear_1/bias"].astype(np.float32)
    np.testing.assert_array_equal(w["decoder.blocks.0.cross_attn.value.bias"], kv[D:])
    np.testing.assert_array_equal(
        w["encoder.conv2.weight"], v["encoder/conv2/weight"].astype(np.float32).transpose(0, 2, 1)
    )
    np.testing.assert_array_equal(w["alignment_heads"], [[1, 0], [1, 1]])
    # int8 weights are dequantized back to within one quantization step
    ref = _synthetic(np.random.default_rng(0))["encoder/layer_0/ffn/linear_0/weight"].astype(np.float32)
    step = np.abs(ref).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(w["encoder.blocks.0.mlp1.weight"] - ref) <= step * 0.51)

    import mlx_whisper
    from mlx_whisper.load_models import load_model

    model = load_model(str(dst))
    assert model.alignment_heads.tolist() == [[1, 0], [1, 1]]
    t = np.arange(16000) / 16000
    out = mlx_whisper.transcribe(
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        path_or_hf_repo=str(dst),
        fp16=False,
        temperature=0.0,
        sample_len=8,
        condition_on_previous_text=False,
    )
    assert set(out) >= {"text", "segments", "language"}


def test_convert_rejects_bad_input(tmp_path):
    with pytest.raises(ModelError, match="no model.bin"):
        convert_ct2(tmp_path, tmp_path / "out")
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 2) + b"junk")
    with pytest.raises(ModelError, match="binary version 2"):
        convert_ct2(tmp_path, tmp_path / "out")
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 6) + b"\x05")
    with pytest.raises(ModelError, match="not a readable CTranslate2 model.bin"):
        convert_ct2(tmp_path, tmp_path / "out")


def test_resolve_whisper_messages(ct2_dir, tmp_path):
    src, _ = ct2_dir
    with pytest.raises(ModelError, match="import-ct2"):
        resolve_whisper(str(src))
    with pytest.raises(ModelError, match="no such Whisper folder"):
        resolve_whisper(str(tmp_path / "missing"))
    dst = convert_ct2(src, tmp_path / "mlx")
    assert resolve_whisper(str(dst)) == dst
    # a hub id goes through rolekit.hub, offline in tests: a clear ModelError, no network
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        resolve_whisper("nobody/whisper-not-cached")
