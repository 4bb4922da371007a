"""The text of rolekit's CUDA kernels: device code shipped as package data (`<package>/device/`),
the shared header set every kernel includes, the prelude of CUDA's types, the CUDA type of each
MLX dtype, and kernel-name tags. `nn.cuda` builds translation units from these."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import mlx.core as mx


def source_tag(source: str) -> str:
    """12 hex digits of a kernel source for its name: two sources never share a kernel name."""
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


# What every kernel's translation unit starts with: CUDA's own types (MLX's custom-kernel prelude
# offered the same), `cg` for cooperative groups, INFINITY without <cmath>.
PRELUDE = """#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/cstdint>
#include <cuda/std/limits>
#include <cooperative_groups.h>
using cuda::std::int32_t; using cuda::std::uint32_t; using cuda::std::int64_t;
using cuda::std::uint64_t; using cuda::std::int8_t; using cuda::std::uint8_t;
namespace cg = cooperative_groups;
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
"""

# the CUDA type of each MLX dtype a kernel argument may have
CUDA_TYPES = {
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

Template = Sequence[tuple[str, "int | bool | mx.Dtype"]]
