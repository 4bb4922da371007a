"""CTranslate2 / faster-whisper folder -> mlx-whisper folder (config.json + weights.safetensors).

numpy + safetensors only: the CTranslate2 package is not needed. `model.bin` (binary format
version 6) is a list of named tensors plus aliases (the output projection is tied to the token
embedding). Whisper's fused attention projections are split back into query/key/value, the zero
key bias is dropped, conv weights move to MLX's (out, k, in) layout, and the alignment heads of
the CTranslate2 `config.json` are stored for word timestamps.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rolekit.atomic import replaced_file, replaced_folder, write_text
from rolekit.errors import ModelError

# CTranslate2 DataType enum (include/ctranslate2/types.h).
_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}
_BFLOAT16 = 5
_SUPPORTED_VERSIONS = (5, 6)


def read_ct2_model(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 `model.bin`, aliases resolved to their target arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _read(f, path)
    except (OSError, struct.error, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: not a readable CTranslate2 model.bin ({exc})") from None


def _read(f: BinaryIO, path: Path) -> dict[str, np.ndarray]:
    version = _u32(f)
    if version not in _SUPPORTED_VERSIONS:
        raise ModelError(f"{path}: CTranslate2 binary version {version} is not supported (5 or 6)")
    spec = _string(f)
    _u32(f)  # spec revision
    if "Whisper" not in spec:
        raise ModelError(f"{path}: this is a {spec!r} model, not a Whisper model")
    out: dict[str, np.ndarray] = {}
    for _ in range(_u32(f)):
        name = _string(f)
        rank = f.read(1)[0]
        shape = tuple(_u32(f) for _ in range(rank))
        dtype_id = f.read(1)[0]
        nbytes = _u32(f)
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"truncated at variable {name}")
        if dtype_id == _BFLOAT16:
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dtype_id in _DTYPES:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype_id])
        else:
            raise ValueError(f"unknown data type {dtype_id} of {name}")
        out[name] = arr.reshape(shape)
    for _ in range(_u32(f)):
        alias, target = _string(f), _string(f)
        out[alias] = out[target]
    return out


def _u32(f: BinaryIO) -> int:
    return struct.unpack("<I", f.read(4))[0]


def _string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n)[:-1].decode("utf-8")  # stored with a trailing NUL


def _linear(v: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """A CTranslate2 linear weight [out, in] as float32, dequantizing int8/int16 (weight / scale)."""
    w = v[f"{prefix}/weight"]
    scale = v.get(f"{prefix}/weight_scale")
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float32)
        w = w.astype(np.float32) / (scale[:, None] if scale.ndim == 1 else scale)
    return np.asarray(w, dtype=np.float32)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _layers(v: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for k in v if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    return max(found) + 1 if found else 0


def _ln(v: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = _f32(v[f"{src}/gamma"])
    out[f"{dst}.bias"] = _f32(v[f"{src}/beta"])


def _lin(v: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = _linear(v, src)
    if f"{src}/bias" in v:
        out[f"{dst}.bias"] = _f32(v[f"{src}/bias"])


def _split_qkv(v: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray], parts: str) -> None:
    """Split a fused projection ("qkv" or "kv") into mlx-whisper's query/key/value (key has no bias)."""
    w = _linear(v, src)  # [len(parts) * D, D]
    b = _f32(v[f"{src}/bias"])
    n = w.shape[0] // len(parts)
    names = {"q": "query", "k": "key", "v": "value"}
    for i, p in enumerate(parts):
        out[f"{dst}.{names[p]}.weight"] = w[i * n : (i + 1) * n]
        if p != "k":
            out[f"{dst}.{names[p]}.bias"] = b[i * n : (i + 1) * n]


def _block(v: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray], cross: bool) -> None:
    _ln(v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", out)
    _split_qkv(v, f"{src}/self_attention/linear_0", f"{dst}.attn", out, "qkv")
    _lin(v, f"{src}/self_attention/linear_1", f"{dst}.attn.out", out)
    if cross:
        _ln(v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", out)
        _lin(v, f"{src}/attention/linear_0", f"{dst}.cross_attn.query", out)
        _split_qkv(v, f"{src}/attention/linear_1", f"{dst}.cross_attn", out, "kv")
        _lin(v, f"{src}/attention/linear_2", f"{dst}.cross_attn.out", out)
    _ln(v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", out)
    _lin(v, f"{src}/ffn/linear_0", f"{dst}.mlp1", out)
    _lin(v, f"{src}/ffn/linear_1", f"{dst}.mlp2", out)


def ct2_to_mlx(
    variables: dict[str, np.ndarray], alignment_heads: list | None
) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict, mlx-whisper weight dict) from CTranslate2 Whisper variables."""
    v = variables
    n_enc, n_dec = _layers(v, "encoder"), _layers(v, "decoder")
    if n_enc == 0 or n_dec == 0:
        raise ModelError("no encoder/decoder layers found: not a CTranslate2 Whisper model")
    w: dict[str, np.ndarray] = {}
    for i in (1, 2):  # PyTorch (out, in, k) -> MLX (out, k, in)
        w[f"encoder.conv{i}.weight"] = np.ascontiguousarray(
            _f32(v[f"encoder/conv{i}/weight"]).transpose(0, 2, 1)
        )
        w[f"encoder.conv{i}.bias"] = _f32(v[f"encoder/conv{i}/bias"])
    for i in range(n_enc):
        _block(v, f"encoder/layer_{i}", f"encoder.blocks.{i}", w, cross=False)
    _ln(v, "encoder/layer_norm", "encoder.ln_post", w)
    emb = v["decoder/embeddings/weight"]
    w["decoder.token_embedding.weight"] = (
        _linear(v, "decoder/embeddings") if "decoder/embeddings/weight_scale" in v else _f32(emb)
    )
    w["decoder.positional_embedding"] = _f32(v["decoder/position_encodings/encodings"])
    for i in range(n_dec):
        _block(v, f"decoder/layer_{i}", f"decoder.blocks.{i}", w, cross=True)
    _ln(v, "decoder/layer_norm", "decoder.ln", w)

    n_state = int(w["encoder.conv1.bias"].shape[0])
    config = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": n_state,
        "n_audio_head": int(np.asarray(v.get("encoder/num_heads", n_state // 64)).reshape(-1)[0]),
        "n_audio_layer": n_enc,
        "n_vocab": int(emb.shape[0]),
        "n_text_ctx": int(w["decoder.positional_embedding"].shape[0]),
        "n_text_state": int(emb.shape[1]),
        "n_text_head": int(np.asarray(v.get("decoder/num_heads", emb.shape[1] // 64)).reshape(-1)[0]),
        "n_text_layer": n_dec,
    }
    if alignment_heads:
        w["alignment_heads"] = np.asarray(alignment_heads, dtype=np.int32).reshape(-1, 2)
    return config, w


def convert_ct2(src: Path, dst: Path, dtype: str = "float32") -> Path:
    """Convert a CTranslate2 Whisper folder `src` into an mlx-whisper folder `dst` (atomic)."""
    src, dst = Path(src), Path(dst)
    model_bin = src / "model.bin"
    if not model_bin.is_file():
        raise ModelError(f"{src}: no model.bin (expected a CTranslate2 / faster-whisper folder)")
    if dtype not in ("float32", "float16"):
        raise ModelError(f"dtype {dtype!r}: use float32 or float16")
    ct2_config: dict = {}
    if (src / "config.json").is_file():
        try:
            ct2_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{src / 'config.json'}: invalid JSON ({exc})") from None
    config, weights = ct2_to_mlx(read_ct2_model(model_bin), ct2_config.get("alignment_heads"))
    if dtype == "float16":
        weights = {k: (a.astype(np.float16) if a.dtype == np.float32 else a) for k, a in weights.items()}
    config["model_type"] = "whisper"
    write_mlx_whisper(dst, config, weights)
    return dst


def write_mlx_whisper(dst: Path, config: dict, weights: dict[str, np.ndarray]) -> None:
    """Write config.json + weights.safetensors into `dst`; other files in `dst` are kept.

    A new `dst` appears whole (a temporary sibling folder, renamed). In an existing one config.json
    goes first and comes back last, so an interrupted write leaves a folder that does not load."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(a) for k, a in weights.items()}
    text = json.dumps(config, indent=1) + "\n"
    if not Path(dst).exists():
        with replaced_folder(dst) as tmp:
            save_file(arrays, str(tmp / "weights.safetensors"))
            write_text(tmp / "config.json", text)
        return
    (Path(dst) / "config.json").unlink(missing_ok=True)
    with replaced_file(Path(dst) / "weights.safetensors", suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp))
    write_text(Path(dst) / "config.json", text)
