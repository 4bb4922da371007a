"""Give MLX's CPU backend an optimised BLAS without `LD_PRELOAD`. Never imports mlx.

The Linux `mlx-cpu` wheel bundles the Netlib *reference* BLAS (unblocked, single-threaded GEMM).
Loading Debian's OpenBLAS with RTLD_GLOBAL *before the first `import mlx`* makes libmlx bind its
`cblas_*` symbols to OpenBLAS, exactly like `LD_PRELOAD`. Call `preload_openblas()` first thing in a
process (the CLI entry point); `bench mimi` times the difference on a machine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)


def openblas_path() -> str | None:
    """The system OpenBLAS shared library, if one is installed."""
    for candidate in _CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return ctypes.util.find_library("openblas")


def openblas_loaded() -> bool:
    """Whether an OpenBLAS is mapped into this process (Linux; False elsewhere)."""
    try:
        return "libopenblas" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def preload_openblas() -> str:
    """Load OpenBLAS globally so MLX uses it; returns what happened, for logs and bench reports.

    No-op on macOS (MLX uses Accelerate), when `ROLEKIT_NO_OPENBLAS=1`, when no OpenBLAS is
    installed (`apt-get install libopenblas0-pthread`), or when mlx is already imported (too late:
    its symbols are bound).
    """
    if sys.platform == "darwin":
        return "not needed (macOS: Accelerate)"
    if os.environ.get("ROLEKIT_NO_OPENBLAS") == "1":
        return "disabled by ROLEKIT_NO_OPENBLAS=1"
    if openblas_loaded():
        return "openblas already loaded"
    if "mlx.core" in sys.modules:
        return "too late: mlx already imported"
    path = openblas_path()
    if path is None:
        return "no system openblas (apt-get install libopenblas0-pthread)"
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        return f"cannot load {path}: {exc}"
    return f"openblas loaded from {path}"


def note_reference_blas() -> None:
    """Say once (rolekit.notices) when MLX runs on the CPU of a Linux machine without OpenBLAS."""
    if not sys.platform.startswith("linux") or openblas_loaded():
        return
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return
    from rolekit.notices import notice

    why = (
        "disabled by ROLEKIT_NO_OPENBLAS=1"
        if os.environ.get("ROLEKIT_NO_OPENBLAS") == "1"
        else "fix: `sudo apt-get install libopenblas0-pthread` (or `make install`)"
    )
    notice("mlx-reference-blas", f"MLX runs on its reference BLAS on this CPU (many times slower); {why}")
