"""Where compiled GPU kernels are kept between processes: under `$ROLEKIT_CACHE/kernels` by default.

MLX writes the kernels it compiles with NVRTC to `MLX_PTX_CACHE_DIR`, the CUDA driver keeps the
machine code it builds from PTX in `CUDA_CACHE_PATH` (256 MB by default, too small for a model's
kernels: `CUDA_CACHE_MAXSIZE`), and rolekit keeps its own kernels' cubins in `kernels/rolekit`
(`nn.cubins`). MLX and the driver read their variables when MLX first initializes CUDA, so
`configure_kernel_caches` must run before mlx is imported: importing `rolekit` does it (and the
CLI again, first). Variables the user already set win. No mlx here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rolekit.hub import rolekit_cache
from rolekit.nn import cubins, mlxcache

CUDA_CACHE_BYTES = 4 << 30


def kernels_root() -> Path:
    """The folder of every kernel cache: `$ROLEKIT_CACHE/kernels`."""
    return rolekit_cache() / "kernels"


def kernel_cache_dirs() -> dict[str, Path]:
    return {"MLX_PTX_CACHE_DIR": kernels_root() / "mlx-ptx", "CUDA_CACHE_PATH": kernels_root() / "cuda"}


def cubin_dir() -> Path:
    """rolekit's own compiled kernels (`nn.cubins`)."""
    return kernels_root() / "rolekit"


_SET: dict[str, str] = {}  # the variables this process's rolekit set, and to what


def configure_kernel_caches(create: bool = True) -> dict[str, str]:
    """Set (unless already set) the kernel cache variables, as absolute paths, and rolekit's cubin
    folder; returns the values in effect (the cubin folder as `rolekit`). `create`: make the
    driver's folder now (each cache also makes its own folder when it first writes). MLX's folder
    is always made: MLX drops its disk cache for the whole process when another process creates
    the folder between its own check and create.

    `nn.mlxcache` may place cubins in MLX's folder only if MLX reads the variable in effect: the
    user's own, or one rolekit set before mlx was imported (else MLX may have fixed its folder)."""
    out = {}
    for name, path in kernel_cache_dirs().items():
        if not os.environ.get(name):
            os.environ[name] = _SET[name] = str(path.absolute())
            if name == "MLX_PTX_CACHE_DIR":
                mlxcache.trust_variable("mlx.core" not in sys.modules)
        elif name == "MLX_PTX_CACHE_DIR" and os.environ[name] != _SET.get(name):
            mlxcache.trust_variable(True)  # the user's
        out[name] = os.environ[name]
    os.environ.setdefault("CUDA_CACHE_MAXSIZE", str(CUDA_CACHE_BYTES))
    out["CUDA_CACHE_MAXSIZE"] = os.environ["CUDA_CACHE_MAXSIZE"]
    for name in kernel_cache_dirs() if create else ("MLX_PTX_CACHE_DIR",):
        try:
            Path(out[name]).mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only cache: the driver and MLX then compile in memory
            pass
    cubins.use_folder(cubin_dir())
    out["rolekit"] = str(cubin_dir())
    return out
