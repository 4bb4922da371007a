"""SiLU-gated feed-forward block (Kyutai ActivationGating)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class GatedMLP(nn.Module):
    """linear_in (D -> 2H), silu(first half) * second half, linear_out (H -> D); no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_out(silu_gate(self.linear_in(x)))


def silu_gate(h: mx.array) -> mx.array:
    """[..., 2H] -> silu(first half) * second half [..., H] (Kyutai's view(B, T, 2, H))."""
    h = h.reshape(*h.shape[:-1], 2, -1)  # [..., 2, H]
    return nn.silu(h[..., 0, :]) * h[..., 1, :]
