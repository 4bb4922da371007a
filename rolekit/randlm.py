"""A random-weight LM built in memory at a size and quantization, for tests and lab benchmarks.

Unlike the `tiny` / `random-7b` folders of `rolekit.randmodel` (loaded through `models.load`, as
users load a model), this is only the `LM` module: random weights straight in MLX, no checkpoint,
tokenizer, voices or Mimi. Random weights produce noise, never speech.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from rolekit.errors import ConfigError
from rolekit.lm.config import LmConfig, personaplex_7b, tiny
from rolekit.lm.model import LM
from rolekit.nn.multilinear import MultiLinear

QUANTS = ("fp32", "bf16", "q8", "q4")
SIZES = ("full", "tiny")
GROUP_SIZE = 64


def lm_config(size: str) -> LmConfig:
    """`full` = PersonaPlex 7B (8.37 B parameters), `tiny` = the test-size model; else ConfigError."""
    if size == "full":
        return personaplex_7b()
    if size == "tiny":
        return tiny()
    raise ConfigError(f"unknown size {size!r} (full or tiny)")


def default_quant() -> str:
    """bf16 on a GPU, fp32 on a CPU (bf16 activations are much slower there)."""
    return "bf16" if mx.default_device() == mx.gpu else "fp32"


def build_lm(cfg: LmConfig, quant: str, seed: int = 0) -> LM:
    """Random-weight LM of `cfg`, evaluated: `quant` fp32 / bf16 casts every parameter; q8 / q4
    keep bf16 activations (fp32 on a CPU) and affine-quantize the linears of the temporal layers
    and the depformer (group 64, as `convert` does; never embeddings or heads). The same `seed`
    gives the same weights. An unknown `quant` is a ConfigError."""
    if quant not in QUANTS:
        raise ConfigError(f"unknown quantization {quant!r} (one of {', '.join(QUANTS)})")
    mx.random.seed(seed)
    lm = LM(cfg)
    act = mx.float32 if quant == "fp32" or mx.default_device() == mx.cpu else mx.bfloat16
    lm.set_dtype(act)
    if quant in ("q8", "q4"):

        def linear(path: str, m: nn.Module) -> bool:
            if not isinstance(m, (nn.Linear, MultiLinear)) or path.startswith(("text_linear", "linears")):
                return False
            return m.weight.shape[-1] % GROUP_SIZE == 0

        nn.quantize(lm, group_size=GROUP_SIZE, bits=8 if quant == "q8" else 4, class_predicate=linear)
    # Materialize parameter by parameter so the fp32 init never exists for the whole model at once.
    for _, p in tree_flatten(lm.parameters()):
        mx.eval(p)
    return lm
