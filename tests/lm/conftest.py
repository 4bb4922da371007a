"""Oracle helpers: tiny random PersonaPlex-shaped models built with Kyutai's PyTorch `moshi` 0.2.13.

Weights are saved with the real checkpoint naming (fused `in_proj_weight`, stacked depformer steps,
`alpha` [1, 1, D]) so rolekit loads them through the same code as nvidia/personaplex-7b-v1.
"""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import pytest

os.environ.setdefault("NO_TORCH_COMPILE", "1")


def _torch():
    import torch

    torch.set_num_threads(1)
    return torch


def kyutai_state_dict(model) -> dict:
    """state_dict in checkpoint naming: per-step `in_projs.i` / `out_projs.i` fused back (dim 0)."""
    torch = _torch()
    sd = model.state_dict()
    out, groups = {}, {}
    for name, t in sd.items():
        m = re.match(r"(.*\.self_attn)\.(in|out)_projs\.(\d+)\.weight$", name)
        if m:
            groups.setdefault((m.group(1), m.group(2)), {})[int(m.group(3))] = t
        else:
            out[name] = t
    for (prefix, kind), parts in groups.items():
        fused = torch.cat([parts[i] for i in range(len(parts))], dim=0)
        out[f"{prefix}.in_proj_weight" if kind == "in" else f"{prefix}.out_proj.weight"] = fused
    return out


def build_oracle(cfg, seed: int = 0, depformer_context: int = 8):
    """A random fp32 moshi LMModel for `cfg`; norms randomised too (Kyutai inits them to 1)."""
    torch = _torch()
    from moshi.models.lm import LMModel

    kw = cfg.to_kyutai()
    kw["depformer_context"] = depformer_context  # ignored by Kyutai; an implementation honouring it fails
    torch.manual_seed(seed)
    model = LMModel(**kw, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model.eval()


def save_oracle(model, folder, dtype=None) -> None:
    """Write `model.safetensors` (+ config.json with lm_kwargs) like a PyTorch checkpoint folder."""

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in kyutai_state_dict(model).items()}
    save_file(sd, str(folder / "model.safetensors"))
    return sd


def write_config(cfg, folder) -> None:
    import json

    (folder / "config.json").write_text(json.dumps({"lm_kwargs": cfg.to_kyutai()}))


@pytest.fixture(scope="session")
def oracle():
    return SimpleNamespace(
        torch=_torch,
        build=build_oracle,
        save=save_oracle,
        write_config=write_config,
        state_dict=kyutai_state_dict,
    )


@pytest.fixture(scope="session")
def tiny_oracle(tmp_path_factory):
    """(cfg, torch model, folder with model.safetensors + config.json, loaded rolekit LM), fp32.

    Context 24 < the number of steps used by the tests, so the ring KV cache wraps.
    """
    from rolekit.lm.config import tiny
    from rolekit.lm.weights import load_lm

    cfg = tiny()
    model = build_oracle(cfg, seed=0)
    folder = tmp_path_factory.mktemp("oracle")
    save_oracle(model, folder)
    write_config(cfg, folder)
    return SimpleNamespace(cfg=cfg, model=model, folder=folder, lm=load_lm(folder))


def random_tokens(cfg, batch: int, steps: int, seed: int = 1):
    """[B, 17, T] int64 torch tokens: text ids and audio codes, with a few -1 (zero) tokens."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, cfg.card, (batch, cfg.num_codebooks, steps), generator=g)
    seq[:, 0] = torch.randint(0, cfg.text_card, (batch, steps), generator=g)
    seq[0, 3, 5] = -1
    seq[-1, 0, 7] = -1
    seq[:, 9, 2] = -1
    return seq


@pytest.fixture(scope="session")
def tokens():
    return random_tokens
