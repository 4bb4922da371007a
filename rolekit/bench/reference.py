"""The reference runtime: Kyutai's PyTorch `moshi` LMGen at the same size, random weights.

On CUDA it runs as Kyutai ships it: bf16 with `forward_text` and `depformer_step` CUDA-graphed
(`CUDAGraphed`, on by default there). On CPU it runs fp32 with one torch thread. torch.compile is
off (NO_TORCH_COMPILE=1, set before moshi is imported) unless `torch_compile=True`; the flag only
takes effect in a process that has not imported moshi yet.

The LMGen here is Kyutai's (not NVIDIA's fork): with PersonaPlex sizes (n_q = dep_q = 16) its
depformer samples all 16 codebooks every frame, which is what the reference numbers measure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from rolekit.bench.timing import peak_rss_gb, summarize
from rolekit.errors import RolekitError


class ReferenceUnavailable(RolekitError):
    """Kyutai's PyTorch `moshi` (or torch) is not installed."""


def _import_moshi(torch_compile: bool) -> tuple[Any, Any, Any]:
    if not torch_compile:
        os.environ.setdefault("NO_TORCH_COMPILE", "1")
    elif "moshi" not in sys.modules:  # moshi reads it when its modules are defined: clear it first
        os.environ.pop("NO_TORCH_COMPILE", None)
    try:
        import torch
        from moshi.models.lm import LMGen, LMModel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReferenceUnavailable(
            f"the reference needs torch and Kyutai's moshi ({exc}); `pip install --no-deps moshi==0.2.13 einops`"
        ) from exc
    return torch, LMModel, LMGen


class _Timed:
    """Wraps a callable; synchronizes around each call and records its duration in ms."""

    def __init__(self, fn: Callable[..., Any], sync: Callable[[], None]) -> None:
        self.fn = fn
        self.sync = sync
        self.samples: list[float] = []

    def __call__(self, *args: Any) -> Any:
        self.sync()
        t0 = time.perf_counter()
        out = self.fn(*args)
        self.sync()
        self.samples.append((time.perf_counter() - t0) * 1000.0)
        return out


def bench_reference_lm(
    lm_kwargs: dict[str, Any],
    *,
    batch: int = 1,
    steps: int = 100,
    warmup: int = 5,
    device: str = "auto",
    breakdown: bool = True,
    torch_compile: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Time Kyutai's `LMGen.step` (temporal + text sampling + depformer) in ms per 80 ms frame.

    Returns {"runtime", "device", "dtype", "step": stats, "temporal": stats, "depformer": stats,
    "peak_gb", "params_b"}; breakdown timings come from a second run with a sync around each part.
    """
    torch, LMModel, LMGen = _import_moshi(torch_compile)
    torch.manual_seed(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = device.startswith("cuda")
    if not on_cuda:
        torch.set_num_threads(1)  # 2 threads on a shared 2-core host spin-wait (40x slower)
    dtype = torch.bfloat16 if on_cuda else torch.float32
    kwargs = dict(lm_kwargs)
    with torch.no_grad():
        model = LMModel(device=device, dtype=dtype, **kwargs).eval()
    params_b = sum(p.numel() for p in model.parameters()) / 1e9
    n_user = model.num_codebooks - model.dep_q - 1  # 0 when the depformer predicts every stream

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    def run(n_steps: int, n_warmup: int, timed_parts: bool) -> tuple[list[float], dict[str, list[float]]]:
        gen = LMGen(model)  # default sampling: temp 0.8 / 0.7, top-k 250 / 25
        user = torch.zeros((batch, max(n_user, 1), 1), dtype=torch.long, device=device)
        parts: dict[str, list[float]] = {}
        samples: list[float] = []
        with gen.streaming(batch):
            if timed_parts:
                state = gen._streaming_state
                main, depth = _Timed(state.graphed_main, sync), _Timed(state.graphed_depth, sync)
                state.graphed_main, state.graphed_depth = main, depth
            for i in range(n_warmup + n_steps):
                sync()
                t0 = time.perf_counter()
                gen.step(user)
                sync()
                if i >= n_warmup:
                    samples.append((time.perf_counter() - t0) * 1000.0)
            if timed_parts:
                parts = {"temporal": main.samples[n_warmup:], "depformer": depth.samples[n_warmup:]}
        return samples, parts

    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    # warmup >= 3: CUDAGraphed runs once eagerly, then captures, then replays.
    step_samples, _ = run(steps, max(warmup, 3), timed_parts=False)
    result: dict[str, Any] = {
        "runtime": "kyutai-moshi-torch",
        "device": torch.cuda.get_device_name() if on_cuda else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "cuda_graphs": on_cuda and os.environ.get("NO_CUDA_GRAPH", "") in ("", "0", "no", "n"),
        "torch_compile": torch_compile,
        "torch": torch.__version__,
        "batch": batch,
        "params_b": round(params_b, 3),
        "step": summarize(step_samples),
    }
    if breakdown:
        _, parts = run(max(steps // 2, 1), max(warmup, 3), timed_parts=True)
        result["temporal"] = summarize(parts["temporal"])
        result["depformer"] = summarize(parts["depformer"])
    result["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2) if on_cuda else peak_rss_gb()
    if torch_compile:
        result["compiled_graphs"] = compiled_graphs()
    return result


def compiled_graphs() -> int:
    """Graphs torch.compile (dynamo) has compiled in this process: > 0 proves compile really ran."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - torch without dynamo
        return 0
    return int(counters["stats"]["unique_graphs"])


def reference_in_child(
    lm_kwargs: dict[str, Any], batch: int, steps: int, warmup: int, torch_compile: bool, timeout: float = 3600
) -> dict[str, Any]:
    """`bench_reference_lm` in a fresh process, so that torch.compile is on or off for sure
    (moshi decides when it is imported: NO_TORCH_COMPILE cleared for compile, set otherwise).
    With compile, a run in which dynamo compiled no graph is reported as an error, not a number."""
    env = dict(os.environ)
    if torch_compile:
        env.pop("NO_TORCH_COMPILE", None)
    else:
        env["NO_TORCH_COMPILE"] = "1"
    args = {
        "lm_kwargs": lm_kwargs,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "compile": torch_compile,
    }
    cmd = [sys.executable, "-m", "rolekit.bench.reference", json.dumps(args)]
    name = "lmgen+compile" if torch_compile else "lmgen"
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"runtime": "kyutai-moshi-torch", "variant": name, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {
            "runtime": "kyutai-moshi-torch",
            "variant": name,
            "error": f"exit {proc.returncode}: {tail[0]}",
        }
    result = json.loads(lines[-1])
    result["variant"] = name
    if torch_compile and not result.get("compiled_graphs"):
        result["error"] = "torch.compile was requested but dynamo compiled no graph"
    return result


def _main(argv: list[str]) -> None:
    args = json.loads(argv[0])
    res = bench_reference_lm(
        args["lm_kwargs"],
        batch=args["batch"],
        steps=args["steps"],
        warmup=args["warmup"],
        torch_compile=args["compile"],
    )
    print(json.dumps(res))


if __name__ == "__main__":
    _main(sys.argv[1:])  # the caller frees GPU memory (gc + torch.cuda.empty_cache) once `model` is gone
