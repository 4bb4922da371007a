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

ConvState = dict[str, "mx.array | None"]


class CausalConv1d(nn.Module):
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
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))  # MLX layout [out, k, in]
        if bias:
            self.bias = mx.zeros((out_channels,))
        self._stride = stride
        self._dilation = dilation
        self._replicate = replicate
        self._in = in_channels
        self._pad = (kernel_size - 1) * dilation + 1 - stride

    def _matrix(self) -> mx.array:
        """[K * Cin, Cout] GEMM weight, rebuilt only when the weight array was replaced."""
        if getattr(self, "_src", None) is not self.weight:
            cout, k, cin = self.weight.shape
            self._w2 = mx.contiguous(self.weight.reshape(cout, k * cin).T)
            self._src = self.weight
        return self._w2

    def __call__(self, x: mx.array, state: ConvState, key: str) -> mx.array:
        # x: [B, T, Cin] with T % stride == 0 -> [B, T / stride, Cout]
        if self._pad:
            prev = state.get(key)
            if prev is None:
                if self._replicate:
                    prev = mx.repeat(x[:, :1], self._pad, axis=1)
                else:
                    prev = mx.zeros((x.shape[0], self._pad, x.shape[2]), dtype=x.dtype)
            x = mx.concatenate([prev, x], axis=1)
            state[key] = x[:, -self._pad :]
        y = _conv1d(x, self.weight, self._stride, self._dilation, self._matrix())
        if "bias" in self:
            y = y + self.bias
        return y


class CausalConvTranspose1d(nn.Module):
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
        # MLX layout [out, k, in / groups]
        self.weight = mx.zeros((out_channels, kernel_size, in_channels // groups))
        if bias:
            self.bias = mx.zeros((out_channels,))
        self._stride = stride
        self._groups = groups
        self._out = out_channels
        self._overlap = kernel_size - stride

    def _matrix(self) -> mx.array:
        """[Cin, K * Cout] GEMM weight (dense) or [K, C] taps (depthwise), rebuilt on weight change."""
        if getattr(self, "_src", None) is not self.weight:
            cout, k, cin_g = self.weight.shape
            if self._groups == 1:
                self._w2 = mx.contiguous(self.weight.transpose(2, 1, 0).reshape(cin_g, k * cout))
            else:
                self._w2 = mx.contiguous(self.weight[:, :, 0].T)
            self._src = self.weight
        return self._w2

    def __call__(self, x: mx.array, state: ConvState, key: str) -> mx.array:
        # x: [B, T, Cin] -> [B, T * stride, Cout]
        y = _conv_transpose1d(x, self.weight, self._stride, self._groups, self._matrix())
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


def _conv1d(x: mx.array, w: mx.array, stride: int, dilation: int, w2: mx.array) -> mx.array:
    """Valid conv as one matmul over gathered windows (MLX's CPU conv is several times slower).

    x [B, L, Cin], w [Cout, K, Cin], w2 = its [K * Cin, Cout] matrix -> [B, (L - keff) / stride + 1, Cout].
    """
    cout, k, cin = w.shape
    b, n, _ = x.shape
    t = (n - (k - 1) * dilation - 1) // stride + 1
    if k == 1:
        cols = x[:, : (t - 1) * stride + 1 : stride] if stride > 1 else x
    elif stride == 1:
        cols = mx.concatenate([x[:, j * dilation : j * dilation + t] for j in range(k)], axis=-1)
    elif dilation == 1 and k % stride == 0:
        m = k // stride  # windows span m consecutive blocks of `stride` samples
        xr = x[:, : (t + m - 1) * stride].reshape(b, t + m - 1, stride * cin)
        cols = mx.concatenate([xr[:, r : r + t] for r in range(m)], axis=-1)
    else:
        return mx.conv1d(x, w, stride=stride, dilation=dilation)
    return cols @ w2


def _conv_transpose1d(x: mx.array, w: mx.array, stride: int, groups: int, w2: mx.array) -> mx.array:
    """Full transposed conv as a matmul plus an overlap-add of K / stride shifted blocks.

    x [B, T, Cin], w [Cout, K, Cin / groups] -> [B, (T - 1) * stride + K, Cout].
    """
    cout, k, cin_g = w.shape
    b, t, cin = x.shape
    if k % stride != 0:
        return mx.conv_transpose1d(x, w, stride=stride, groups=groups)
    m = k // stride
    if groups == 1:
        z = x @ w2  # [B, T, K * Cout]
        z = z.reshape(b, t, m, stride, cout)
    elif groups == cin == cout and cin_g == 1:  # depthwise: one K-tap filter per channel
        z = x[:, :, None, :] * w2  # [B, T, K, C]
        z = z.reshape(b, t, m, stride, cout)
    else:
        return mx.conv_transpose1d(x, w, stride=stride, groups=groups)
    # block r of input step i lands on output block i + r
    y = mx.pad(z[:, :, 0], [(0, 0), (0, m - 1), (0, 0), (0, 0)])
    for r in range(1, m):
        y = y + mx.pad(z[:, :, r], [(0, 0), (r, m - 1 - r), (0, 0), (0, 0)])
    return y.reshape(b, (t + m - 1) * stride, cout)


class ELU(nn.Module):
    """ELU(alpha=1), a parameter-free slot so module indices match the checkpoint's `model.{i}`."""

    def __call__(self, x: mx.array, state: ConvState | None = None, key: str = "") -> mx.array:
        return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0.0)))
