"""Loudness normalisation (pyloudnorm), as NVIDIA does for voice prompts (-24 LUFS). numpy only."""

from __future__ import annotations

import warnings

import numpy as np

from rolekit.frames import SAMPLE_RATE


def normalize_lufs(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, target: float = -24.0) -> np.ndarray:
    """Scale mono float audio to `target` integrated loudness; silence and very short clips unchanged."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    if pcm.shape[0] < int(0.4 * sample_rate) + 1:  # shorter than one gating block
        return pcm.astype(np.float32)
    loudness = meter.integrated_loudness(pcm.astype(np.float64))
    if not np.isfinite(loudness):
        return pcm.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns about clipping; we clip ourselves
        out = pyloudnorm.normalize.loudness(pcm.astype(np.float64), loudness, target)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
