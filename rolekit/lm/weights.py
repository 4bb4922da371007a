"""Load and save LM weights: NVIDIA's `model.safetensors` and the aufklarer MLX folder layout.

Internal names (those of `LM`) differ from NVIDIA's only in two places: RMSNorm `alpha` [1, 1, D]
becomes `weight` [D], and the fused `self_attn.in_proj_weight` becomes `self_attn.in_proj.weight`.

MLX layout (aufklarer/PersonaPlex-7B-MLX-4bit, -8bit; also what `rolekit convert` writes):
- `temporal.safetensors`: `layers.L.*` of the temporal transformer and `out_norm.alpha`;
- `depformer.safetensors`: `layers.L.*` of the depformer and `depformer_in.K.*`;
- `embeddings.safetensors`: embeddings and heads (`text_emb`, `emb.I`, `text_linear`, `linears.K`,
  `depformer_emb.I`, `depformer_text_emb`), stored 16-bit (a quantized folder's are quantized to 8
  bits as they are loaded off CUDA: `precision.table_bits`);
- `config.json`: `lm_kwargs` and/or `temporal`/`depformer` blocks, and a `quantization` block
  {bits, group_size, quantized_components} when linears are affine-quantized (uint32 weight +
  fp16 `scales`/`biases`; the fused projections as `in_proj_weight`/`in_proj_scales`/`in_proj_biases`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from rolekit.errors import ModelError, Problem
from rolekit.lm.checkpoint import SafetensorsFile
from rolekit.lm.config import LmConfig, from_mlx_config, personaplex_7b, to_mlx_blocks
from rolekit.lm.model import LM
from rolekit.lm.precision import activation_dtype, cache_dtype, scales_dtype, table_bits, weight_dtype

NVIDIA_FILE = "model.safetensors"
MLX_FILES = {
    "temporal": "temporal.safetensors",
    "depformer": "depformer.safetensors",
    "embeddings": "embeddings.safetensors",
}
GROUP_SIZE = 64
_NORMS = (".norm1.weight", ".norm2.weight")
_TABLES = ("text_emb.", "emb.", "text_linear.", "linears.", "depformer_emb.", "depformer_text_emb.")
_KYUTAI_FILE_KEYS = {"moshi_name", "mimi_name", "tokenizer_name", "lm_gen_config", "model_type", "model_id"}


# ---------------------------------------------------------------- names


def _is_norm(internal: str) -> bool:
    return internal.endswith(_NORMS) or internal == "out_norm.weight"


def nvidia_name(internal: str) -> str:
    if _is_norm(internal):
        return internal[: -len("weight")] + "alpha"
    return internal.replace(".self_attn.in_proj.weight", ".self_attn.in_proj_weight")


def internal_from_nvidia(name: str) -> str:
    if name.endswith(".alpha"):
        return name[: -len("alpha")] + "weight"
    return name.replace(".self_attn.in_proj_weight", ".self_attn.in_proj.weight")


def mlx_name(internal: str) -> tuple[str, str]:
    """Internal name -> (file kind, name inside that file) of the MLX layout."""
    name = nvidia_name(internal)
    for suffix in ("scales", "biases"):
        name = name.replace(f".self_attn.in_proj.{suffix}", f".self_attn.in_proj_{suffix}")
    if name.startswith("transformer."):
        return "temporal", name[len("transformer.") :]
    if name.startswith("out_norm."):
        return "temporal", name
    if name.startswith("depformer.layers."):
        return "depformer", name[len("depformer.") :]
    if name.startswith("depformer_in."):
        return "depformer", name
    return "embeddings", name


def internal_from_mlx(kind: str, name: str) -> str:
    if kind == "temporal" and name.startswith("layers."):
        name = "transformer." + name
    elif kind == "depformer" and name.startswith("layers."):
        name = "depformer." + name
    for suffix in ("weight", "scales", "biases"):
        name = name.replace(f".self_attn.in_proj_{suffix}", f".self_attn.in_proj.{suffix}")
    if name.endswith(".alpha"):
        name = name[: -len("alpha")] + "weight"
    return name


def is_table(internal: str, shape: tuple[int, ...], group_size: int = GROUP_SIZE) -> bool:
    """An embedding or output head's weight (`text_emb`, `emb.I`, `text_linear`, `linears.K`,
    `depformer_emb.I`, `depformer_text_emb`) whose rows split into groups."""
    return internal.startswith(_TABLES) and internal.endswith(".weight") and shape[-1] % group_size == 0


def is_quantizable(internal: str, shape: tuple[int, ...], group_size: int = GROUP_SIZE) -> bool:
    """Linear layers of the temporal transformer and the depformer; never embeddings or heads."""
    linear = internal.startswith(
        ("transformer.layers.", "depformer.layers.", "depformer_in.")
    ) and not _is_norm(internal)
    return linear and internal.endswith(".weight") and len(shape) == 2 and shape[1] % group_size == 0


def nvidia_keys(cfg: LmConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of NVIDIA's model.safetensors for `cfg` (built lazily, no compute)."""
    out = {}
    for name, arr in tree_flatten(LM(cfg).parameters()):
        shape = (1, 1, arr.shape[0]) if _is_norm(name) else tuple(arr.shape)
        out[nvidia_name(name)] = shape
    return out


# ---------------------------------------------------------------- loading


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.exists() or not path.read_text().strip():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(problems=[Problem(f"invalid JSON: {exc.msg}", str(path), exc.lineno)]) from None
    if not isinstance(data, dict):
        raise ModelError(problems=[Problem("expected a JSON object", str(path))])
    return data


def config_of(folder: Path) -> LmConfig:
    """The LmConfig of a model folder (NVIDIA's empty config.json means PersonaPlex 7B)."""
    data = read_config(folder)
    source = str(folder / "config.json")
    if "lm_kwargs" in data or "temporal" in data:
        return from_mlx_config(data, source)
    if "dim" in data:  # Kyutai hub config.json: flat lm_kwargs plus file names
        return LmConfig.from_kyutai({k: v for k, v in data.items() if k not in _KYUTAI_FILE_KEYS}, source)
    return personaplex_7b()


def nvidia_ring(cfg: LmConfig) -> LmConfig:
    """The temporal ring of NVIDIA's fork (moshi 0.1's RingKVCache, before Kyutai's fix #148):
    from step `context` on, the oldest slot gets a future position and is masked out, so a step
    attends to `context - 1` keys; Kyutai's fixed ring with `context - 1` slots is exactly that."""
    return replace(cfg, context=cfg.context - 1)


def load_lm(folder: Path, dtype: mx.Dtype | None = None, compat: str = "kyutai") -> LM:
    """Load NVIDIA's model.safetensors or an MLX-layout folder; problems raise ModelError.

    `dtype`: the activation dtype (None: `precision.activation_dtype("auto")`, bf16 on a GPU and
    fp32 on the CPU); weights are kept as `precision.weight_dtype` / `scales_dtype` say, so a
    bf16 checkpoint is never widened to fp32. The LM reports it as `lm.dtype`. `compat="nvidia"`:
    the ring cache of NVIDIA's fork (`nvidia_ring`); the default follows Kyutai's fix."""
    folder = Path(folder)
    dtype = dtype or activation_dtype("auto")
    if not folder.is_dir():
        raise ModelError(problems=[Problem("model folder not found", str(folder))])
    if compat not in ("kyutai", "nvidia"):
        raise ModelError(problems=[Problem(f"must be kyutai or nvidia, got {compat!r}", field="--compat")])
    if (folder / NVIDIA_FILE).exists():
        return _load_nvidia(folder, dtype, compat)
    if (folder / MLX_FILES["temporal"]).exists():
        return _load_mlx(folder, dtype, compat)
    wanted = ", ".join([NVIDIA_FILE, *MLX_FILES.values()])
    raise ModelError(problems=[Problem(f"no LM weights (expected {wanted})", str(folder))])


def _load_nvidia(folder: Path, dtype: mx.Dtype, compat: str) -> LM:
    cfg = config_of(folder)
    f = SafetensorsFile(folder / NVIDIA_FILE)
    _check(nvidia_keys(cfg), f.shapes, str(f.path))
    lm = LM(nvidia_ring(cfg) if compat == "nvidia" else cfg)
    weights = []
    for name in f.keys():
        internal = internal_from_nvidia(name)
        arr = f.get(name)
        if _is_norm(internal):
            arr = arr.reshape(-1)
        weights.append((internal, _cast(internal, arr, dtype)))
        mx.eval(weights[-1][1])  # one tensor at a time: the file's copy is freed before the next
    return _finish(lm, weights, dtype)


def _load_mlx(folder: Path, dtype: mx.Dtype, compat: str) -> LM:
    data = read_config(folder)
    cfg = config_of(folder)
    quant = data.get("quantization") or {}
    bits = int(quant.get("bits", 16))
    group_size = int(quant.get("group_size", GROUP_SIZE))
    files = {}
    for kind, fname in MLX_FILES.items():
        if not (folder / fname).exists():
            raise ModelError(
                problems=[Problem("file missing from the MLX model folder", str(folder / fname))]
            )
        files[kind] = SafetensorsFile(folder / fname)
    source: dict[str, tuple[str, str, tuple[int, ...]]] = {}  # internal -> (kind, name, shape)
    for kind, f in files.items():
        for name, shape in f.shapes.items():
            internal = internal_from_mlx(kind, name)
            if _is_norm(internal) and len(shape) == 3:
                shape = (shape[-1],)
            source[internal] = (kind, name, shape)
    lm = LM(nvidia_ring(cfg) if compat == "nvidia" else cfg)
    quantized = {n[: -len(".scales")] for n in source if n.endswith(".scales")}
    if quantized:
        if bits not in (2, 3, 4, 5, 6, 8):
            raise ModelError(
                problems=[
                    Problem(
                        f"quantized weights need bits 2-8, got {bits}",
                        str(folder / "config.json"),
                        None,
                        "quantization.bits",
                    )
                ]
            )
        nn.quantize(lm, group_size=group_size, bits=bits, class_predicate=lambda path, m: path in quantized)
    expected = {k: tuple(v.shape) for k, v in tree_flatten(lm.parameters())}
    _check(expected, {k: v[2] for k, v in source.items()}, str(folder))
    tables = {n[: -len(".weight")] for n, v in source.items() if is_table(n, v[2])}
    bits = table_bits(bool(quantized))
    if bits:
        nn.quantize(lm, group_size=GROUP_SIZE, bits=bits, class_predicate=lambda path, m: path in tables)
    weights = []
    stored = None
    for internal, (kind, name, shape) in source.items():
        arr = _cast(internal, files[kind].get(name).reshape(shape), dtype)
        if internal == "text_emb.weight":
            stored = arr.dtype
        if bits and internal[: -len(".weight")] in tables:  # one table at a time: no 16-bit copy of all
            w, scales, biases = mx.quantize(arr, GROUP_SIZE, bits)
            module = internal[: -len(".weight")]
            weights += [(internal, w), (f"{module}.scales", scales), (f"{module}.biases", biases)]
            mx.eval(w, scales, biases)
            continue
        weights.append((internal, arr))
        mx.eval(weights[-1][1])
    return _finish(lm, weights, dtype, stored)


def _cast(internal: str, arr: mx.array, activations: mx.Dtype) -> mx.array:
    """A stored tensor in the dtype the precision policy keeps it in (packed words unchanged)."""
    if arr.dtype == mx.uint32:
        return arr
    if internal.endswith((".scales", ".biases")):
        return arr.astype(scales_dtype(arr.dtype, activations))
    return arr.astype(weight_dtype(arr.dtype, activations, norm=_is_norm(internal)))


def _finish(
    lm: LM, weights: list[tuple[str, mx.array]], dtype: mx.Dtype, stored: mx.Dtype | None = None
) -> LM:
    """Load `weights` into `lm`; `stored`: the text embedding's dtype in the file (default: as given)."""
    stored = stored or dict(weights)["text_emb.weight"].dtype
    lm.load_weights(weights, strict=True)
    mx.eval(lm.parameters())
    lm.activation_dtype = dtype
    lm.cache_dtype = cache_dtype(dtype, stored, any(name.endswith(".scales") for name, _ in weights))
    lm.eval()
    return lm


def _check(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str) -> None:
    """ModelError naming every missing / unexpected key and every wrong shape."""
    problems = [Problem("missing tensor", where, None, k) for k in sorted(expected.keys() - found.keys())]
    problems += [Problem("unexpected tensor", where, None, k) for k in sorted(found.keys() - expected.keys())]
    for k in sorted(expected.keys() & found.keys()):
        if tuple(expected[k]) != tuple(found[k]):
            problems.append(Problem(f"shape {list(found[k])}, expected {list(expected[k])}", where, None, k))
    if problems:
        head = f"checkpoint does not match the model config ({len(problems)} problems)"
        raise ModelError(head + "\n" + "\n".join(str(p) for p in problems[:40]), problems)


# ---------------------------------------------------------------- saving


def lm_tensors(lm: LM) -> dict[str, mx.array]:
    """An unquantized LM's weights in NVIDIA naming (input of save_lm_mlx)."""
    out = {}
    for name, arr in tree_flatten(lm.parameters()):
        if name.endswith((".scales", ".biases")):
            raise ModelError("lm_tensors needs an unquantized LM")
        out[nvidia_name(name)] = arr.reshape(1, 1, -1) if _is_norm(name) else arr
    return out


class TensorSource(Protocol):
    def keys(self) -> Iterable[str]: ...
    def __getitem__(self, name: str) -> mx.array: ...


class MlxTensors:
    """An unquantized MLX-layout folder's LM tensors under NVIDIA's names (a `TensorSource`)."""

    def __init__(self, files: dict[str, SafetensorsFile]) -> None:
        self._where: dict[str, tuple[SafetensorsFile, str]] = {}
        for kind, f in files.items():
            for name in f.keys():
                self._where[nvidia_name(internal_from_mlx(kind, name))] = (f, name)

    def keys(self) -> list[str]:
        return list(self._where)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: f.shapes[name] for n, (f, name) in self._where.items()}

    def __getitem__(self, name: str) -> mx.array:
        f, inner = self._where[name]
        return f.get(inner)


def save_lm_mlx(
    tensors: TensorSource,
    folder: Path,
    cfg: LmConfig,
    bits: int | None = None,
    group_size: int = GROUP_SIZE,
    extra_config: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write the MLX layout from NVIDIA-named tensors (a dict or a SafetensorsFile).

    Streams: one output file at a time, one tensor at a time, so peak memory is about the largest
    output file plus one tensor. bits 4/8: affine-quantize the linears of temporal and depformer
    (fp16 scales/biases); 16: 16-bit floats kept, fp32 stored as bf16; None: dtypes kept.
    `progress(done, total)` is called after each tensor with input elements read so far.
    Returns the bytes written per file.
    """
    if bits not in (None, 4, 8, 16):
        raise ModelError(f"bits must be 4, 8 or 16, got {bits}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = nvidia_keys(cfg)
    names = list(tensors.keys())
    shapes = {n: tuple(tensors.shapes[n]) for n in names} if hasattr(tensors, "shapes") else None
    if shapes is None:
        shapes = {n: tuple(tensors[n].shape) for n in names}
    _check(expected, shapes, "input tensors")
    total, done = sum(int(np.prod(s)) for s in shapes.values()), 0
    sizes = {}
    for kind, fname in MLX_FILES.items():
        out: dict[str, mx.array] = {}
        for name in names:
            internal = internal_from_nvidia(name)
            if mlx_name(internal)[0] != kind:
                continue
            for iname, value in _encode(internal, tensors[name], bits, group_size):
                mx.eval(value)
                out[mlx_name(iname)[1]] = value
            done += int(np.prod(shapes[name]))
            if progress is not None:
                progress(done, total)
            mx.clear_cache()  # give the temporaries back: peak stays near this file's output
        mx.save_safetensors(str(folder / fname), out, metadata={"format": "mlx"})
        del out
        sizes[fname] = (folder / fname).stat().st_size
    config: dict[str, Any] = {"model_type": "personaplex", "version": "personaplex-7b-v1"}
    config.update(extra_config or {})
    config["lm_kwargs"] = cfg.to_kyutai()
    config.update(to_mlx_blocks(cfg))
    if bits in (4, 8):
        config["quantization"] = {
            "bits": bits,
            "group_size": group_size,
            "quantized_components": ["temporal", "depformer"],
        }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return sizes


def _encode(
    internal: str, arr: mx.array, bits: int | None, group_size: int
) -> Iterator[tuple[str, mx.array]]:
    if bits in (4, 8) and is_quantizable(internal, tuple(arr.shape), group_size):
        w, scales, biases = mx.quantize(arr.astype(mx.float32), group_size, bits)
        base = internal[: -len(".weight")]
        yield internal, w
        yield base + ".scales", scales.astype(mx.float16)
        yield base + ".biases", biases.astype(mx.float16)
        return
    if bits is not None and arr.dtype == mx.float32:
        arr = arr.astype(mx.bfloat16)
    yield internal, arr
