"""Every CUDA kernel rolekit's launchers generate compiles with NVRTC for sm_90 (an H100), here on a
machine without a GPU: the launches of tiny engines (every kernel family, dense / bf16 / q4 / q8
weights, 1-2 rows, each policy that selects a different kernel) and of the full-size Mimi are
captured at `nn.cuda.CudaKernel` and compiled as the product compiles them (`nn.nvrtc`), once per
kernel body and activation type.

Needs `nvidia-cuda-nvrtc` and CUDA's headers (marker `nvrtc`; `python -m pytest -m nvrtc tests`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from rolekit import notices
from rolekit.nn import jitlink
from rolekit.nn.kernels import Kernels, TemporalTuning
from tests.nn.nvrtc import ALL, capture_kernels, compile_sm90, pretend_cuda

pytestmark = pytest.mark.nvrtc

# each entry selects kernels the others do not reach (the temporal kernel covers the fused and
# ring-attention ones inside the step; the Mimi kernel covers the conv windows)
POLICIES = {
    "all": ALL,
    "layers": dataclasses.replace(ALL, temporal=False, depformer=False, mimi=False),
    "threads": dataclasses.replace(ALL, depformer_threads=512, temporal_tuning=TemporalTuning(stages=0)),
    "qmv": Kernels(qmv=True),
    # the temporal generator's other knobs: register path by single rows, no L2 prefetch, 2 slot passes
    "tuning": dataclasses.replace(
        ALL, temporal_tuning=TemporalTuning(stages=0, pairs=False, prefetch=False, slot_passes=2)
    ),
}
TUNED = {"threads": ("q4",), "tuning": ("fp32", "q4")}


def _engine_launches(monkeypatch, seen, kernels: Kernels, quant: str, batch: int) -> None:
    from rolekit.codec.config import tiny as tiny_mimi
    from rolekit.codec.mimi import Mimi
    from rolekit.engine.engine import Engine
    from rolekit.lm.config import tiny
    from rolekit.models import ModelBundle
    from rolekit.randlm import build_lm

    lm = build_lm(tiny(card=2048, context=40, num_heads=1, depformer_num_heads=1), quant)
    mimi = Mimi(tiny_mimi(bins=2048, total_codebooks=8, num_codebooks=8, context=250))
    mimi.prepare()
    bundle = ModelBundle(lm, mimi, None, Path("."), "tiny-h1", True)
    engine = Engine(bundle, batch=batch, kernels=kernels)
    for _ in range(3):
        engine.step(np.zeros((batch, 1920), np.float32))


def test_every_generated_kernel_compiles_for_sm90(monkeypatch):
    from rolekit.codec.compiled import CompiledMimi
    from rolekit.codec.config import mimi_202407
    from rolekit.codec.mimi import Mimi
    from rolekit.codec.mimi_cuda import MAX_BATCH

    pretend_cuda(monkeypatch)
    with capture_kernels(monkeypatch) as seen:
        for name, kernels in POLICIES.items():
            for quant in TUNED.get(name, ("fp32", "bf16", "q4", "q8")):
                for batch in (1, 2):
                    _engine_launches(monkeypatch, seen, kernels, quant, batch)
        for kernels, batch in ((ALL, 1), (ALL, MAX_BATCH), (dataclasses.replace(ALL, mimi=False), 1)):
            mimi = Mimi(mimi_202407())
            codec = CompiledMimi(mimi, kernels)
            state = codec.make_state(batch)
            codes = codec.encode_step(mx.zeros((batch, 1, 1920)), state)
            codec.decode_step(codes, state)
        # the tensor-core q4 product serves 5..64 rows at dims the tiny engines lack: three 16-row tiles
        from rolekit.nn import qmm

        scales = mx.zeros((256, 8), mx.float16)
        qmm.qmm(mx.zeros((40, 512), mx.bfloat16), mx.zeros((256, 64), mx.uint32), scales, scales, 64)
    families = {k.name.split("_")[1] for k in seen}
    expected = {"fused", "ring", "temporal", "depformer", "embed", "conv", "mimi", "qmv", "qmm", "tokenring"}
    assert families == expected, families
    # one launch per kernel source and activation type (other template values only set constants)
    distinct = {(k.name, k.dtype): k for k in seen}
    # Mimi's step kernels come in parts (the default policy), compiled apart and linked
    assert any(jitlink.units(k.source) for k in distinct.values() if k.name.startswith("rolekit_mimi_"))
    notices.reset()
    failures = {}
    for k in distinct.values():
        log = compile_sm90(k.source, k.name)
        if log is not None:
            failures[k.name] = log[:2000]
    assert not failures, failures
    assert "kernel-link" not in notices.said()  # every kernel in parts linked
