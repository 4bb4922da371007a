"""The 18 PersonaPlex voice presets, where their files live, and how many prefill frames a voice takes.

No mlx: frame counts come from a .safetensors header, a .pt (only if torch is installed) or a WAV's length.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rolekit.atomic import replaced_folder
from rolekit.errors import ModelError
from rolekit.frames import FRAME_SAMPLES, SAMPLE_RATE
from rolekit.frames import VOICES as VOICE_NAMES
from rolekit.hub import rolekit_cache
from rolekit.persona.schema import VOICE_FILE_SUFFIXES
from rolekit.ptfile import read_pt

VOICE_DIR = "voices"


@dataclass(frozen=True)
class Voice:
    name: str
    gender: str  # "female" | "male"
    style: str  # "natural" | "varied"

    @property
    def description(self) -> str:
        if self.style == "natural":
            return f"natural {self.gender} voice (NAT set: natural conversational speakers)"
        return f"varied {self.gender} voice (VAR set: a wider variety of speakers)"


def _voice(name: str) -> Voice:
    return Voice(
        name, "female" if name[3] == "F" else "male", "natural" if name.startswith("NAT") else "varied"
    )


VOICES: dict[str, Voice] = {name: _voice(name) for name in VOICE_NAMES}


def is_voice_file(name_or_path: str) -> bool:
    return name_or_path.lower().endswith(VOICE_FILE_SUFFIXES)


def voice_file(model_dir: Path, name_or_path: str) -> Path:
    """The file of a preset inside `model_dir/voices/` (.safetensors preferred, else .pt), or a given path."""
    if is_voice_file(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelError(f"voice file not found: {path}")
        return path
    name = name_or_path.upper()
    if name not in VOICES:
        raise ModelError(f"unknown voice {name_or_path!r}: use one of {', '.join(VOICES)}")
    for folder in (Path(model_dir) / VOICE_DIR, _extracted_voices(Path(model_dir))):
        if folder is None:
            continue
        for suffix in (".safetensors", ".pt"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    raise ModelError(
        f"voice {name} not found in {Path(model_dir) / VOICE_DIR} (the model folder has no such preset; "
        "NVIDIA ships .pt presets in voices.tgz)"
    )


def _extracted_voices(model_dir: Path) -> Path | None:
    """NVIDIA's repo ships the presets as `voices.tgz` (its server unpacks it on first use): unpack
    the `.pt` files once into rolekit's cache, keyed by the archive's size and mtime, and return the folder."""
    archive = model_dir / "voices.tgz"
    if not archive.is_file():
        return None
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = rolekit_cache() / "voices" / key
    if folder.is_dir():
        return folder
    try:
        with replaced_folder(folder, keep_if=Path.is_dir) as tmp, tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                base = Path(member.name).name  # never a path from the archive: only the file's own name
                if member.isfile() and base.endswith(".pt") and not base.startswith("."):
                    (tmp / base).write_bytes(tar.extractfile(member).read())
    except (tarfile.TarError, OSError) as exc:
        if folder.is_dir():  # a concurrent extraction won
            return folder
        raise ModelError(f"{archive}: cannot unpack the voice presets ({exc})") from exc
    return folder


def voice_frames(path: Path) -> int:
    """Prefill frames of a voice: 80 ms frames (LMGen calls) its prompt phase takes.

    A WAV or Mimi codes of T frames take T calls (the first only primes the token ring). A preset
    stores the E = T - 1 input embeddings of the calls that ran a forward pass, and its replay
    still takes E + 1 calls (personaplex.md §2.2 "Length"), so a preset counts E + 1 frames, the
    same as the WAV it was recorded from. With this count, `PrefillPlan.frames` equals the engine's
    offset after the prefill.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _safetensors_frames(path)
    if suffix == ".pt":
        return _pt_frames(path)
    if suffix == ".wav":
        import soundfile

        try:
            info = soundfile.info(str(path))
        except (RuntimeError, OSError) as exc:
            raise ModelError(f"{path}: unreadable WAV voice ({exc})") from exc
        samples = math.ceil(info.frames * SAMPLE_RATE / info.samplerate)
        return math.ceil(samples / FRAME_SAMPLES)
    raise ModelError(f"{path}: voice files are {', '.join(VOICE_FILE_SUFFIXES)}")


def safetensors_header(path: Path) -> dict[str, dict]:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, offsets), read without mlx."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        header.pop("__metadata__", None)
        ends = [int(t["data_offsets"][1]) for t in header.values()]
        data = os.path.getsize(path) - 8 - size
        if ends and max(ends) > data:
            raise ValueError(f"truncated: the tensors need {max(ends)} bytes of data, the file has {data}")
    except (OSError, struct.error, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ModelError(f"{path}: not a valid .safetensors file ({exc})") from None
    return header


def _safetensors_frames(path: Path) -> int:
    header = safetensors_header(path)
    try:
        if "embeddings" in header:
            return int(header["embeddings"]["shape"][0]) + 1  # [E, ...] + the priming call
        if "codes" in header:  # [8, T] Mimi codes of the voice
            shape = header["codes"]["shape"]
            return int(shape[-1] if shape[0] == 8 else shape[0])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: not a PersonaPlex voice ({type(exc).__name__}: {exc})") from None
    raise ModelError(f"{path}: no 'embeddings' or 'codes' tensor (found: {', '.join(header) or 'none'})")


def _pt_frames(path: Path) -> int:
    tensors = read_pt(path)
    if "embeddings" not in tensors or tensors["embeddings"].ndim < 1:
        raise ModelError(
            f"{path}: not a PersonaPlex voice .pt: no 'embeddings' tensor (found: {', '.join(tensors) or 'none'})"
        )
    return int(tensors["embeddings"].shape[0]) + 1  # [E, 1, 1, D] + the priming call
