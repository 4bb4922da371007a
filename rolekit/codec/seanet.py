"""SEANet encoder / decoder of Mimi (causal, constant padding, ELU, residual blocks, true skip).

`model` keeps the checkpoint's `encoder.model.{i}` / `decoder.model.{i}` indices (ELU slots are
parameter-free), so the weight map is a rename. All calls are streaming: a fresh state dict gives
the whole-clip result (see conv.py).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from rolekit.codec.config import MimiConfig
from rolekit.codec.conv import ELU, CausalConv1d, CausalConvTranspose1d, ConvState, run_layers


class ResnetBlock(nn.Module):
    """x + conv1x1(ELU(conv_k(ELU(x)))) with a dim // compress hidden width."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = [
            ELU(),
            CausalConv1d(dim, hidden, kernel_size, dilation=dilation),
            ELU(),
            CausalConv1d(hidden, dim, 1),
        ]

    def __call__(self, x: mx.array, state: ConvState, key: str, conv_kernel: bool = False) -> mx.array:
        return x + run_layers(self.block, x, state, key, conv_kernel)


class SEANetEncoder(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        mult = 1
        nf = cfg.n_filters
        model: list[nn.Module] = [CausalConv1d(cfg.channels, nf, cfg.kernel_size)]
        for ratio in reversed(cfg.ratios):
            for j in range(cfg.n_residual_layers):
                model.append(
                    ResnetBlock(mult * nf, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress)
                )
            model += [ELU(), CausalConv1d(mult * nf, 2 * mult * nf, 2 * ratio, stride=ratio)]
            mult *= 2
        model += [ELU(), CausalConv1d(mult * nf, cfg.dimension, cfg.last_kernel_size)]
        self.model = model

    def __call__(
        self, x: mx.array, state: ConvState, prefix: str = "encoder", conv_kernel: bool = False
    ) -> mx.array:
        # x: [B, N, 1] (N a multiple of the hop length) -> [B, N / hop, dimension]
        return run_layers(self.model, x, state, prefix, conv_kernel)


class SEANetDecoder(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        nf = cfg.n_filters
        mult = 2 ** len(cfg.ratios)
        model: list[nn.Module] = [CausalConv1d(cfg.dimension, mult * nf, cfg.kernel_size)]
        for ratio in cfg.ratios:
            model += [ELU(), CausalConvTranspose1d(mult * nf, mult * nf // 2, 2 * ratio, stride=ratio)]
            for j in range(cfg.n_residual_layers):
                model.append(
                    ResnetBlock(mult * nf // 2, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress)
                )
            mult //= 2
        model += [ELU(), CausalConv1d(nf, cfg.channels, cfg.last_kernel_size)]
        self.model = model

    def __call__(
        self, x: mx.array, state: ConvState, prefix: str = "decoder", conv_kernel: bool = False
    ) -> mx.array:
        # x: [B, T, dimension] -> [B, T * hop, 1]
        return run_layers(self.model, x, state, prefix, conv_kernel)
