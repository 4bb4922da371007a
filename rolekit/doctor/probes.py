"""The probes behind `rolekit doctor`'s checks: the parts that touch hardware, child processes or the
network (the NVIDIA driver, MLX's backend, a GEMM timing, a CUDA kernel compile, the hub, folder
sizes). `rolekit.doctor.checks` turns their results into findings; tests replace them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def nvidia_driver() -> str | None:
    """The NVIDIA driver's CUDA version from `nvidia-smi` ("13.0"), None without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for part in out.split("CUDA Version:")[1:2]:
        return part.split()[0] if part.split() else None
    return None


def mlx_backend() -> dict[str, Any]:
    """{version, backend: metal | cuda | cpu, device}; raises ImportError without mlx."""
    import mlx.core as mx

    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        backend = "cuda"
    elif mx.metal.is_available():
        backend = "metal"
    else:
        backend = "cpu"
    return {"version": mx.__version__, "backend": backend, "device": str(mx.default_device())}


_GEMM = (
    "import time, mlx.core as mx\n"
    "a = mx.random.normal((512, 512)); mx.eval(a)\n"
    "mx.eval(a @ a)\n"
    "t = time.perf_counter()\n"
    "for _ in range(10): mx.eval(a @ a)\n"
    "dt = (time.perf_counter() - t) / 10\n"
    "print(2 * 512**3 / dt / 1e9)\n"
)


def gemm_gflops(openblas: bool) -> float:
    """fp32 512x512 GEMM GFLOP/s of MLX's CPU backend in a child process, with or without OpenBLAS."""
    code = "from rolekit.codec.blas import preload_openblas; preload_openblas()\n" + _GEMM
    env = dict(os.environ)
    if openblas:
        env.pop("ROLEKIT_NO_OPENBLAS", None)
    else:
        env["ROLEKIT_NO_OPENBLAS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
    return float(out.stdout.strip().splitlines()[-1])


def kernel_cache_dir() -> Path:
    """MLX's CUDA JIT cache: $MLX_PTX_CACHE_DIR, else <tmp>/mlx/<version>/ptx."""
    if os.environ.get("MLX_PTX_CACHE_DIR"):
        return Path(os.environ["MLX_PTX_CACHE_DIR"])
    try:
        from importlib.metadata import version

        v = version("mlx")
    except Exception:
        v = "?"
    return Path(tempfile.gettempdir()) / "mlx" / v / "ptx"


def compile_cuda_kernel() -> None:
    """Compile (NVRTC, or rolekit's kernel cache) and run one kernel the way rolekit builds its
    own (`nn.cuda.build_kernel`), checked against MLX's ops."""
    import mlx.core as mx

    from rolekit.nn.cuda import AXPB_BODY, build_kernel

    kernel = build_kernel("doctor_axpb", ["x"], ["out"], AXPB_BODY)
    x = mx.arange(256, dtype=mx.float32)
    (out,) = kernel(
        inputs=[x],
        template=[("N", x.size)],
        grid=(256, 1, 1),
        threadgroup=(128, 1, 1),
        output_shapes=[x.shape],
        output_dtypes=[mx.float32],
    )
    if not bool(mx.all(out == 2 * x + 1).item()):
        raise RuntimeError("the kernel ran but computed wrong values")


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False
