"""Load Mimi weights in Kyutai's original checkpoint naming (318 keys, PyTorch layouts).

`tokenizer-e351c8d8-checkpoint125.safetensors` and the MLX folder's `mimi.safetensors` (a byte
copy of it) share the naming; conv weights are transposed to MLX layouts here, at load time.
The key table is derived from the MLX module tree, so it is the one place that ties both namings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import mlx.core as mx
import numpy as np

from rolekit.atomic import replaced_file
from rolekit.codec.config import MimiConfig, mimi_202407
from rolekit.codec.conv import CausalConv1d, CausalConvTranspose1d
from rolekit.codec.mimi import Mimi
from rolekit.codec.quantizer import Codebook
from rolekit.codec.transformer import LinearT
from rolekit.errors import ModelError

KYUTAI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
MLX_FILE = "mimi.safetensors"

Convert = Callable[[np.ndarray], np.ndarray]


def _same(w: np.ndarray) -> np.ndarray:
    return w


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 1, 0)  # torch [out, in, k] -> ours [k, in, out]


def _convtr(w: np.ndarray) -> np.ndarray:
    return w.transpose(0, 2, 1)  # torch [in, out, k] -> ours [in, k, out]


def _depthwise_convtr(w: np.ndarray) -> np.ndarray:
    return w[:, 0, :].T  # torch [C, 1, k] -> ours [k, C]


def _proj(w: np.ndarray) -> np.ndarray:
    return w[:, :, 0]  # 1x1 Conv1d [out, in, 1] -> Linear [out, in]


def _linear_t(w: np.ndarray) -> np.ndarray:
    return w.T  # Linear [out, in] -> LinearT [in, out]


_INVERSE: dict[Convert, Convert] = {
    _same: _same,
    _conv: _conv,
    _convtr: _convtr,
    _depthwise_convtr: lambda w: w.T[:, None, :],
    _proj: lambda w: w[:, :, None],
    _linear_t: _linear_t,
}
_META_KEY = "rolekit.mimi_config"


def _torch_prefix(name: str, module: object) -> tuple[str, Convert]:
    """Kyutai module path and weight conversion for one MLX module path."""
    if isinstance(module, CausalConv1d):
        if name == "downsample":
            return "downsample.conv.conv.conv", _conv
        return f"{name}.conv.conv", _conv
    if isinstance(module, CausalConvTranspose1d):
        if name == "upsample":
            return "upsample.convtr.convtr.convtr", _depthwise_convtr
        return f"{name}.convtr.convtr", _convtr
    if isinstance(module, LinearT):
        prefix, _ = _torch_prefix(name, None)
        return prefix, _linear_t
    if isinstance(module, Codebook):
        rvq, _, idx = name.rsplit(".", 2)
        return f"{rvq}.vq.layers.{idx}._codebook", _same
    if name.startswith("quantizer.") and name.endswith("_proj"):
        return name, _proj
    for side in ("encoder_transformer", "decoder_transformer"):
        if name == f"{side}.output_proj":
            return f"{side}.output_projs.0", _same
        if name.startswith(f"{side}.layers."):
            return name.replace(f"{side}.", f"{side}.transformer.", 1), _same
    return name, _same


def key_table(mimi: Mimi) -> dict[str, tuple[str, Convert]]:
    """Kyutai key -> (MLX parameter path, conversion). Excludes the unused `_initialized` flags."""
    table: dict[str, tuple[str, Convert]] = {}
    for name, module in mimi.named_modules():
        # underscore entries are derived caches (GEMM weights of the convs), not checkpoint tensors
        own = [k for k, v in module.items() if isinstance(v, mx.array) and not k.startswith("_")]
        if not own:
            continue
        prefix, convert = _torch_prefix(name, module)
        for k in own:
            tk = f"{prefix}.{k}"
            if tk.endswith("self_attn.in_proj.weight"):
                tk = tk.replace("in_proj.weight", "in_proj_weight")
            table[tk] = (f"{name}.{k}", convert if k == "weight" else _same)
    return table


def kyutai_key_shapes(mimi: Mimi) -> dict[str, tuple[int, ...]]:
    """Every key and PyTorch shape a checkpoint for this model holds (318 for the real Mimi)."""
    params = dict(_flat(mimi))
    shapes: dict[str, tuple[int, ...]] = {}
    for tk, (mk, convert) in key_table(mimi).items():
        shape = tuple(params[mk].shape)
        shapes[tk] = _torch_shape(shape, convert)
        if tk.endswith("._codebook.cluster_usage"):
            shapes[tk.replace("cluster_usage", "_initialized")] = (1,)
    return shapes


def _torch_shape(shape: tuple[int, ...], convert: Convert) -> tuple[int, ...]:
    if convert is _conv:
        return (shape[2], shape[1], shape[0])
    if convert is _convtr:
        return (shape[0], shape[2], shape[1])
    if convert is _depthwise_convtr:
        return (shape[1], 1, shape[0])
    if convert is _proj:
        return (*shape, 1)
    if convert is _linear_t:
        return (shape[1], shape[0])
    return shape


def _flat(mimi: Mimi) -> list[tuple[str, mx.array]]:
    from mlx.utils import tree_flatten

    return tree_flatten(mimi.parameters())


def resolve_mimi_file(path: Path) -> Path:
    """A safetensors file, or a folder holding `mimi.safetensors` or the Kyutai file name."""
    path = Path(path)
    if path.is_dir():
        for name in (MLX_FILE, KYUTAI_FILE):
            if (path / name).is_file():
                return path / name
        raise ModelError(f"{path}: no {MLX_FILE} or {KYUTAI_FILE} in this folder")
    if not path.is_file():
        raise ModelError(f"{path}: no such Mimi weights file")
    return path


def load_weights_into(mimi: Mimi, tensors: dict[str, np.ndarray], source: str = "weights") -> Mimi:
    """Check `tensors` (Kyutai naming) against the model's key set and shapes, then load them.

    `tensors` is consumed: each array is popped as it is converted, so the file's copy is freed
    tensor by tensor instead of doubling Mimi's memory at the end of a model's load."""
    expected = kyutai_key_shapes(mimi)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        f"{k}: expected {list(expected[k])}, found {list(tensors[k].shape)}"
        for k in set(expected) & set(tensors)
        if tuple(tensors[k].shape) != expected[k]
    )
    if missing or unexpected or wrong:
        lines = [f"{source}: not a Mimi checkpoint for this configuration"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"{title} keys ({len(items)}): " + ", ".join(shown))
        raise ModelError("\n".join(lines))
    pairs = []
    for tk, (mk, convert) in key_table(mimi).items():
        pairs.append(
            (mk, mx.array(np.ascontiguousarray(convert(np.asarray(tensors.pop(tk), dtype=np.float32)))))
        )
    mimi.load_weights(pairs, strict=True)
    mimi.prepare()
    mx.eval(mimi.parameters())
    return mimi


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # corrupt header, truncated file, bf16 that numpy cannot hold
        try:
            return _read_via_mlx(path)
        except Exception:
            raise ModelError(f"{path}: cannot read safetensors ({exc})") from None


def _read_via_mlx(path: Path) -> dict[str, np.ndarray]:
    arrays = mx.load(str(path))
    return {k: np.array(v.astype(mx.float32)) for k, v in arrays.items()}


def load_mimi(
    path: Path, num_codebooks: int = 8, cfg: MimiConfig | None = None, compat: str = "kyutai"
) -> Mimi:
    """Mimi from a safetensors file or a model folder.

    The configuration is `cfg` if given, else the one `save_mimi` stored in the file's metadata
    (tiny models), else the real `mimi_202407`. `num_codebooks` levels are used (capped at the
    model's total). `compat="nvidia"`: the transformer ring of NVIDIA's fork (see `nvidia_ring`).
    """
    file = resolve_mimi_file(Path(path))
    if cfg is None:
        cfg = _config_from_metadata(file) or mimi_202407()
    cfg = replace(cfg, num_codebooks=min(num_codebooks, cfg.total_codebooks))
    if compat == "nvidia":
        cfg = nvidia_ring(cfg)
    return load_weights_into(Mimi(cfg), read_safetensors(file), str(file))


def nvidia_ring(cfg: MimiConfig) -> MimiConfig:
    """The streaming transformer of NVIDIA's fork (moshi 0.1's RingKVCache, before Kyutai's fix
    #148): once the ring is full, the oldest slot is given a future position and masked out, so
    every query sees one key less. That equals Kyutai's fixed ring with `context - 1` slots."""
    return replace(cfg, context=cfg.context - 1)


def export_kyutai(mimi: Mimi) -> dict[str, np.ndarray]:
    """The model's weights in Kyutai naming and PyTorch layouts (what rustymimi and moshi read)."""
    params = dict(_flat(mimi))
    out: dict[str, np.ndarray] = {}
    for tk, (mk, convert) in key_table(mimi).items():
        out[tk] = np.ascontiguousarray(_INVERSE[convert](np.array(params[mk])))
        if tk.endswith("._codebook.cluster_usage"):
            out[tk.replace("cluster_usage", "_initialized")] = np.ones((1,), dtype=np.float32)
    return out


def save_mimi(mimi: Mimi, path: Path) -> Path:
    """Write a Kyutai-named safetensors file; the config goes in the metadata for `load_mimi`."""
    from safetensors.numpy import save_file

    meta = {_META_KEY: json.dumps(asdict(mimi.cfg))}
    with replaced_file(path, suffix=".safetensors") as tmp:
        save_file(export_kyutai(mimi), str(tmp), metadata=meta)
    return Path(path)


def _config_from_metadata(file: Path) -> MimiConfig | None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ModelError(f"{file}: cannot read safetensors ({exc})") from None
    if _META_KEY not in meta:
        return None
    try:
        fields = json.loads(meta[_META_KEY])
        fields["ratios"] = tuple(fields["ratios"])
        return MimiConfig(**fields)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{file}: bad {_META_KEY} metadata ({exc})") from None
