"""Kyutai's PyTorch `MimiModel` (moshi 0.2.13) with random weights: the parity oracle of the tests
and the side-by-side baseline of `rolekit bench mimi`. torch and moshi are imported lazily.

Set `NO_TORCH_COMPILE=1` before moshi is imported and use one torch thread (moshi.md §7).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.codec.config import MimiConfig


def build_reference(cfg: MimiConfig, seed: int = 0) -> Any:
    """A random PyTorch MimiModel for `cfg` (eval mode, fp32, CPU).

    Random-init codebooks are all zero (moshi.md P9) and layer scales are 0.01, which would hide
    bugs; both are randomised here.
    """
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    import torch
    from moshi.models.loaders import get_mimi

    torch.manual_seed(seed)
    model = get_mimi(None, cfg.to_kyutai(), num_codebooks=cfg.num_codebooks)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("embedding_sum"):
                buf.copy_(torch.randn(buf.shape, generator=gen))
            elif name.endswith("cluster_usage"):
                buf.copy_(torch.rand(buf.shape, generator=gen) * 1.5 + 0.5)
        for name, p in model.named_parameters():
            if "layer_scale" in name:
                p.copy_(torch.rand(p.shape, generator=gen) * 0.8 + 0.2)
    return model.eval()


def reference_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The model's tensors in the released checkpoint's naming (fused `in_proj_weight`)."""
    out: dict[str, np.ndarray] = {}
    for k, v in model.state_dict().items():
        k = k.replace(".in_projs.0.weight", ".in_proj_weight").replace(
            ".out_projs.0.weight", ".out_proj.weight"
        )
        out[k] = np.ascontiguousarray(v.detach().cpu().float().numpy())
    return out


def save_reference(model: Any, path: Path) -> Path:
    """Write the model as a Kyutai-named safetensors file (what rustymimi and `load_mimi` read)."""
    from safetensors.numpy import save_file

    path = Path(path)
    save_file(reference_state_dict(model), str(path))
    return path
