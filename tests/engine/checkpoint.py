"""Write a tiny random PersonaPlex checkpoint folder in NVIDIA's real naming (test fixture builder).

LM: Kyutai `LMModel` state dict with the fused attention projections of the real file
(`in_proj_weight` = in_projs stacked on dim 0, `out_proj.weight` likewise), bf16 like NVIDIA's.
Mimi: the tiny model's Kyutai-named file. Voice: `voices/NATF0.pt` made by the reference's voice
prompt phase ({embeddings [T-1, 1, 1, D], cache [1, 17, 4]}).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

_PROJ = re.compile(r"^(.*\.self_attn)\.(in|out)_projs\.(\d+)\.weight$")


def checkpoint_state(lm: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Kyutai module state -> NVIDIA checkpoint naming (fused per-step projections)."""
    fused: dict[str, list[tuple[int, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in lm.state_dict().items():
        m = _PROJ.match(name)
        if m:
            key = f"{m.group(1)}.in_proj_weight" if m.group(2) == "in" else f"{m.group(1)}.out_proj.weight"
            fused.setdefault(key, []).append((int(m.group(3)), t))
        else:
            out[name] = t
    for key, parts in fused.items():
        out[key] = torch.cat([t for _, t in sorted(parts, key=lambda p: p[0])], dim=0)
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in out.items()}


def write_checkpoint(
    folder: Path, lm: torch.nn.Module, lm_kwargs: dict, mimi_file: Path, tokenizer: Path, voices: dict
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint_state(lm), str(folder / "model.safetensors"))
    shutil.copyfile(mimi_file, folder / "tokenizer-e351c8d8-checkpoint125.safetensors")
    shutil.copyfile(tokenizer, folder / "tokenizer_spm_32k_3.model")
    (folder / "config.json").write_text(json.dumps({"lm_kwargs": lm_kwargs}))
    (folder / "voices").mkdir(exist_ok=True)
    for name, state in voices.items():
        torch.save(state, folder / "voices" / f"{name}.pt")
    return folder


def user_audio(seconds: float, seed: int = 3) -> np.ndarray:
    """Speech-like user audio: a gliding harmonic tone in bursts, with noise (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 24000
    tone = sum(np.sin(k * phase) / k for k in range(1, 5))
    bursts = (np.sin(2 * np.pi * 0.4 * t) > -0.2).astype(np.float64)
    return (0.25 * tone * bursts + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
