"""Capture the CUDA kernels rolekit launches, on a machine without a GPU, and compile them as the
product does (`nn.cuda.CudaKernel.translation_unit`, `nn.jitlink.build`).

`capture_kernels` records every launch of a `CudaKernel` within the block (its name, activation
type and full translation unit) and answers it with zeros (one array per output, as a
kernel's outputs are to MLX's compile, each depending on the launch's inputs as a kernel's do); `compile_sm90` compiles one for sm_90
(an H100) and returns NVRTC's log of a failure. Needs `nvidia-cuda-nvrtc` and CUDA's headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.nn import cuda, jitlink, nvrtc
from rolekit.nn.cuda_text import CUDA_TYPES
from rolekit.nn.kernels import Kernels

# every default kernel of a CUDA GPU on (`Kernels.for_device` there, without the device)
ALL = Kernels(
    fused=True,
    ring_attention=True,
    temporal=True,
    depformer=True,
    embed=True,
    conv=True,
    mimi=True,
    token_ring=True,
)


@dataclass(frozen=True)
class Launch:
    """One distinct kernel translation unit."""

    name: str
    dtype: str | None  # the template's activation type T, if any
    source: str


@contextmanager
def capture_kernels(monkeypatch: Any) -> Iterator[dict[Launch, None]]:
    """Within the block, `CudaKernel` launches are recorded instead of compiled and run."""
    seen: dict[Launch, None] = {}

    def call(self, *, inputs, output_shapes, output_dtypes, template=(), **_: Any):  # noqa: ANN001
        t = dict(template).get("T")
        source = self.translation_unit([a.dtype for a in inputs], output_dtypes, template)
        seen[Launch(self.name, None if t is None else CUDA_TYPES[t], source)] = None
        # like a kernel's: each output an array of its own (no op to fuse) that needs the inputs
        outs = [
            mx.array(np.zeros(s, np.float32), dtype=d)
            for s, d in zip(output_shapes, output_dtypes, strict=True)
        ]
        return cuda.with_inputs(outs, inputs)

    monkeypatch.setattr(cuda.CudaKernel, "__call__", call)
    yield seen


def pretend_cuda(monkeypatch: Any) -> None:
    """The launchers see an H100's SMs, shared memory and architecture (no GPU here)."""
    from rolekit.codec import mimi_cuda
    from rolekit.lm import depformer_cuda, temporal_cuda

    for mod in (mimi_cuda, depformer_cuda, temporal_cuda):
        monkeypatch.setattr(mod, "sm_count", lambda: 132)
    monkeypatch.setattr(temporal_cuda, "shared_optin", lambda: 232448)
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90a")


def compile_sm90(source: str, name: str = "kernel") -> str | None:
    """Compile `source` for sm_90 as the product does (`nn.jitlink.build`: a kernel in parts part
    by part, then linked); None on success, else the log."""
    try:
        jitlink.build(source, name, "sm_90a", isolated=False)
    except nvrtc.CompileError as exc:
        return str(exc)
    return None
