"""Multi-linear: one weight set per depformer step, all steps stacked in one matrix.

The checkpoint stores e.g. the depformer `in_proj_weight` as [steps * out, in]; step k uses rows
[k * out, (k + 1) * out). The quantized variant keeps the same stacking (aufklarer layout), which
is exact because affine quantization groups run along the input dimension, row by row.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class MultiLinear(nn.Module):
    def __init__(self, num_steps: int, in_dims: int, out_dims: int) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.out_dims = out_dims
        scale = in_dims**-0.5
        self.weight = mx.random.uniform(-scale, scale, (num_steps * out_dims, in_dims))

    def __call__(self, x: mx.array, step: int) -> mx.array:
        w = self.weight[step * self.out_dims : (step + 1) * self.out_dims]  # [out, in]
        return x @ w.T

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine") -> QuantizedMultiLinear:
        q = QuantizedMultiLinear(self.num_steps, self.weight.shape[1], self.out_dims, group_size, bits)
        q.weight, q.scales, q.biases = mx.quantize(self.weight, group_size, bits)
        return q


class QuantizedMultiLinear(nn.Module):
    """Affine-quantized MultiLinear: packed uint32 weight, scales and biases stacked per step."""

    def __init__(
        self, num_steps: int, in_dims: int, out_dims: int, group_size: int = 64, bits: int = 4
    ) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.out_dims = out_dims
        self.group_size = group_size
        self.bits = bits
        rows = num_steps * out_dims
        self.weight = mx.zeros((rows, in_dims * bits // 32), dtype=mx.uint32)
        self.scales = mx.zeros((rows, in_dims // group_size))
        self.biases = mx.zeros((rows, in_dims // group_size))

    def __call__(self, x: mx.array, step: int) -> mx.array:
        rows = slice(step * self.out_dims, (step + 1) * self.out_dims)
        w, scales, biases = self.weight[rows], self.scales[rows], self.biases[rows]
        return mx.quantized_matmul(
            x, w, scales, biases, transpose=True, group_size=self.group_size, bits=self.bits
        )
