"""Mimi configuration: the real 2024-07 codec and a tiny one for tests.

Field names follow Kyutai's `_seanet_kwargs` / `_transformer_kwargs` / `_quantizer_kwargs`, so
`to_kyutai()` builds the config dict that `moshi.models.loaders.get_mimi` takes (the parity oracle).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

from rolekit.frames import FRAME_RATE, SAMPLE_RATE

MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"  # Mimi in NVIDIA's checkpoint folder


@dataclass(frozen=True)
class MimiConfig:
    # SEANet
    channels: int = 1
    dimension: int = 512  # latent width at the SEANet output / transformer input
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder order; the encoder runs them reversed
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    n_residual_layers: int = 1
    compress: int = 2
    # transformers (encoder and decoder share the shape)
    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int = 250  # keys a query may see, itself included (25 Hz steps)
    max_period: float = 10_000.0
    layer_scale: float = 0.01
    # split RVQ
    quantizer_dim: int = 256
    bins: int = 2048
    total_codebooks: int = 32  # 1 in rvq_first + 31 in rvq_rest
    num_codebooks: int = 8  # levels used (Moshi / PersonaPlex: 8)
    # rates
    sample_rate: int = SAMPLE_RATE
    frame_rate: float = FRAME_RATE

    @property
    def hop_length(self) -> int:
        """Samples per SEANet latent step (960 -> 25 Hz)."""
        return prod(self.ratios)

    @property
    def frame_size(self) -> int:
        """Samples per code frame (1920 = 80 ms)."""
        return int(self.sample_rate / self.frame_rate)

    @property
    def downsample_stride(self) -> int:
        """Latent steps per code frame (2)."""
        return self.frame_size // self.hop_length

    def to_kyutai(self) -> dict:
        """The `mimi_config` dict of `moshi.models.loaders.get_mimi` for this configuration."""
        seanet = {
            "channels": self.channels,
            "dimension": self.dimension,
            "causal": True,
            "n_filters": self.n_filters,
            "n_residual_layers": self.n_residual_layers,
            "activation": "ELU",
            "compress": self.compress,
            "dilation_base": self.dilation_base,
            "disable_norm_outer_blocks": 0,
            "kernel_size": self.kernel_size,
            "residual_kernel_size": self.residual_kernel_size,
            "last_kernel_size": self.last_kernel_size,
            "norm": "none",
            "pad_mode": "constant",
            "ratios": list(self.ratios),
            "true_skip": True,
        }
        quantizer = {
            "dimension": self.quantizer_dim,
            "n_q": self.total_codebooks,
            "bins": self.bins,
            "input_dimension": self.dimension,
            "output_dimension": self.dimension,
        }
        transformer = {
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "causal": True,
            "layer_scale": self.layer_scale,
            "context": self.context,
            "conv_layout": True,
            "max_period": self.max_period,
            "gating": "none",
            "norm": "layer_norm",
            "positional_embedding": "rope",
            "dim_feedforward": self.dim_feedforward,
            "input_dimension": self.dimension,
            "output_dimensions": [self.dimension],
        }
        return {
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_rate": self.frame_rate,
            "seanet": seanet,
            "quantizer": quantizer,
            "transformer": transformer,
        }


def mimi_202407(num_codebooks: int = 8) -> MimiConfig:
    """The released Mimi (`tokenizer-e351c8d8-checkpoint125.safetensors`), `num_codebooks` of 32 used."""
    if not 1 <= num_codebooks <= 32:
        raise ValueError(f"num_codebooks must be in 1..32, got {num_codebooks}")
    return MimiConfig(num_codebooks=num_codebooks)


def tiny(**overrides: object) -> MimiConfig:
    """A small Mimi with the real structure (ratios, frame size, split RVQ) for fast tests.

    Widths are small; the transformer context is 8 steps so streaming ring caches wrap within
    4 frames. Override any field, e.g. `tiny(context=250)`.
    """
    base = MimiConfig(
        dimension=32,
        n_filters=4,
        d_model=32,
        num_heads=4,
        num_layers=2,
        dim_feedforward=64,
        context=8,
        quantizer_dim=16,
        bins=64,
        total_codebooks=8,
        num_codebooks=4,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]
