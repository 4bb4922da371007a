"""The text of rolekit's CUDA kernels: device code shipped as package data (`<package>/device/`),
the shared header set every kernel includes, the prelude of CUDA's types, the CUDA type of each
MLX dtype, kernel-name tags, and `translation_unit`, the full source of one kernel launch."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import mlx.core as mx

from rolekit.nn.jitlink import PART


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


def translation_unit(
    name: str,
    names: Sequence[str],
    types: Sequence[str],
    body: str,
    header: str = "",
    threads: int = 0,
    template: Template = (),
    parts: Sequence[str] = (),
    part_params: Sequence[str] = (),
) -> str:
    """The source of kernel `name`: `PRELUDE`, the shared header set, `header`, then `extern "C"
    __global__ void name(types[i] names[i], ...)` (launch bounds `threads` where > 0) running
    `body` after the `template` values as constants (`int`, `bool`, or a type alias for a dtype).
    With `parts`, each is first the body of a `__device__ __noinline__ rolekit_part_<i>` of its
    own (`PART` lines: compiled apart, `nn.jitlink`), which takes a table of the kernel's
    arguments (unpacked under their names where the part uses them) and `part_params`; the kernel
    fills the table in shared memory (not as arguments: those would be copied to every thread's
    stack at each call) and calls a part as `rolekit_part_<i>(ROLEKIT_KERNEL_ARGS, ...)`."""
    params = [f"    {t} {n}" for t, n in zip(types, names, strict=True)]
    consts = []
    for key, value in template:
        if isinstance(value, bool):
            consts.append(f"  constexpr bool {key} = {'true' if value else 'false'};\n")
        elif isinstance(value, int):
            consts.append(f"  constexpr int {key} = {value};\n")
        else:
            consts.append(f"  using {key} = {CUDA_TYPES[value]};\n")
    bounds = f" __launch_bounds__({threads})" if threads else ""
    text = [PRELUDE, shared_header(), header]
    opening: list[str] = []
    if parts:
        sig = ",\n".join(["    void* const* rolekit_args", *(f"    {p}" for p in part_params)])
        sigs = [f"void rolekit_part_{i}(\n{sig})" for i in range(len(parts))]
        for head, part in zip(sigs, parts, strict=True):
            used = set(re.findall(r"[A-Za-z_]\w*", part))
            unpack = [
                f"  {t} {n} = static_cast<{t}>(rolekit_args[{i}]);\n"
                for i, (t, n) in enumerate(zip(types, names, strict=True))
                if n in used
            ]
            text += [PART, f"__device__ __noinline__ {head} {{\n", *consts, *unpack, part, "\n}\n"]
        text += [PART, *(f"__device__ {head};\n" for head in sigs)]
        text.append("#define ROLEKIT_KERNEL_ARGS rolekit_args\n")
        opening.append(f"  __shared__ void* rolekit_args[{len(names)}];\n  if (threadIdx.x == 0) {{\n")
        opening += [f"    rolekit_args[{i}] = (void*){n};\n" for i, n in enumerate(names)]
        opening.append("  }\n  __syncthreads();\n")
    text += [f'\nextern "C" __global__ void{bounds} {name}(\n', ",\n".join(params), ") {\n"]
    return "".join(text + consts + opening + [body, "\n}\n"])
