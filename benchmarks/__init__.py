"""Diagnostics behind `rolekit bench` and bench/gpu_product.sh (not part of the installed package).

`rolekit` is imported first, before any benchmark module imports mlx: importing it sets the kernel
cache variables (`rolekit.kernelcache`), which MLX reads only if they are set before `mlx.core` is
imported; set later, rolekit does not trust MLX's folder and launches its kernels the precompiled
way (`nn.mlxcache.folder`), so a benchmark would not time the path users run.
"""

import rolekit  # noqa: F401
