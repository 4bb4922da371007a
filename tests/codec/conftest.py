"""Shared oracle helpers for the Mimi parity tests (Kyutai's PyTorch MimiModel, random weights)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("NO_TORCH_COMPILE", "1")

from rolekit.codec.blas import preload_openblas  # noqa: E402

preload_openblas()  # before mlx is imported, when this directory is collected first; else a no-op

FRAME = 1920


def make_pcm(batch: int, frames: int, seed: int = 0) -> np.ndarray:
    """Speech-like test signal [B, 1, frames * 1920]: a few sines plus noise, per batch item."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * FRAME) / 24000.0
    out = []
    for _ in range(batch):
        f = rng.uniform(100, 900, size=3)
        x = sum(0.2 * np.sin(2 * np.pi * fi * t + rng.uniform(0, 6)) for fi in f)
        out.append(x + 0.05 * rng.standard_normal(t.shape))
    return np.stack(out)[:, None, :].astype(np.float32)


def torch_stream(model, pcm: np.ndarray, torch) -> tuple[np.ndarray, np.ndarray]:
    """Kyutai streaming: encode one frame, decode it, for every frame. -> codes, pcm."""
    codes, outs = [], []
    with torch.no_grad(), model.streaming(pcm.shape[0]):
        for i in range(pcm.shape[-1] // FRAME):
            c = model.encode(torch.from_numpy(pcm[..., i * FRAME : (i + 1) * FRAME]))
            codes.append(c.numpy())
            outs.append(model.decode(c).numpy())
    return np.concatenate(codes, -1), np.concatenate(outs, -1)


def mlx_stream(mimi, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import mlx.core as mx

    state = mimi.make_state(pcm.shape[0])
    codes, outs = [], []
    for i in range(pcm.shape[-1] // FRAME):
        c = mimi.encode_step(mx.array(pcm[..., i * FRAME : (i + 1) * FRAME]), state)
        codes.append(np.array(c))
        outs.append(np.array(mimi.decode_step(c, state)))
    return np.concatenate(codes, -1), np.concatenate(outs, -1)


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-12))


def assert_codes_match(
    ours: np.ndarray, ref: np.ndarray, model, latent: np.ndarray, tol: float = 1e-3
) -> None:
    """>= 99.9 % equal codes; where one differs, the reference's distances show a near-tie.

    `latent` [B, D, T] is the reference's unquantized latent (input of the split RVQ). At the first
    differing level of a frame we recompute both candidates' distances from the reference residual.
    """
    assert ours.shape == ref.shape
    assert (ours == ref).mean() >= 0.999, f"only {(ours == ref).mean():.4%} of codes equal"
    for b, t in {(b, t) for b, _, t in zip(*np.nonzero(ours != ref), strict=True)}:
        level = int(np.nonzero(ours[b, :, t] != ref[b, :, t])[0][0])
        d_ours, d_ref = _distances(model, latent[b, :, t], ref[b, :, t], level, ours[b, level, t])
        assert abs(d_ours - d_ref) <= tol * max(1.0, abs(d_ref)), (
            f"code flip at batch {b} frame {t} level {level} is not a near-tie: {d_ours} vs {d_ref}"
        )


def _distances(model, x: np.ndarray, ref_codes: np.ndarray, level: int, our_code: int) -> tuple[float, float]:
    q = model.quantizer
    rvq = q.rvq_first if level == 0 else q.rvq_rest
    lv = level if level == 0 else level - 1
    w = rvq.input_proj.weight.detach().numpy()[:, :, 0].astype(np.float64)
    residual = w @ x.astype(np.float64)
    start = 0 if level == 0 else 1
    for i in range(lv):
        residual = residual - _codebook(rvq, i)[ref_codes[start + i]]
    emb = _codebook(rvq, lv)
    return float(((residual - emb[our_code]) ** 2).sum()), float(
        ((residual - emb[ref_codes[level]]) ** 2).sum()
    )


def _codebook(rvq, i: int) -> np.ndarray:
    return rvq.vq.layers[i]._codebook.embedding.detach().numpy().astype(np.float64)


def reference_pair(tmp_path_factory, cfg, seed: int = 0):
    """A random PyTorch Mimi of `cfg` and our Mimi loaded from its file in the real naming."""
    from rolekit.bench.kyutai_mimi import build_reference, save_reference
    from rolekit.codec.weights import load_mimi

    ref = build_reference(cfg, seed=seed)
    path = save_reference(ref, tmp_path_factory.mktemp("mimi") / "tiny.safetensors")
    return ref, load_mimi(path, num_codebooks=cfg.num_codebooks, cfg=cfg)


@pytest.fixture(scope="session")
def oracle():
    """The helpers above plus torch (one thread), as one namespace for the test modules."""
    import torch

    torch.set_num_threads(1)
    return SimpleNamespace(
        torch=torch,
        make_pcm=make_pcm,
        torch_stream=lambda model, pcm: torch_stream(model, pcm, torch),
        mlx_stream=mlx_stream,
        rel_err=rel_err,
        assert_codes_match=assert_codes_match,
        pair=reference_pair,
        FRAME=FRAME,
    )
