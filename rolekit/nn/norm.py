"""RMSNorm computed in float32 (Kyutai `rms_norm_f32`, eps 1e-8)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class RMSNorm(nn.Module):
    """y = x * weight / sqrt(mean(x^2) + eps), in fp32, cast back to the input dtype.

    The checkpoint stores the weight as `alpha` of shape [1, 1, D]; loaders reshape it to [D].
    """

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        y = mx.fast.rms_norm(x.astype(mx.float32), self.weight.astype(mx.float32), self.eps)
        return y.astype(x.dtype)
