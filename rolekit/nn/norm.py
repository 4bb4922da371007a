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
        if x.dtype == self.weight.dtype:
            # One kernel: MLX accumulates in fp32 and scales in fp32; for bf16 it rounds x * rsqrt to
            # bf16 before the weight product (one extra bf16 rounding, exact in fp32). The casts of
            # the fp32 path below cost two more kernels per norm (161 norms per GPU frame).
            return mx.fast.rms_norm(x, self.weight, self.eps)
        y = mx.fast.rms_norm(x.astype(mx.float32), self.weight.astype(mx.float32), self.eps)
        return y.astype(x.dtype)
