"""`rolekit convert`: a PyTorch PersonaPlex checkpoint folder -> an MLX model folder.

SRC holds `model.safetensors` (LM, bf16), the Mimi file, `tokenizer_spm_32k_3.model`, voices
(`voices/*.pt` or `*.safetensors`, or NVIDIA's `voices.tgz`) and an optional `config.json`.
DST gets the aufklarer layout (see lm/weights.py), `mimi.safetensors` (byte copy),
the tokenizer, and `voices/*.safetensors` (bf16 -> fp16, other tensors -> fp32, like aufklarer).

The LM is streamed tensor by tensor. torch is imported only to read `.pt` voices.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rolekit.codec.config import MIMI_FILE
from rolekit.errors import ModelError, Problem
from rolekit.frames import SAMPLING_DEFAULTS
from rolekit.lm.config import LmConfig

MIMI_OUT = "mimi.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
LM_FILE = "model.safetensors"


@dataclass
class ConvertResult:
    dst: Path
    bits: int
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    voices: list[str] = field(default_factory=list)


def convert(src: Path, dst: Path, bits: int = 4, overwrite: bool = False) -> ConvertResult:
    """Convert SRC (PyTorch folder) into DST (MLX folder), written via `DST.partial` then renamed."""
    from rolekit.lm.weights import config_of

    src, dst = Path(src), Path(dst)
    if bits not in (4, 8, 16):
        raise ModelError(problems=[Problem(f"must be 4, 8 or 16, got {bits}", field="--bits")])
    _check_source(src)
    if dst.exists() and not overwrite:
        raise ModelError(problems=[Problem("destination exists (use --overwrite)", str(dst))])
    cfg = config_of(src)
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        result = _write(src, tmp, cfg, bits)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    result.dst = dst
    return result


def _write(src: Path, tmp: Path, cfg: LmConfig, bits: int) -> ConvertResult:
    from rolekit.lm.checkpoint import SafetensorsFile
    from rolekit.lm.weights import save_lm_mlx

    result = ConvertResult(dst=tmp, bits=bits)
    voices = convert_voices(src, tmp / "voices")
    result.voices = voices
    extra = {
        "base_model": "nvidia/personaplex-7b-v1",
        "mimi": {"file": MIMI_OUT, "num_codebooks": 8},
        "sampling": dict(SAMPLING_DEFAULTS),
        "voices": voices,
    }
    sizes = save_lm_mlx(SafetensorsFile(src / LM_FILE), tmp, cfg, bits=bits, extra_config=extra)
    result.files.update(sizes)
    shutil.copyfile(src / MIMI_FILE, tmp / MIMI_OUT)
    shutil.copyfile(src / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    for name in (MIMI_OUT, TOKENIZER_FILE):
        result.files[name] = (tmp / name).stat().st_size
    return result


def _check_source(src: Path) -> None:
    if not src.is_dir():
        raise ModelError(problems=[Problem("source folder not found", str(src))])
    missing = [name for name in (LM_FILE, MIMI_FILE, TOKENIZER_FILE) if not (src / name).exists()]
    if missing:
        raise ModelError(
            problems=[Problem("missing from the checkpoint folder", str(src / m)) for m in missing]
        )


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
                _write_voice(out_dir / f"{path.stem}.safetensors", _read_pt(path.read_bytes(), str(path)))
            else:
                continue
            names.append(path.stem)
    elif (src / "voices.tgz").exists():
        with tarfile.open(src / "voices.tgz", "r:gz") as tar:
            for member in tar.getmembers():
                stem = Path(member.name).stem
                if member.isfile() and member.name.endswith(".pt") and not stem.startswith("."):
                    data = tar.extractfile(member).read()
                    _write_voice(out_dir / f"{stem}.safetensors", _read_pt(data, f"voices.tgz:{member.name}"))
                    names.append(stem)
    return sorted(names)


def _read_pt(data: bytes, where: str) -> dict[str, np.ndarray]:
    """A NVIDIA voice `.pt` ({"embeddings": [T, 1, 1, D], "cache": [1, 17, 4]}) as numpy."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            problems=[Problem("reading .pt voices needs torch: pip install 'rolekit[convert]'", where)]
        ) from exc
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt pickles
        raise ModelError(
            problems=[Problem(f"cannot read voice file ({type(exc).__name__})", where)]
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(problems=[Problem("expected a dict of tensors", where)])
    out = {}
    for key, t in obj.items():
        t = t.detach().cpu()
        t = t.to(torch.float16) if t.dtype == torch.bfloat16 else t.to(torch.float32)
        out[key] = t.contiguous().numpy()
    return out


def _write_voice(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))
