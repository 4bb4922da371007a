"""When rolekit's own CUDA kernels (`mx.fast.cuda_kernel`) may run: a switch and the device."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import mlx.core as mx


def kernels_on(env: str, default: bool) -> bool:
    """True when environment switch `env` (unset: `default`; "0" off, anything else on) allows the
    kernels and MLX's default device is a CUDA GPU. Read when a graph is built, i.e. once per trace
    of a compiled step."""
    value = os.environ.get(env, "")
    on = default if value == "" else value != "0"
    return on and mx.default_device() == mx.gpu and cuda_available()


@contextmanager
def switched(on: bool, *envs: str) -> Iterator[None]:
    """Within the block, each kernel switch in `envs` is "1" (on) or "0" (off); restored after.
    For checks and benchmarks that compare the kernel and MLX paths in one process (the switch is
    read when a graph is built, so arrays built inside keep their path when evaluated later)."""
    saved = {env: os.environ.get(env) for env in envs}
    for env in envs:
        os.environ[env] = "1" if on else "0"
    try:
        yield
    finally:
        for env, value in saved.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    return bool(mx.cuda.is_available())


@lru_cache(maxsize=1)
def sm_count() -> int | None:
    """Streaming multiprocessors of CUDA device 0 (from the driver, libcuda), None without one.
    A kernel whose blocks wait for each other must launch no more blocks than can be resident."""
    return _attribute(16)  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT


def _attribute(attribute: int) -> int | None:
    """A CUdevice_attribute of CUDA device 0 from the driver (libcuda); None without one."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    dev, value = ctypes.c_int(), ctypes.c_int()
    if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(dev), 0):
        return None
    if lib.cuDeviceGetAttribute(ctypes.byref(value), attribute, dev):
        return None
    return value.value or None


@lru_cache(maxsize=1)
def shared_optin() -> int | None:
    """Bytes of shared memory a block of CUDA device 0 may opt in to (static + dynamic; 227 KB on
    an H100), None without a device."""
    return _attribute(97)  # CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN


def source_tag(source: str) -> str:
    """12 hex digits of a kernel source for its name: MLX caches compiled kernels by name (and
    template values), so two sources must never share one."""
    return hashlib.sha1(source.encode()).hexdigest()[:12]
