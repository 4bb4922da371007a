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
        h = self.linear_in(x)  # [..., 2H]
        h = h.reshape(*h.shape[:-1], 2, -1)  # [..., 2, H]: Kyutai's view(B, T, 2, H)
        return self.linear_out(nn.silu(h[..., 0, :]) * h[..., 1, :])
