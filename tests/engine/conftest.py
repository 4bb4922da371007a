"""Shared fixtures of the engine tests: the embedded tiny model, built once per session in a temp cache."""

import sys
from pathlib import Path

import numpy as np
import pytest

# The helpers of this folder are imported as `tests.engine.*`: make the repo root importable even
# when pytest is started without `python -m` (import-mode=importlib adds nothing to sys.path).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from rolekit.frames import PrefillPlan  # noqa: E402


def make_plan(voice: str, n_text: int, seed: int) -> PrefillPlan:
    ids = np.random.default_rng(seed).integers(4, 900, n_text)
    return PrefillPlan(voice=voice, text_ids=tuple(int(i) for i in ids), content_hash=f"test-{voice}-{seed}")


def user_frames(n: int, seed: int, batch: int = 1) -> np.ndarray:
    """[B, n, 1920] speech-like noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(n * 1920) / 24000
    env = (np.sin(2 * np.pi * (0.5 + 0.1 * seed) * t) > 0).astype(np.float32)
    pcm = 0.2 * env * np.sin(2 * np.pi * (150 + 20 * seed) * t) + 0.05 * rng.standard_normal((batch, t.size))
    return pcm.astype(np.float32).reshape(batch, n, 1920)


def with_context(bundle, context: int):
    """The same weights with another temporal context, so that tests wrap the ring early."""
    import dataclasses

    from mlx.utils import tree_flatten

    from rolekit.lm.model import LM

    lm = LM(dataclasses.replace(bundle.lm.cfg, context=context))
    lm.load_weights(list(tree_flatten(bundle.lm.parameters())))
    lm.eval()
    return dataclasses.replace(bundle, lm=lm, model_id=f"{bundle.model_id}-ctx{context}")


@pytest.fixture(scope="module")
def short_context(tiny_bundle):
    """The tiny model with an 8-frame temporal context (prefills and sessions wrap the ring)."""
    return with_context(tiny_bundle, 8)
