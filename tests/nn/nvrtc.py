"""Compile the CUDA kernels rolekit generates with NVRTC, on a machine without a GPU.

`capture_kernels` records every `mx.fast.cuda_kernel` that a piece of code builds and launches
(with the input dtypes and template values of each launch: what MLX needs to write the kernel),
answering each launch with zeros. `full_source` writes the translation unit as MLX's CUDA backend
does for a custom kernel (its default header, the kernel's header, the signature from the input
and output names and dtypes, the template values as constants, then the body). `compile_sm90`
compiles it with NVRTC (libnvrtc from the `nvidia-cuda-nvrtc` wheel, CUDA headers from the
toolkit or `$CUDA_HOME`) and returns the log of a failure.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

# MLX's `dtype_to_cuda_type`
_CUDA_TYPES = {
    mx.float32: "float",
    mx.float16: "__half",
    mx.bfloat16: "__nv_bfloat16",
    mx.int32: "int32_t",
    mx.uint32: "uint32_t",
    mx.int64: "int64_t",
    mx.uint64: "uint64_t",
    mx.int8: "int8_t",
    mx.uint8: "uint8_t",
    mx.bool_: "bool",
}

# Stands in for MLX's device utilities, which its CUDA build embeds: the kernels use only CUDA's
# own types from it.
_UTILS = """
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/cstdint>
#include <cuda/std/limits>
using cuda::std::int32_t; using cuda::std::uint32_t; using cuda::std::int64_t;
using cuda::std::uint64_t; using cuda::std::int8_t; using cuda::std::uint8_t;
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
"""

_DEFAULT_HEADER = """
#include "mlx/backend/cuda/device/utils.cuh"

#include <cooperative_groups.h>

#define inf cuda::std::numeric_limits<float>::infinity()

"""


@dataclass(frozen=True)
class Launch:
    """One distinct kernel as MLX would compile it."""

    name: str
    header: str
    source: str
    inputs: tuple[tuple[str, str], ...]  # (name, CUDA type)
    outputs: tuple[tuple[str, str], ...]
    template: tuple[tuple[str, Any], ...]


@contextmanager
def capture_kernels(monkeypatch: Any) -> Iterator[dict[Launch, None]]:
    """Within the block `mx.fast.cuda_kernel` records launches instead of running them."""
    seen: dict[Launch, None] = {}

    def cuda_kernel(name, input_names, output_names, source, header="", **_: Any):  # noqa: ANN001
        def call(*, inputs, output_shapes, output_dtypes, template=None, **__: Any):  # noqa: ANN001
            launch = Launch(
                name,
                header,
                source,
                tuple((n, _CUDA_TYPES[a.dtype]) for n, a in zip(input_names, inputs, strict=True)),
                tuple((n, _CUDA_TYPES[d]) for n, d in zip(output_names, output_dtypes, strict=True)),
                tuple(
                    (k, _CUDA_TYPES.get(v, v) if isinstance(v, mx.Dtype) else v) for k, v in template or ()
                ),
            )
            seen[launch] = None
            return [mx.zeros(s, dtype=d) for s, d in zip(output_shapes, output_dtypes, strict=True)]

        return call

    monkeypatch.setattr(mx.fast, "cuda_kernel", cuda_kernel)
    yield seen


def full_source(k: Launch) -> str:
    """The translation unit MLX's `build_kernel` writes for this launch."""
    params = [f"    const {t}* {n}" for n, t in k.inputs] + [f"    {t}* {n}" for n, t in k.outputs]
    consts = []
    for name, value in k.template:
        if isinstance(value, bool):
            consts.append(f"  constexpr bool {name} = {'true' if value else 'false'};\n")
        elif isinstance(value, int):
            consts.append(f"  constexpr int {name} = {value};\n")
        else:
            consts.append(f"  using {name} = {value};\n")
    return (
        _DEFAULT_HEADER
        + k.header
        + "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n"
        + f"__global__ void custom_kernel_{k.name}(\n"
        + ",\n".join(params)
        + ") {\n"
        + "".join(consts)
        + ("\n" if consts else "")
        + k.source
        + "\n}\n\n} // namespace mlx::core::cu\n"
    )


def _nvrtc() -> ctypes.CDLL:
    import nvidia  # the nvidia-cuda-nvrtc wheel

    for root in nvidia.__path__:
        for path in sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*"))):
            if "builtins" not in path:
                return ctypes.CDLL(path)
    raise FileNotFoundError("libnvrtc.so not found in the nvidia-cuda-nvrtc wheel")


def cuda_include_dirs() -> list[str]:
    """CUDA's headers (cuda_bf16.h, cooperative_groups.h, cuda/std)."""
    home = os.environ.get("CUDA_HOME") or next(iter(sorted(glob.glob("/usr/local/cuda*"), reverse=True)), "")
    inc = os.path.join(home, "include")
    if not os.path.exists(os.path.join(inc, "cuda_bf16.h")):
        raise FileNotFoundError(f"CUDA headers not found (set CUDA_HOME); looked in {inc!r}")
    return [inc, os.path.join(inc, "cccl")]


def compile_sm90(source: str, name: str = "kernel.cu") -> str | None:
    """NVRTC-compile `source` for sm_90 (as MLX's JIT does, C++17); None on success, else the log."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    headers = (ctypes.c_char_p * 1)(_UTILS.encode())
    include_names = (ctypes.c_char_p * 1)(b"mlx/backend/cuda/device/utils.cuh")
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 1, headers, include_names)
    assert rc == 0, f"nvrtcCreateProgram: {rc}"
    opts = [b"--gpu-architecture=sm_90", b"--std=c++17", b"-default-device"]
    opts += [f"--include-path={d}".encode() for d in cuda_include_dirs()]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    try:
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        if rc == 0:
            return None
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        return log.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
