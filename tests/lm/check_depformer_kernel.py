"""The depformer-frame kernel (`rolekit.lm.depformer_cuda`) checked against the MLX ops.

On CUDA by the `gpu`-marked test in test_depformer_cuda.py; on CPU through the kernel's float32
contract (`dep_kernel_model`). Per weight layout and batch, greedy and sampled:
- the kernel's logits of every step against the op path teacher-forced on the kernel's own tokens
  (`LM.depformer_logits`, float32 activations): relative error per step, worst step reported;
- its tokens against `lm.sampling.sample` applied to its own logits with the op path's keys
  (exact: same logits and noise must give the same token; this covers top-k and the Gumbel draw);
- the greedy tokens of the op path in the activation dtype (agreement, informative: a near-tie
  may flip a token and with it the steps after);
- the barrier's timeout flag.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.lm import depformer_cuda
from rolekit.lm.sampling import SamplingParams, sample, split_keys
from rolekit.nn import grid
from rolekit.nn.kernels import OPS, Kernels
from rolekit.randlm import build_lm, lm_config


def check_depformer_kernel(
    size: str = "full",
    quants: tuple[str, ...] = ("bf16", "q4", "q8"),
    batches: tuple[int, ...] = (1, 3),
    steps: int = 8,
    seed: int = 0,
    threads: int = depformer_cuda.THREADS,
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
                ran = packed is not None and depformer_cuda.covers(lm, hidden, params, keys, steps)
                row["ran"] = ran
                if not ran:
                    row["ok"] = False
                    out.append(row)
                    continue
                call = (hidden, text, provided, params, keys, steps)
                tokens, scratch = depformer_cuda.launch(lm, *call, threads)
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
                    op = lm.depformer(*call, kernels=OPS)[:, :steps]
                    row["op_agreement"] = float(mx.mean(op == tokens).item())
                    via = lm.depformer(*call, kernels=Kernels(depformer=True, depformer_threads=threads))
                    row["dispatch_exact"] = bool(mx.array_equal(via[:, :steps], tokens).item())
                row["ok"] = (
                    (not row["timed_out"])
                    and row["logit_rel_err"] < 2e-3
                    and row["tokens_exact"]
                    and row.get("dispatch_exact", True)
                )
                out.append(row)
        del lm, packed
        mx.clear_cache()
    return out


def _resample(logits: mx.array, params: SamplingParams, keys: mx.array, steps: int) -> mx.array:
    """The op path's sampling of the kernel's own logits [B, steps, card] -> [B, steps]."""
    if params.greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    step_keys = split_keys(keys, steps)
    cols = [
        sample(logits[:, k], params.audio_temperature, params.audio_top_k, step_keys[k]) for k in range(steps)
    ]
    return mx.stack(cols, axis=1)
