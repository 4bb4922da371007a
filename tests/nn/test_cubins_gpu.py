"""On a CUDA GPU (`pytest -m gpu tests/nn`): a process compiles a rolekit kernel once, runs it
(checked against MLX's ops by doctor's probe) and keeps its cubin; a later process with the same
`$ROLEKIT_CACHE` runs it from the cache without compiling. Both launch it from MLX's kernel cache
(`nn.mlxcache`): MLX ran the placed cubin, since compiling the placeholder is an `#error`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

CODE = (
    "import json, rolekit; from rolekit.doctor.probes import compile_cuda_kernel; "
    "from rolekit.nn import cubins, cuda; compile_cuda_kernel(); "
    "print(json.dumps({**cubins.CACHE.stats.as_dict(), 'launch': cuda.launch_path()}))"
)


def _run(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_PTX_CACHE_DIR", "CUDA_CACHE_PATH")}
    env["ROLEKIT_CACHE"] = str(cache)
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_runs_the_kernel_from_the_cubin_cache(tmp_path):
    first = _run(tmp_path)
    # two kernels: doctor's and the one that checks launching from MLX's cache (`cuda.mlx_cache_folder`)
    assert first["compiled"] == 2 and first["read"] == 0, first
    cubin = list((tmp_path / "kernels" / "rolekit").glob("rolekit_doctor_axpb_*.cubin"))
    assert len(cubin) == 1 and cubin[0].read_bytes()[:4] == b"\x7fELF"
    assert first["launch"] == "mlx-cache", first
    placed = list((tmp_path / "kernels" / "mlx-ptx").glob("custom_kernel_rolekit_doctor_axpb_*.ptx"))
    assert len(placed) == 1 and placed[0].read_bytes() == cubin[0].read_bytes()[:-32]  # less its digest
    symbol = cubin[0].name.split("-")[0]
    listing = placed[0].with_suffix(".txt").read_text()
    assert listing == f"mlx::core::cu::custom_kernel_{symbol}\t{symbol}\n"
    stamp = placed[0].stat().st_mtime_ns
    second = _run(tmp_path)
    assert second["compiled"] == 0 and second["read"] == 2 and second["launch"] == "mlx-cache", second
    assert placed[0].stat().st_mtime_ns == stamp  # found right: not written again
