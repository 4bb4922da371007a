"""Token sampling: temperature + top-k + categorical, or greedy; seeded by explicit keys, no host sync.

Kyutai's sample_token draws from softmax(logits / T) restricted to the top k; the same distribution
is drawn here with mx.random.categorical over the masked, scaled logits. RNG streams cannot match
across frameworks, so parity tests use greedy decoding.

Per-row keys ([B, 2]): row b draws argmax(scaled_b + Gumbel noise from key b), so each row's sample
depends only on its own logits and key, never on the batch (one batched depformer for all rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import mlx.core as mx

from rolekit.frames import SAMPLING_DEFAULTS

Scalar = Union[float, int, mx.array]  # a python number, or a [B] array of per-row values


@dataclass
class SamplingParams:
    """Per-conversation sampling settings; any value may be a [B] array (one per batch row)."""

    text_temperature: Scalar = SAMPLING_DEFAULTS["text_temperature"]
    text_top_k: Scalar = SAMPLING_DEFAULTS["text_top_k"]
    audio_temperature: Scalar = SAMPLING_DEFAULTS["audio_temperature"]
    audio_top_k: Scalar = SAMPLING_DEFAULTS["audio_top_k"]
    greedy: bool = False


def row_params(params: list[SamplingParams] | SamplingParams) -> SamplingParams:
    """One SamplingParams with [B] values (greedy rows get temperature 0), for one batched sample."""
    if isinstance(params, SamplingParams):
        return params
    if all(p.greedy for p in params):
        return SamplingParams(greedy=True)

    def col(name: str, dtype: mx.Dtype) -> mx.array | float | int:
        values = [0.0 if p.greedy else float(getattr(p, name)) for p in params]
        if len(set(values)) == 1:  # a scalar keeps the cheaper top-k path (no full sort)
            return values[0]
        return mx.array(values, dtype=dtype)  # [B]

    return SamplingParams(
        text_temperature=col("text_temperature", mx.float32),
        text_top_k=col("text_top_k", mx.int32),
        audio_temperature=col("audio_temperature", mx.float32),
        audio_top_k=col("audio_top_k", mx.int32),
    )


def sample(logits: mx.array, temperature: Scalar, top_k: Scalar, key: mx.array | None) -> mx.array:
    """logits [B, V] -> tokens [B] int32. Rows with temperature <= 0 take the argmax; top_k <= 0 = all.

    key: None (global RNG), one key [2], or per-row keys [B, 2].
    """
    logits = logits.astype(mx.float32)
    b, v = logits.shape
    if isinstance(temperature, (int, float)):  # one temperature for all rows: no per-row greedy
        if temperature <= 0:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        return _draw(_top_k_scaled(logits, top_k, temperature), key).astype(mx.int32)
    greedy = mx.argmax(logits, axis=-1)  # [B]
    temp = mx.broadcast_to(mx.array(temperature, dtype=mx.float32).reshape(-1), (b,))  # [B]
    hot = temp > 0
    drawn = _draw(_top_k_scaled(logits, top_k, mx.where(hot, temp, 1.0)[:, None]), key)
    return mx.where(hot, drawn, greedy).astype(mx.int32)


def _draw(scaled: mx.array, key: mx.array | None) -> mx.array:
    """One categorical draw per row of softmax(scaled) [B, V] -> [B]."""
    if key is not None and key.ndim == 2:
        noise = _row_gumbel(key, scaled.shape[1])  # [B, V]
        return mx.argmax(scaled + noise, axis=-1)  # [B]
    return mx.random.categorical(scaled, axis=-1, key=key)  # [B]


def _top_k_scaled(logits: mx.array, top_k: Scalar, temperature: float | mx.array) -> mx.array:
    """logits / temperature [B, V] at the k largest logits of each row (ties at the k-th value are
    kept), -inf elsewhere; temperature > 0, a number or [B, 1]. The k largest are found on the
    logits themselves (a positive scale keeps their order), so the division lands in the same
    elementwise chain as the mask and the draw's noise: one fused kernel, not two."""
    b, v = logits.shape
    if isinstance(top_k, (int, float)):
        k = int(top_k)
        if k <= 0 or k >= v:
            return logits / temperature
        thresh = mx.min(mx.topk(logits, k, axis=-1), axis=-1, keepdims=True)  # [B, 1]
    else:
        k = mx.broadcast_to(mx.array(top_k).astype(mx.int32).reshape(-1), (b,))  # [B]
        k = mx.where((k <= 0) | (k > v), v, k)
        ordered = -mx.sort(-logits, axis=-1)  # [B, V] descending
        thresh = mx.take_along_axis(ordered, (k - 1)[:, None], axis=-1)  # [B, 1]
    return mx.where(logits >= thresh, logits / temperature, -mx.inf)


def _row_gumbel(keys: mx.array, v: int) -> mx.array:
    """keys [B, 2] -> Gumbel noise [B, V], row b drawn from keys[b] alone."""
    return mx.vmap(lambda k: mx.random.gumbel(shape=(v,), key=k))(keys)


def split_keys(key: mx.array | None, n: int) -> list[mx.array | None]:
    """n independent keys from one [2] (or per row from [B, 2] -> n x [B, 2]; Nones for the global RNG)."""
    if key is None:
        return [None] * n
    if key.ndim == 2:
        split = mx.vmap(lambda k: mx.random.split(k, n))(key)  # [B, n, 2]
        return [split[:, i] for i in range(n)]
    return list(mx.random.split(key, n))
