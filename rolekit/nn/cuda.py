"""The CUDA device as rolekit's own kernels (`mx.fast.cuda_kernel`) see it: present, its SMs and shared
memory, and the name tag of a kernel source. Which kernels run is `nn.kernels.Kernels`."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import mlx.core as mx


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


def device_code(package: str, name: str) -> str:
    """The CUDA text of `<package>/device/<name>` (a .cuh header or a .cu kernel body shipped as
    package data), exactly as stored: kernel names hash it (`source_tag`)."""
    return resources.files(package).joinpath("device", name).read_text(encoding="utf-8")
