"""Token sampling: temperature + top-k + categorical, or greedy; seeded by explicit keys, no host sync.

Kyutai's sample_token draws from softmax(logits / T) restricted to the top k; the same distribution
is drawn here with mx.random.categorical over the masked, scaled logits. RNG streams cannot match
across frameworks, so parity tests use greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import mlx.core as mx

Scalar = Union[float, int, mx.array]  # a python number, or a [B] array of per-row values


@dataclass
class SamplingParams:
    """Per-conversation sampling settings; any value may be a [B] array (one per batch row)."""

    text_temperature: Scalar = 0.7
    text_top_k: Scalar = 25
    audio_temperature: Scalar = 0.8
    audio_top_k: Scalar = 250
    greedy: bool = False


def sample(logits: mx.array, temperature: Scalar, top_k: Scalar, key: mx.array | None) -> mx.array:
    """logits [B, V] -> tokens [B] int32. Rows with temperature <= 0 take the argmax; top_k <= 0 = all."""
    logits = logits.astype(mx.float32)
    b, v = logits.shape
    greedy = mx.argmax(logits, axis=-1)  # [B]
    if isinstance(temperature, (int, float)) and temperature <= 0:
        return greedy.astype(mx.int32)
    temp = mx.broadcast_to(mx.array(temperature, dtype=mx.float32).reshape(-1), (b,))  # [B]
    hot = temp > 0
    scaled = logits / mx.where(hot, temp, 1.0)[:, None]  # [B, V]
    scaled = _top_k_mask(scaled, top_k)
    drawn = mx.random.categorical(scaled, axis=-1, key=key)  # [B]
    return mx.where(hot, drawn, greedy).astype(mx.int32)


def _top_k_mask(scaled: mx.array, top_k: Scalar) -> mx.array:
    """Keep the k largest logits of each row (ties at the k-th value are kept), -inf elsewhere."""
    b, v = scaled.shape
    if isinstance(top_k, (int, float)):
        k = int(top_k)
        if k <= 0 or k >= v:
            return scaled
        thresh = mx.min(mx.topk(scaled, k, axis=-1), axis=-1, keepdims=True)  # [B, 1]
    else:
        k = mx.broadcast_to(mx.array(top_k).astype(mx.int32).reshape(-1), (b,))  # [B]
        k = mx.where((k <= 0) | (k > v), v, k)
        ordered = -mx.sort(-scaled, axis=-1)  # [B, V] descending
        thresh = mx.take_along_axis(ordered, (k - 1)[:, None], axis=-1)  # [B, 1]
    return mx.where(scaled >= thresh, scaled, -mx.inf)


def split_keys(key: mx.array | None, n: int) -> list[mx.array | None]:
    """n independent keys from one (or n Nones when sampling from the global RNG)."""
    if key is None:
        return [None] * n
    return list(mx.random.split(key, n))
