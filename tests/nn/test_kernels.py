"""rolekit.nn.kernels.Kernels: the one policy of which CUDA kernels run, chosen from the device and
explicit overrides (the CLI's `--kernels` string)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from rolekit.errors import ConfigError
from rolekit.nn import cuda
from rolekit.nn.kernels import KERNEL_FIELDS, OPS, OPT_IN, Blocks, Kernels, TemporalTuning, parse


def test_off_cuda_no_kernel_runs():
    policy = Kernels.for_device(mx.cpu)
    assert policy == OPS and not policy.any
    assert Kernels.for_device(mx.cpu, "fused=0,depformer_threads=512").depformer_threads == 512


def test_on_cuda_every_default_kernel_runs_and_qmv_is_opt_in(monkeypatch):
    monkeypatch.setattr(cuda, "cuda_available", lambda: True)
    policy = Kernels.for_device(mx.gpu)
    assert all(getattr(policy, f) for f in KERNEL_FIELDS if f not in OPT_IN) and not policy.qmv
    assert OPT_IN == ("qmv",) and policy.qmm
    assert set(KERNEL_FIELDS) == {
        "fused", "ring_attention", "temporal", "depformer", "embed", "conv", "mimi", "qmv", "qmm",
        "token_ring",
    }  # fmt: skip
    off = Kernels.for_device(mx.gpu, {"fused": False, "qmv": True})
    assert not off.fused and off.qmv and off.temporal
    assert policy.blocks == Blocks.FUSED | Blocks.QMM and off.blocks == Blocks.QMV | Blocks.QMM
    plain = Kernels.for_device(mx.gpu, "qmm=0")
    assert plain.blocks == Blocks.FUSED
    # a prompt pass's quantized products: dense by default on CUDA, never part of a step's blocks
    assert policy.dense_prompt and policy.prompt_blocks == Blocks.DEQUANT
    assert not policy.blocks & Blocks.DEQUANT
    assert Kernels.for_device(mx.gpu, "dense_prompt=0").prompt_blocks == Blocks.NONE


def test_cuda_without_a_device_is_not_cuda(monkeypatch):
    monkeypatch.setattr(cuda, "cuda_available", lambda: False)
    assert Kernels.for_device(mx.gpu) == OPS


def test_the_option_string_sets_flags_threads_and_the_temporal_tuning(monkeypatch):
    monkeypatch.setattr(cuda, "cuda_available", lambda: True)
    policy = Kernels.for_device(
        mx.gpu,
        "temporal=0, ring_attention=off,depformer_threads=512,temporal_tuning=threads=256/words=16/prefetch=0",
    )
    assert not policy.temporal and not policy.ring_attention and policy.fused
    assert policy.depformer_threads == 512
    assert policy.temporal_tuning == TemporalTuning(threads=256, words=16, prefetch=False)
    assert parse("a=1,,b = 2") == {"a": "1", "b": "2"}
    assert policy.qmm_split and policy.blocks == Blocks.FUSED | Blocks.QMM
    unsplit = Kernels.for_device(mx.gpu, "qmm_split=0")
    assert unsplit.blocks == Blocks.FUSED | Blocks.QMM | Blocks.QMM_WHOLE
    assert Kernels.for_device(mx.gpu, "qmm=0,qmm_split=0").blocks == Blocks.FUSED  # no QMM: nothing to tune


def test_a_tuning_flag_is_not_a_kernel():
    """`qmm_split` tunes `nn.qmm`: allowed off CUDA (where it changes nothing), never counted as a kernel."""
    policy = Kernels.for_device(mx.cpu, "qmm_split=0")
    assert not policy.any and policy.blocks == Blocks.NONE and "qmm_split" not in KERNEL_FIELDS
    assert Kernels.for_device(mx.cpu).prompt_blocks == Blocks.NONE  # off CUDA: MLX's quantized product
    dense = Kernels.for_device(mx.cpu, "dense_prompt=1")  # MLX ops only: allowed anywhere
    assert not dense.any and dense.prompt_blocks == Blocks.DEQUANT and "dense_prompt" not in KERNEL_FIELDS


@pytest.mark.parametrize(
    "spec, words",
    [
        ("fused", "NAME=VALUE"),
        ("fusd=1", "unknown kernel 'fusd'"),
        ("fused=maybe", "fused='maybe': expected 0 or 1"),
        ("depformer_threads=100", "a multiple of 32"),
        ("qmm_split=maybe", "qmm_split='maybe': expected 0 or 1"),
        ("temporal_tuning=lanes=2", "unknown field"),
        ("temporal_tuning=threads=x", "threads='x': expected an integer"),
    ],
)
def test_bad_options_name_the_option_and_the_field(monkeypatch, spec, words):
    monkeypatch.setattr(cuda, "cuda_available", lambda: True)
    with pytest.raises(ConfigError) as err:
        Kernels.for_device(mx.gpu, spec)
    assert "--kernels" in str(err.value) and words in str(err.value)


def test_a_kernel_asked_for_off_cuda_is_an_error():
    with pytest.raises(ConfigError, match="--kernels temporal, mimi: .* need a CUDA GPU"):
        Kernels.for_device(mx.cpu, {"temporal": True, "mimi": "1"})


def test_the_policy_is_frozen():
    with pytest.raises(AttributeError):
        OPS.fused = True  # type: ignore[misc]
