"""The kernel profiler's arithmetic (its CUDA trace needs a GPU: `benchmarks.profile.profile_engine`)."""

from __future__ import annotations

import pytest

from benchmarks.profile import _busy_us, _category, profile_engine


def test_busy_time_is_the_union_of_kernel_intervals():
    assert _busy_us([]) == 0
    assert _busy_us([(0, 10), (5, 12), (20, 25)]) == 17  # overlap counted once, the gap not at all
    assert _busy_us([(20, 25), (0, 30)]) == 30  # nested, any order


def test_kernel_categories():
    assert _category("void mlx::core::cu::gemv_single<__nv_bfloat16, 8, 4>") == "matmul"
    assert _category("void mlx::core::cu::qmv_kernel<8, 16, 64>") == "matmul"
    assert _category("void mlx::core::cu::kernel_sdpav_1pass<__nv_bfloat16>") == "attention"
    assert _category("void mlx::core::cu::copy_gg_nd<float, float, int, 1, 4>") == "copy/gather"
    assert _category("void mlx::core::cu::rms_norm_small<float, 128>") == "norm/rope"
    assert _category("something_else") == "other"


def test_profile_needs_cuda():
    with pytest.raises(RuntimeError, match="CUDA"):
        profile_engine("tiny", steps=1, warmup=1)
