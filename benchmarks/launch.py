"""Host time of one rolekit kernel launch, by launch path: the cubin placed in MLX's kernel cache
and launched by `mx.fast.cuda_kernel` (`nn.mlxcache`, the default) against
`mx.fast.precompiled_cuda_kernel`, which keeps the cubin as its primitive's source (copied into
each launch, hashed at each evaluation). The kernel is `nn.qmm` at the temporal layer's shape (a
cubin of ~170 KB); each path launches it `launches` times into one graph, evaluated once, eagerly
and inside one `mx.compile` graph (where only the evaluation repeats per step). The baseline row
`mlx-matmul` chains MLX's own bf16 product at the same shape (cuBLAS, no custom kernel): what a
launch costs MLX itself. At these sizes the GPU work is a few µs a launch, so the time per launch
is the host's. CUDA only.

    python -c "from benchmarks.launch import run; run(out='launch.jsonl')"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import mlx.core as mx

from benchmarks.jsonl import emit


def run(launches: int = 64, repeats: int = 20, rows: int = 16, out: str | None = None) -> list[dict]:
    """One JSON row per path and mode: `us_per_launch` = best wall time of the chain / launches
    (one product and one scale a launch)."""
    from rolekit.nn import cubins, cuda, qmm

    n = k = 4096
    x = mx.random.normal((rows, k)).astype(mx.bfloat16)
    w = mx.random.randint(0, 2**30, (n, k // 8)).astype(mx.uint32)
    scales = mx.random.normal((n, k // 64)).astype(mx.bfloat16)
    biases = mx.random.normal((n, k // 64)).astype(mx.bfloat16)
    mx.eval(x, w, scales, biases)
    path = Path(out) if out else None
    rows_out = []

    def timed(fn: Callable[[mx.array], mx.array]) -> float:  # best of `repeats`, s a launch
        best = float("inf")
        for _ in range(repeats):
            mx.synchronize()
            t0 = time.perf_counter()
            mx.eval(fn(x))
            mx.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best / launches

    dense = mx.random.normal((n, k)).astype(mx.bfloat16)

    def dense_chain(a: mx.array) -> mx.array:
        y = a
        for _ in range(launches):
            y = (y @ dense.T) * 1e-3
        return y

    compiled_dense = mx.compile(dense_chain)
    mx.eval(dense_chain(x), compiled_dense(x))
    for mode, fn in (("eager", dense_chain), ("compiled", compiled_dense)):
        row = {
            "path": "mlx-matmul",
            "mode": mode,
            "launches": launches,
            "us_per_launch": round(timed(fn) * 1e6, 2),
        }
        emit(path, row)
        rows_out.append(row)
    for name, folder in (("mlx-cache", cuda.mlx_cache_folder()), ("precompiled", None)):
        if name == "mlx-cache" and folder is None:  # this MLX or cache folder: precompiled only
            row = {"path": name, "skipped": "MLX's kernel cache is not usable here (nn.mlxcache.folder)"}
            emit(path, row)
            rows_out.append(row)
            continue
        qmm._kernel.cache_clear()  # a kernel object of its own: its launchers are per object
        with mock.patch.object(cuda, "mlx_cache_folder", lambda folder=folder: folder):

            def chain(a: mx.array) -> mx.array:
                y = a
                for _ in range(launches):
                    y = qmm.qmm(y, w, scales, biases, 64) * 1e-3  # [rows, n] stays bf16
                return y

            mx.eval(chain(x))  # builds the launcher (and compiles or reads the cubin)
            compiled = mx.compile(chain)
            mx.eval(compiled(x))
            for mode, fn in (("eager", chain), ("compiled", compiled)):
                row = {
                    "path": name,
                    "mode": mode,
                    "launches": launches,
                    "us_per_launch": round(timed(fn) * 1e6, 2),
                    "cubin_kb": round(max(len(b) for b in cubins.CACHE._memory.values()) / 1024, 1),
                    "launch_path": cuda.launch_path(),
                }
                emit(path, row)
                rows_out.append(row)
    return rows_out
