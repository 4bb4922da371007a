"""Mimi's CUDA kernels (`codec.mimi_cuda` one-kernel steps, else `nn.fused` and `codec.conv_cuda`
inside the compiled graphs) checked against MLX's ops: the `gpu`-marked tests in
test_mimi_cuda.py run them on CUDA; on a CPU both sides are the MLX ops."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # the torch oracle builds the random codecs

import mlx.core as mx

from rolekit.bench.mimi import _frames, _random_mimis, _signal
from rolekit.codec.compiled import CompiledMimi
from rolekit.nn.kernels import OPS, Kernels


def check_mimi_kernels(
    frames: int = 30, size: str = "full", seed: int = 0, batch: int = 1, kernels: Kernels | None = None
) -> dict[str, Any]:
    """The compiled Mimi step with rolekit's CUDA kernels (each step as one kernel,
    `codec.mimi_cuda`, where it applies; else `nn.fused` in the transformer and `codec.conv_cuda`
    windows) against the same step on MLX's ops, one set of random weights: share of equal codes
    (RVQ argmins: a near-tie may flip one) and the decoder's relative error when both decode the
    same codes. `kernels`: the policy of the kernel side (default: this device's); on a CPU both
    sides are the MLX ops."""
    policies = {False: OPS, True: Kernels.for_device() if kernels is None else kernels}
    cfg, mimis = _random_mimis(size, seed, 2)
    pcm = _signal(batch, frames, seed)
    codecs = {on: CompiledMimi(mimi, policies[on]) for on, mimi in zip((False, True), mimis, strict=True)}
    states = {on: c.make_state(batch) for on, c in codecs.items()}
    equal, total, errs = 0, 0, []
    for frame in _frames(pcm):
        x = mx.array(frame)
        codes, outs = {}, {}
        for on in (False, True):
            codes[on] = codecs[on].encode_step(x, states[on])
            mx.eval(codes[on], *states[on].arrays())
        equal += int(mx.sum(codes[False] == codes[True]).item())
        total += codes[False].size
        for on in (False, True):
            outs[on] = codecs[on].decode_step(codes[False], states[on])
            mx.eval(outs[on], *states[on].arrays())
        ref = outs[False]
        errs.append((mx.linalg.norm(outs[True] - ref) / (mx.linalg.norm(ref) + 1e-12)).item())
    kernels = codecs[True].kernels
    one_kernel = kernels is not None and len(kernels._programs) > 0
    stages = {}
    if one_kernel:
        assert kernels is not None
        for kind in ("enc", "dec"):
            us = kernels.stage_us(kind)
            stages[kind] = {
                "total_us": round(sum(us), 1),
                "stages": len(us),
                "slowest": kernels.slowest(kind),
                "all_us": [round(u, 1) for u in us],
            }
    timed_out = kernels.timed_out() if kernels is not None else False
    agree = equal / max(total, 1)
    worst = max(errs)
    return {
        "frames": frames,
        "batch": batch,
        "one_kernel_steps": one_kernel,
        "timed_out": timed_out,
        "codes_agree": agree,
        "pcm_rel_err_max": worst,
        "stage_us": stages,
        "ok": agree >= 0.99 and worst < 1e-3 and not timed_out,
    }


def check_mimi_rows(batch: int = 16, frames: int = 6, size: str = "full", seed: int = 0) -> dict[str, Any]:
    """The compiled Mimi step at `batch` rows against the same codec stepping each row alone
    (batch 1), one set of random weights: share of equal codes and the decoder's relative error
    (each row decoding its own batch-run codes). On CUDA both sides run the one-kernel steps, so
    this isolates the batch dimension from MLX's GEMM precision (the op path runs multi-row fp32
    products in TF32 there)."""
    _, (mimi,) = _random_mimis(size, seed, 1)
    codec = CompiledMimi(mimi, Kernels.for_device())
    pcm = _signal(batch, frames, seed)
    whole = codec.make_state(batch)
    rows = [codec.make_state(1) for _ in range(batch)]
    equal, total, errs = 0, 0, []
    for frame in _frames(pcm):
        x = mx.array(frame)
        codes = codec.encode_step(x, whole)
        out = codec.decode_step(codes, whole)
        mx.eval(codes, out)
        for b, st in enumerate(rows):
            c = codec.encode_step(x[b : b + 1], st)
            o = codec.decode_step(codes[b : b + 1], st)
            mx.eval(c, o)
            equal += int(mx.sum(c == codes[b : b + 1]).item())
            total += c.size
            errs.append((mx.linalg.norm(o - out[b : b + 1]) / (mx.linalg.norm(o) + 1e-12)).item())
    kernels = codec.kernels
    agree = equal / max(total, 1)
    return {
        "batch": batch,
        "frames": frames,
        "one_kernel_steps": kernels is not None and len(kernels._programs) > 0,
        "codes_agree": agree,
        "pcm_rel_err_max": max(errs),
        "ok": agree >= 0.99 and max(errs) < 1e-3,
    }
