"""The temporal transformer (one position per 80 ms step) and its explicit ring KV cache."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from rolekit.lm.config import LmConfig
from rolekit.nn.attention import Attention, RingKV
from rolekit.nn.mlp import GatedMLP
from rolekit.nn.norm import RMSNorm


@dataclass
class LmCache:
    """Ring KV caches of every temporal layer, and `offset` = positions consumed so far.

    All rows of the batch advance together. Arrays are replaced, never mutated in place, so a
    snapshot stays valid after later steps.
    """

    rings: list[RingKV] = field(default_factory=list)
    offset: int = 0

    def snapshot(self) -> dict[str, mx.array]:
        out: dict[str, mx.array] = {"offset": mx.array(self.offset, dtype=mx.int32)}
        for i, ring in enumerate(self.rings):
            out[f"layers.{i}.keys"] = ring.keys
            out[f"layers.{i}.values"] = ring.values
        return out

    def restore(self, state: dict[str, mx.array]) -> None:
        n = len(self.rings)
        self.rings = [RingKV(state[f"layers.{i}.keys"], state[f"layers.{i}.values"]) for i in range(n)]
        self.offset = int(state["offset"].item())

    def arrays(self) -> list[mx.array]:
        return [a for r in self.rings for a in (r.keys, r.values)]


class TemporalLayer(nn.Module):
    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.context, cfg.max_period)
        self.norm2 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.gating = GatedMLP(cfg.dim, cfg.hidden)

    def __call__(self, x: mx.array, ring: RingKV, offset: int) -> tuple[mx.array, RingKV]:
        y, ring = self.self_attn(self.norm1(x), ring, offset)
        x = x + y
        return x + self.gating(self.norm2(x)), ring


class Transformer(nn.Module):
    """Stack of temporal layers; `__call__` handles any T (whole sequence or one step)."""

    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.layers = [TemporalLayer(cfg) for _ in range(cfg.num_layers)]

    def __call__(self, x: mx.array, cache: LmCache) -> mx.array:
        """x [B, T, D] -> [B, T, D]; advances cache.offset by T."""
        offset = cache.offset
        rings = []
        for layer, ring in zip(self.layers, cache.rings, strict=True):
            x, ring = layer(x, ring, offset)
            rings.append(ring)
        cache.rings = rings
        cache.offset = offset + x.shape[1]
        return x
