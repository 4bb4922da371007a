"""The depformer-frame kernel (`rolekit.lm.depformer_cuda`) checked and timed against the MLX ops.

GPU only (the kernel runs on CUDA): `bench/gpu_run.py OUT depcheck:` or
`check_depformer_kernel()`. Per weight layout and batch, greedy and sampled:
- the kernel's logits of every step against the op path teacher-forced on the kernel's own tokens
  (`LM.depformer_logits`, float32 activations): relative error per step, worst step reported;
- its tokens against `lm.sampling.sample` applied to its own logits with the op path's keys
  (exact: same logits and noise must give the same token; this covers top-k and the Gumbel draw);
- the greedy tokens of the op path in the activation dtype (agreement, informative: a near-tie
  may flip a token and with it the steps after);
- the barrier's timeout flag, and the time of one frame (kernel vs the eager MLX ops).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.bench.lm import build_lm, lm_config
from rolekit.lm import depformer_cuda
from rolekit.lm.sampling import SamplingParams, sample, split_keys
from rolekit.nn import grid
from rolekit.nn.cuda import switched


def check_depformer_kernel(
    size: str = "full",
    quants: tuple[str, ...] = ("bf16", "q4", "q8"),
    batches: tuple[int, ...] = (1, 3),
    steps: int = 8,
    reps: int = 20,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One result per (quant, batch, greedy); `ok`: kernel ran, no timeout, logits within 2e-3
    (bf16 weights, fp32 math on both sides) and sampled tokens exact."""
    if isinstance(quants, str):
        quants = tuple(quants.split("+"))
    if isinstance(batches, int):
        batches = (batches,)
    out = []
    for quant in quants:
        lm = build_lm(lm_config(size), quant, seed)
        packed = depformer_cuda.pack(lm)
        cfg = lm.cfg
        for b in batches:
            rng = np.random.default_rng(seed + b)
            hidden = mx.array(rng.standard_normal((b, cfg.dim)).astype(np.float32)).astype(lm.dtype)
            text = mx.array(rng.integers(0, cfg.text_card, b).astype(np.int32))
            given = np.full((b, cfg.dep_q), -1, np.int32)
            given[:, steps:] = rng.integers(0, cfg.card, (b, cfg.dep_q - steps))
            provided = mx.array(given)
            keys = mx.stack([mx.random.key(seed * 100 + i) for i in range(b)])
            for greedy in (True, False):
                params = SamplingParams(greedy=greedy)
                row = {
                    "quant": quant,
                    "batch": b,
                    "greedy": greedy,
                    "steps": steps,
                    "packed": packed is not None,
                }
                ran = packed is not None and depformer_cuda.applies(lm, hidden, params, keys, steps)
                row["ran"] = ran
                if not ran:
                    row["ok"] = False
                    out.append(row)
                    continue
                tokens, scratch = depformer_cuda.launch(lm, hidden, text, provided, params, keys, steps)
                logits = depformer_cuda.logits_of(lm, scratch, b, steps)
                mx.eval(tokens, logits)
                row["timed_out"] = grid.timed_out(scratch)
                audio_in = mx.concatenate([tokens, provided[:, steps:]], axis=1)
                ref = lm.depformer_logits(hidden.astype(mx.float32), text, audio_in)[:, :steps]
                err = mx.sqrt(mx.sum((logits - ref) ** 2, axis=(0, 2)) / mx.sum(ref**2, axis=(0, 2)))
                row["logit_rel_err"] = float(mx.max(err).item())
                redraw = _resample(logits, params, keys, steps)
                row["tokens_exact"] = bool(mx.array_equal(redraw, tokens).item())
                if greedy:
                    with switched(False, depformer_cuda.ENV):
                        op = lm.depformer(hidden, text, provided, params, keys, steps)[:, :steps]
                    row["op_agreement"] = float(mx.mean(op == tokens).item())
                call = (hidden, text, provided, params, keys, steps)
                row["kernel_ms"] = _time(partial(_tokens, lm, *call), reps)
                with switched(False, depformer_cuda.ENV):
                    row["ops_ms"] = _time(partial(lm.depformer, *call), reps)
                row["ok"] = (not row["timed_out"]) and row["logit_rel_err"] < 2e-3 and row["tokens_exact"]
                out.append(row)
        del lm, packed
        mx.clear_cache()
    return out


def _tokens(lm: Any, *call: Any) -> mx.array:
    return depformer_cuda.launch(lm, *call)[0]


def _resample(logits: mx.array, params: SamplingParams, keys: mx.array, steps: int) -> mx.array:
    """The op path's sampling of the kernel's own logits [B, steps, card] -> [B, steps]."""
    if params.greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    step_keys = split_keys(keys, steps)
    cols = [
        sample(logits[:, k], params.audio_temperature, params.audio_top_k, step_keys[k]) for k in range(steps)
    ]
    return mx.stack(cols, axis=1)


def _time(fn: Any, reps: int) -> float:
    """Median ms of one evaluated call, after 3 warm-up calls."""
    for _ in range(3):
        mx.eval(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
