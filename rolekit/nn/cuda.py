"""When rolekit's own CUDA kernels (`mx.fast.cuda_kernel`) may run: a switch and the device."""

from __future__ import annotations

import os
from functools import lru_cache

import mlx.core as mx


def kernels_on(env: str, default: bool) -> bool:
    """True when environment switch `env` (unset: `default`; "0" off, anything else on) allows the
    kernels and MLX's default device is a CUDA GPU. Read when a graph is built, i.e. once per trace
    of a compiled step."""
    value = os.environ.get(env, "")
    on = default if value == "" else value != "0"
    return on and mx.default_device() == mx.gpu and cuda_available()


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    return bool(mx.cuda.is_available())
