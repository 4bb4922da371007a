"""WAV (and any soundfile format) reading and writing, resampling to 24 kHz. numpy only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rolekit.atomic import replaced_file
from rolekit.errors import AudioInputError
from rolekit.frames import SAMPLE_RATE


def read_audio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, *, mono: bool = True, channel: int | None = None
) -> np.ndarray:
    """Read an audio file as float32 at `sample_rate` (stereo is downmixed when `mono`).

    `channel`: take that channel alone ([N]; 0 is the first, as NVIDIA's offline.py reads a stereo
    input) instead of the downmix; a file with fewer channels is an AudioInputError.
    Any sample rate (resampled with soxr), int or float WAV. Empty, NaN/Inf or unreadable input
    raises AudioInputError naming the file.
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise AudioInputError(f"{p}: no such audio file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise AudioInputError(f"{p}: cannot read audio ({exc})") from None
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise AudioInputError(f"{p}: --channel {channel}: the file has {data.shape[1]} channel(s)")
        data = data[:, channel]
    return check_audio(prepare(data, sr, sample_rate, mono=mono), str(p))


def prepare(data: np.ndarray, sr: int, sample_rate: int = SAMPLE_RATE, *, mono: bool = True) -> np.ndarray:
    """[N] or [N, C] samples at `sr` -> float32 at `sample_rate` ([N] when mono)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if mono:
        data = data.mean(axis=1, keepdims=True)
    if sr != sample_rate and data.shape[0] > 0:
        import soxr

        data = soxr.resample(data, sr, sample_rate, quality="HQ").astype(np.float32)
    return data[:, 0] if mono else data


def check_audio(pcm: np.ndarray, source: str = "audio") -> np.ndarray:
    """Reject empty and non-finite audio with a clear message."""
    if pcm.size == 0:
        raise AudioInputError(f"{source}: the audio is empty")
    if not np.all(np.isfinite(pcm)):
        raise AudioInputError(f"{source}: the audio contains NaN or Inf samples")
    return pcm


def write_wav(path: str | os.PathLike, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write [N] or [N, C] float audio as 16-bit PCM WAV, atomically (temp file + rename)."""
    import soundfile as sf

    with replaced_file(path) as tmp:
        sf.write(
            str(tmp),
            np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0),
            sample_rate,
            subtype="PCM_16",
            format="WAV",
        )
    return Path(path)
