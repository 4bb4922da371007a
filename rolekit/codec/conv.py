"""Causal streaming convolutions of Mimi (MLX, channels-last `[B, T, C]`).

Every conv keeps its own carry in an explicit state dict under its `key`:
- `CausalConv1d`: the last `kernel_eff - stride` input samples (`prev`). A missing entry (fresh
  stream) means zero left padding, or a replicate of the first sample (`replicate=True`, the
  downsample).
- `CausalConvTranspose1d`: the `K - S` overlapping output samples (`partial`, bias removed).
  Dropping the final partial is exactly the whole-clip "trim K - S on the right".
So running a fresh state over a clip in any chunking equals the whole-clip result.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from rolekit.codec import conv_cuda

ConvState = dict[str, "mx.array | None"]


class CausalConv1d(nn.Module):
    """Causal conv; `weight` is stored [K, Cin, Cout] so that its GEMM matrix is a free reshape."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        replicate: bool = False,
    ) -> None:
        super().__init__()
        self.weight = mx.zeros((kernel_size, in_channels, out_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))
        self._stride = stride
        self._dilation = dilation
        self._replicate = replicate
        self._pad = (kernel_size - 1) * dilation + 1 - stride

    def __call__(
        self, x: mx.array, state: ConvState, key: str, elu: bool = False, conv_kernel: bool = False
    ) -> mx.array:
        # x: [B, T, Cin] with T % stride == 0 -> [B, T / stride, Cout]; `elu`: ELU(x) is the input;
        # `conv_kernel` (`Kernels.conv`): carry, ELU and windows as one CUDA kernel where covered
        prev = state.get(key) if self._pad else None
        if self._pad and conv_kernel and conv_cuda.covers(prev, x):
            k, cin, cout = self.weight.shape
            cols, state[key] = conv_cuda.windows(prev, x, k, self._stride, self._dilation, elu)
            y = cols @ self.weight.reshape(k * cin, cout)
        else:
            if elu:
                x = elu_(x)
            if self._pad:
                if prev is None:
                    if self._replicate:
                        prev = mx.repeat(x[:, :1], self._pad, axis=1)
                    else:
                        prev = mx.zeros((x.shape[0], self._pad, x.shape[2]), dtype=x.dtype)
                x = mx.concatenate([prev, x], axis=1)
                state[key] = x[:, -self._pad :]
            y = _conv1d(x, self.weight, self._stride, self._dilation)
        if "bias" in self:
            y = y + self.bias
        return y


class CausalConvTranspose1d(nn.Module):
    """Causal transposed conv; `weight` is [Cin, K, Cout] (dense) or [K, C] (depthwise, groups=C)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if groups == 1:
            self.weight = mx.zeros((in_channels, kernel_size, out_channels))
        elif groups == in_channels == out_channels:
            self.weight = mx.zeros((kernel_size, out_channels))
        else:
            raise ValueError("only dense or depthwise transposed convolutions are supported")
        if bias:
            self.bias = mx.zeros((out_channels,))
        self._stride = stride
        self._overlap = kernel_size - stride

    def __call__(self, x: mx.array, state: ConvState, key: str, conv_kernel: bool = False) -> mx.array:
        # x: [B, T, Cin] -> [B, T * stride, Cout] (no kernel of its own: `conv_kernel` is unused)
        y = _conv_transpose1d(x, self.weight, self._stride)
        has_bias = "bias" in self
        if has_bias:
            y = y + self.bias
        n = self._overlap
        if n == 0:
            return y
        partial = state.get(key)
        if partial is not None:
            y = mx.concatenate([y[:, :n] + partial, y[:, n:]], axis=1)
        tail = y[:, -n:]
        state[key] = tail - self.bias if has_bias else tail
        return y[:, :-n]


def _conv1d(x: mx.array, w: mx.array, stride: int, dilation: int) -> mx.array:
    """Valid conv as one GEMM over its windows (MLX's CPU conv is several times slower).

    x [B, L, Cin], w [K, Cin, Cout] -> [B, (L - keff) / stride + 1, Cout]. The windows are one
    strided view of x (window i starts at sample i * stride, tap j at i * stride + j * dilation),
    materialized by a single copy: one kernel instead of one per tap.
    """
    k, cin, cout = w.shape
    b, n, _ = x.shape
    t = (n - (k - 1) * dilation - 1) // stride + 1
    if k == 1:
        cols = x[:, : (t - 1) * stride + 1 : stride] if stride > 1 else x
    else:
        x = mx.contiguous(x)
        cols = mx.as_strided(x, (b, t, k, cin), (n * cin, stride * cin, dilation * cin, 1))
        cols = cols.reshape(b, t, k * cin)
    return cols @ w.reshape(k * cin, cout)  # window-major columns match [K, Cin] rows


def _conv_transpose1d(x: mx.array, w: mx.array, stride: int) -> mx.array:
    """Full transposed conv as a GEMM plus an overlap-add of K / stride shifted blocks.

    x [B, T, Cin], w [Cin, K, Cout] or depthwise [K, C] -> [B, (T - 1) * stride + K, Cout].
    """
    b, t, cin = x.shape
    depthwise = w.ndim == 2
    k, cout = w.shape if depthwise else w.shape[1:]
    if k % stride != 0:
        wt = w.T[:, :, None] if depthwise else w.transpose(2, 1, 0)  # MLX conv layout [Cout, K, Cin/g]
        return mx.conv_transpose1d(x, wt, stride=stride, groups=cin if depthwise else 1)
    m = k // stride
    if depthwise:  # one K-tap filter per channel
        z = x[:, :, None, :] * w  # [B, T, K, C]
    else:
        z = x @ w.reshape(cin, k * cout)  # [B, T, K * Cout]
    z = z.reshape(b, t, m, stride, cout)
    # block r of input step i lands on output block i + r
    y = mx.pad(z[:, :, 0], [(0, 0), (0, m - 1), (0, 0), (0, 0)])
    for r in range(1, m):
        y = y + mx.pad(z[:, :, r], [(0, 0), (r, m - 1 - r), (0, 0), (0, 0)])
    return y.reshape(b, (t + m - 1) * stride, cout)


class ELU(nn.Module):
    """ELU(alpha=1), a parameter-free slot so module indices match the checkpoint's `model.{i}`."""

    def __call__(
        self, x: mx.array, state: ConvState | None = None, key: str = "", conv_kernel: bool = False
    ) -> mx.array:
        return elu_(x)


def elu_(x: mx.array) -> mx.array:
    """ELU(alpha=1)."""
    return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0.0)))


def run_layers(
    layers: list[nn.Module], x: mx.array, state: ConvState, prefix: str, conv_kernel: bool = False
) -> mx.array:
    """Apply Mimi's module list in order, layer i under state key f"{prefix}.{i}"; an ELU followed by a
    causal conv is handed to that conv (`elu=True`), which applies it with its windows.
    `conv_kernel`: `Kernels.conv`, handed to every layer."""
    skip = False
    for i, layer in enumerate(layers):
        if skip:
            skip = False
            continue
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, ELU) and isinstance(nxt, CausalConv1d):
            x = nxt(x, state, f"{prefix}.{i + 1}", elu=True, conv_kernel=conv_kernel)
            skip = True
        else:
            x = layer(x, state, f"{prefix}.{i}", conv_kernel=conv_kernel)
    return x
