"""The step-embedding kernel (`rolekit.nn.embed_cuda`) checked and timed on the GPU against the
LM's MLX ops (`LM.embed` with `ROLEKIT_EMBED_KERNEL=0`): `bench/gpu_run.py OUT embedcheck:`."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.bench.lm import build_lm, lm_config
from rolekit.bench.timing import time_calls
from rolekit.nn import embed_cuda
from rolekit.nn.cuda import switched


def _tokens(rng: np.random.Generator, b: int, t: int, text_card: int, card: int) -> mx.array:
    """[B, 17, T]: text then 16 audio streams, random ids with about one in five -1 (no token)."""
    cards = np.array([text_card] + [card] * 16)[None, :, None]
    ids = (rng.random((b, 17, t)) * cards).astype(np.int32)
    ids[rng.random(ids.shape) < 0.2] = -1
    return mx.array(ids)


def _ms(fn: Any, reps: int) -> float:
    """Median ms of one evaluated call, after one warm-up call."""
    return float(np.median(time_calls(fn, reps, 1, mx.eval)))


def check_embed_kernel(
    size: str = "full",
    quant: str = "q4",
    batches: str = "1+3",
    times: str = "1+5",
    reps: int = 50,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One result per (batch, time): `ran` (the kernel served the lookup), `exact` (equal to the MLX
    ops, bit for bit) and both wall times; `ok` = ran and exact on CUDA, exact elsewhere."""
    lm = build_lm(lm_config(size), quant, seed)
    rng = np.random.default_rng(seed)
    tables = [lm.text_emb.weight, *(e.weight for e in lm.emb)]
    on_cuda = embed_cuda.kernels_on(embed_cuda.ENV, default=True)
    rows = []
    for b in (int(v) for v in str(batches).split("+")):
        for t in (int(v) for v in str(times).split("+")):
            tokens = _tokens(rng, b, t, lm.cfg.text_card, lm.cfg.card)
            with switched(True, embed_cuda.ENV):
                ran = embed_cuda.applies(tables, tokens)
                kernel = lm.embed(tokens)
                mx.eval(kernel)
                kernel_ms = _ms(lambda tokens=tokens: lm.embed(tokens), reps)
            with switched(False, embed_cuda.ENV):
                ops = lm.embed(tokens)
                mx.eval(ops)
                ops_ms = _ms(lambda tokens=tokens: lm.embed(tokens), reps)
            exact = bool(mx.array_equal(kernel, ops).item())
            diff = float(mx.max(mx.abs(kernel.astype(mx.float32) - ops.astype(mx.float32))).item())
            rows.append(
                {
                    "batch": b,
                    "time": t,
                    "ran": ran,
                    "exact": exact,
                    "max_abs_diff": diff,
                    "kernel_ms": round(kernel_ms, 4),
                    "ops_ms": round(ops_ms, 4),
                    "ok": exact and (ran or not on_cuda),
                }
            )
    return rows
