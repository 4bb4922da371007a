"""Where a GPU step's time goes: every kernel the step launches, read through CUPTI (PyTorch's
profiler records all kernels of the process, MLX's included), per phase of the engine step.

For each phase (the whole `Engine.step`, Mimi encode alone, Mimi decode alone) it reports the wall
time per step, the kernels launched per step, the GPU busy time per step (union of kernel
intervals) and the kernels that take most of it. Wall time far above busy time means the step is
bound by the host (launch and graph building), not by the GPU.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from benchmarks.engine import build_bundle
from rolekit.codec.compiled import CompiledMimi
from rolekit.engine.engine import Engine
from rolekit.frames import FRAME_SAMPLES, N_CODEBOOKS
from rolekit.lm.sampling import SamplingParams
from rolekit.randlm import default_quant

CATEGORIES = (  # (category, substrings of the kernel name), first match wins
    ("matmul", ("gemv", "gemm", "cublas", "cutlass", "sm90_", "qmv", "qmm", "matmul", "dot")),
    ("attention", ("sdpa", "attention", "flash")),
    ("conv", ("conv", "implicit")),
    ("sort/topk", ("sort", "partition", "topk")),
    ("reduce", ("reduce", "arg_", "argmax", "all_reduce", "row_reduce", "col_reduce")),
    ("random", ("rbits", "random", "philox")),
    ("copy/gather", ("copy", "gather", "scatter", "slice", "concat", "take", "memcpy", "memset")),
    ("norm/rope", ("rms", "layer_norm", "rope")),
    ("fused elementwise", ("compiled", "fused", "binary", "unary", "ternary")),
)


def _category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def _busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, end = 0.0, -1.0
    for s, e in sorted(intervals):
        if s >= end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def _trace(fn: Any, steps: int) -> dict[str, Any]:
    """Run fn() `steps` times under the CUDA profiler; kernel statistics per call."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    walls = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            walls.append((time.perf_counter() - t0) * 1000.0)
    torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    per_name: dict[str, list[float]] = defaultdict(list)
    per_cat: dict[str, float] = defaultdict(float)
    for e in kernels:
        per_name[e["name"]].append(float(e["dur"]))
        per_cat[_category(e["name"])] += float(e["dur"])
    busy = _busy_us([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels])
    top = sorted(per_name.items(), key=lambda kv: -sum(kv[1]))[:15]
    most = sorted(per_name.items(), key=lambda kv: -len(kv[1]))[:40]
    return {
        "wall_ms": round(float(np.median(walls)), 3),
        "kernels_per_step": round(len(kernels) / steps, 1),
        "gpu_busy_ms": round(busy / steps / 1000.0, 3),
        "kernel_sum_ms": round(sum(float(e["dur"]) for e in kernels) / steps / 1000.0, 3),
        "categories_ms": {
            k: round(v / steps / 1000.0, 3) for k, v in sorted(per_cat.items(), key=lambda kv: -kv[1])
        },
        "top": [
            {"name": n[:110], "per_step": round(len(d) / steps, 1), "us_per_step": round(sum(d) / steps, 1)}
            for n, d in top
        ],
        "most_launched": [{"name": n[:110], "per_step": round(len(d) / steps, 1)} for n, d in most],
    }


def profile_engine(
    size: str = "full",
    quant: str | None = None,
    batch: int = 1,
    steps: int = 20,
    warmup: int = 12,
    seed: int = 0,
    greedy: bool = False,
) -> dict[str, Any]:
    """Kernel-level profile of the compiled engine step and of its Mimi phases (CUDA only)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the kernel profile reads CUDA kernels: run it on a CUDA GPU")
    quant = quant or default_quant()
    bundle = build_bundle(size, quant, seed)
    engine = Engine(bundle, batch=batch, params=SamplingParams(greedy=greedy), seed=seed)
    rng = np.random.default_rng(seed)
    pcm = (0.1 * rng.standard_normal((batch, FRAME_SAMPLES))).astype(np.float32)
    for _ in range(warmup):
        engine.step(pcm)
    result: dict[str, Any] = {
        "size": size,
        "quant": quant,
        "batch": batch,
        "device": str(mx.default_device()),
    }
    result["step"] = _trace(lambda: engine.step(pcm), steps)

    mimi = CompiledMimi(bundle.mimi, engine.kernels)
    state = bundle.mimi.make_state(batch)
    x = mx.array(pcm)[:, None, :]

    codes = mx.zeros((batch, N_CODEBOOKS, 1), dtype=mx.int32)
    phases = {
        "encode": lambda: mx.eval(mimi.encode_step(x, state), *state.arrays()),
        "decode": lambda: mx.eval(mimi.decode_step(codes, state), *state.arrays()),
    }
    for name, fn in phases.items():
        for _ in range(3):  # warm-up (first calls trace the compiled graphs)
            fn()
        result[name] = _trace(fn, steps)
    return result
