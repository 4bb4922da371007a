"""The CUDA device as rolekit's own kernels (`mx.fast.cuda_kernel`) see it: present, its SMs and shared
memory; the device code of `<package>/device/` and the shared header set every kernel includes;
`build_kernel`, the one place a kernel is named and built. Which kernels run is `nn.kernels.Kernels`."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from typing import Any

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
    """Bytes of shared memory a block of CUDA device 0 may opt in to (static + dynamic), None
    without a device."""
    return _attribute(97)  # CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN


def source_tag(source: str) -> str:
    """12 hex digits of a kernel source for its name: MLX caches compiled kernels by name (and
    template values), so two sources must never share one."""
    return hashlib.sha1(source.encode()).hexdigest()[:12]


def device_code(package: str, name: str) -> str:
    """The CUDA text of `<package>/device/<name>` (a .cuh header or a .cu kernel body shipped as
    package data), exactly as stored: kernel names hash it (`source_tag`)."""
    return resources.files(package).joinpath("device", name).read_text(encoding="utf-8")


SHARED_DEVICE_CODE = ("load.cuh", "dot.cuh", "grid.cuh", "ring_attention.cuh")


@lru_cache(maxsize=1)
def shared_header() -> str:
    """The device code every rolekit kernel includes, `rolekit/nn/device/` in this order: 16-byte
    loads (`load.cuh`), block norms and warp dot products (`dot.cuh`), the grid barrier, timer stamps
    and staged row products of persistent kernels (`grid.cuh`), and the ring attention's slot rule,
    softmax merge and stages (`ring_attention.cuh`)."""
    return "".join(device_code("rolekit.nn", name) for name in SHARED_DEVICE_CODE)


def build_kernel(
    family: str, inputs: list[str], outputs: list[str], source: str, header: str = "", **options: Any
) -> Any:
    """`mx.fast.cuda_kernel` of one rolekit kernel: `header` after the shared header set, the body
    `source`, row-contiguous inputs, named `rolekit_<family>_<source_tag of header and body>` (MLX
    caches compiled kernels by name and template values). `options`: `shared_memory` etc."""
    full = shared_header() + header
    return mx.fast.cuda_kernel(
        name=f"rolekit_{family}_{source_tag(full + source)}",
        input_names=list(inputs),
        output_names=list(outputs),
        source=source,
        header=full,
        ensure_row_contiguous=True,
        **options,
    )
