"""`rolekit convert` and quantize-on-first-load: a PersonaPlex checkpoint folder -> an MLX folder.

SRC holds `model.safetensors` (LM, bf16; or an unquantized MLX-layout LM, e.g. the `tiny`
model), the Mimi file, `tokenizer_spm_32k_3.model`, voices (`voices/*.pt` or `*.safetensors`, or
NVIDIA's `voices.tgz`) and an optional `config.json`. DST gets the aufklarer layout (see
lm/weights.py), `mimi.safetensors` (byte copy), the tokenizer, and `voices/*.safetensors`
(`embeddings` as fp16, other tensors as fp32, like aufklarer).

The LM is streamed tensor by tensor. torch is needed only to read `.pt` voices (`rolekit.ptfile`).
DST appears atomically (`rolekit.atomic.replaced_folder`: a temporary sibling, then renamed): a crash never leaves a
folder that later loads. `quantized_copy` converts once into `$ROLEKIT_CACHE/models/` under a
file lock, so concurrent first loads wait for one conversion instead of racing.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.atomic import remove_leftovers, replaced_file, replaced_folder
from rolekit.codec.config import MIMI_FILE
from rolekit.errors import ModelError, Problem
from rolekit.frames import SAMPLING_DEFAULTS
from rolekit.hub import rolekit_cache
from rolekit.lm.config import LmConfig
from rolekit.ptfile import read_pt

Progress = Callable[[int, int], None]  # (bytes done, bytes in all) of the LM being written

MIMI_OUT = "mimi.safetensors"
QUANT_BITS = {"q4": 4, "q8": 8, "bf16": 16}
# Kept from the source's config.json: what the folder is (a random model stays labelled random).
_CARRIED = ("random_weights", "label")
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
LM_FILE = "model.safetensors"


@dataclass
class ConvertResult:
    dst: Path
    bits: int
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    voices: list[str] = field(default_factory=list)


def convert(
    src: Path, dst: Path, bits: int = 4, overwrite: bool = False, progress: Progress | None = None
) -> ConvertResult:
    """Convert SRC (PyTorch folder) into DST (MLX folder), written via a temporary sibling then renamed."""
    from rolekit.lm.weights import config_of

    src, dst = Path(src), Path(dst)
    if bits not in (4, 8, 16):
        raise ModelError(problems=[Problem(f"must be 4, 8 or 16, got {bits}", field="--bits")])
    _check_source(src)
    if dst.exists() and not dst.is_dir():
        raise ModelError(problems=[Problem("destination is a file, not a folder", str(dst))])
    if dst.exists() and not overwrite:
        raise ModelError(problems=[Problem("destination exists (use --overwrite)", str(dst))])
    if dst.exists() and not _written_by_rolekit(dst):
        raise ModelError(
            problems=[
                Problem(
                    "--overwrite replaces only an empty folder or a model folder rolekit wrote "
                    f"({', '.join(WRITTEN_FILES)}); refusing to delete this one",
                    str(dst),
                )
            ]
        )
    cfg = config_of(src)
    try:
        with replaced_folder(dst) as tmp:
            result = _write(src, tmp, cfg, bits, progress)
    except OSError as exc:  # disk full, permissions, the final swap
        raise ModelError(problems=[Problem(f"cannot write the destination ({exc})", str(dst))]) from None
    result.dst = dst
    return result


WRITTEN_FILES = ("config.json", "temporal.safetensors", "depformer.safetensors", MIMI_OUT, TOKENIZER_FILE)


def _written_by_rolekit(folder: Path) -> bool:
    """An empty folder, or one holding every file `convert` writes (an earlier conversion)."""
    names = {p.name for p in folder.iterdir()}
    return not names or all(n in names for n in WRITTEN_FILES)


def quantized_copy(
    src: Path, model_id: str, quant: str, progress: Progress | None = None
) -> tuple[Path, bool]:
    """`$ROLEKIT_CACHE/models/<model_id>-<quant>/`, converted from SRC on first use.

    Returns (folder, converted now). A file lock next to the folder serialises concurrent first
    loads: the second waits, then finds the finished folder."""
    from filelock import FileLock

    if quant not in QUANT_BITS:
        raise ModelError(problems=[Problem(f"must be one of {', '.join(QUANT_BITS)}", field="--quant")])
    dst = rolekit_cache() / "models" / f"{model_id}-{quant}"
    if (dst / "config.json").is_file():
        return dst, False
    dst.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dst.with_name(dst.name + ".lock"))):
        if (dst / "config.json").is_file():  # another process converted it while we waited
            return dst, False
        remove_leftovers(dst)  # of a crashed conversion
        convert(src, dst, QUANT_BITS[quant], overwrite=True, progress=progress)
    return dst, True


def lm_source(src: Path) -> Any:
    """The LM tensors of SRC in NVIDIA naming: its model.safetensors, or an unquantized MLX layout."""
    from rolekit.lm.checkpoint import SafetensorsFile
    from rolekit.lm.weights import MLX_FILES, MlxTensors, read_config

    if (src / LM_FILE).exists():
        return SafetensorsFile(src / LM_FILE)
    if read_config(src).get("quantization"):
        raise ModelError(
            problems=[Problem("already quantized: convert from the bf16 checkpoint instead", str(src))]
        )
    return MlxTensors({kind: SafetensorsFile(src / name) for kind, name in MLX_FILES.items()})


def _write(src: Path, tmp: Path, cfg: LmConfig, bits: int, progress: Progress | None) -> ConvertResult:
    from rolekit.lm.weights import read_config, save_lm_mlx

    result = ConvertResult(dst=tmp, bits=bits)
    voices = convert_voices(src, tmp / "voices")
    result.voices = voices
    source_cfg = read_config(src)
    extra: dict[str, Any] = {k: source_cfg[k] for k in _CARRIED if k in source_cfg}
    if "rolekit_model" in source_cfg:
        extra["rolekit_model"] = f"{source_cfg['rolekit_model']}-{_format(bits)}"
    extra.update(
        {
            "base_model": source_cfg.get("base_model", "nvidia/personaplex-7b-v1"),
            "mimi": {"file": MIMI_OUT, "num_codebooks": 8},
            "sampling": dict(SAMPLING_DEFAULTS),
            "voices": voices,
        }
    )
    sizes = save_lm_mlx(lm_source(src), tmp, cfg, bits=bits, extra_config=extra, progress=progress)
    result.files.update(sizes)
    shutil.copyfile(_mimi_file(src), tmp / MIMI_OUT)
    shutil.copyfile(src / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    for name in (MIMI_OUT, TOKENIZER_FILE):
        result.files[name] = (tmp / name).stat().st_size
    return result


def _format(bits: int) -> str:
    return {4: "q4", 8: "q8"}.get(bits, "bf16")


def _mimi_file(src: Path) -> Path:
    return src / MIMI_FILE if (src / MIMI_FILE).exists() else src / MIMI_OUT


def _check_source(src: Path) -> None:
    from rolekit.lm.weights import MLX_FILES

    if not src.is_dir():
        raise ModelError(problems=[Problem("source folder not found", str(src))])
    lm = LM_FILE if (src / LM_FILE).exists() or not (src / MLX_FILES["temporal"]).exists() else None
    wanted = [n for n in (lm, TOKENIZER_FILE) if n]
    missing = [src / name for name in wanted if not (src / name).exists()]
    if not _mimi_file(src).exists():
        missing.append(src / MIMI_FILE)
    if missing:
        raise ModelError(problems=[Problem("missing from the checkpoint folder", str(m)) for m in missing])


def convert_voices(src: Path, out_dir: Path) -> list[str]:
    """voices/*.pt | *.safetensors (or voices.tgz) -> out_dir/NAME.safetensors; returns the names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    folder = src / "voices"
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix == ".safetensors":
                shutil.copyfile(path, out_dir / path.name)
            elif path.suffix == ".pt":
                _write_voice(out_dir / f"{path.stem}.safetensors", read_pt(path))
            else:
                continue
            names.append(path.stem)
    elif (src / "voices.tgz").exists():
        with tarfile.open(src / "voices.tgz", "r:gz") as tar:
            for member in tar.getmembers():
                stem = Path(member.name).stem
                if member.isfile() and member.name.endswith(".pt") and not stem.startswith("."):
                    data = tar.extractfile(member).read()
                    _write_voice(out_dir / f"{stem}.safetensors", read_pt(data, f"voices.tgz:{member.name}"))
                    names.append(stem)
    return sorted(names)


def _write_voice(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """aufklarer's voice layout: "embeddings" as float16, every other tensor as float32."""
    from safetensors.numpy import save_file

    out = {
        k: np.ascontiguousarray(a, np.float16 if k == "embeddings" else np.float32)
        for k, a in tensors.items()
    }
    with replaced_file(path, suffix=".safetensors") as tmp:
        save_file(out, str(tmp))
