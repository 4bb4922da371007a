"""On a CUDA GPU (`pytest -m gpu tests/doctor`): doctor's kernel probe compiles and runs for real."""

from __future__ import annotations

import pytest

from rolekit.doctor import checks as dc

pytestmark = pytest.mark.gpu


def test_the_cuda_kernel_probe_compiles_on_this_gpu():
    info = dc.mlx_backend()
    assert info["backend"] == "cuda", info  # a gpu test run where MLX has no CUDA is a failure
    dc.compile_cuda_kernel()
    check = dc.check_cuda(info["backend"])
    assert check.status == "ok", check.detail
