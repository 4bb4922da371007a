"""A cluster worker loads the model with the driver's --dtype / --quant / --compat (no Ray needed), and
the arguments it is started with unpickle without importing mlx (else MLX binds the reference BLAS
before the worker's `preload_openblas`, and its audio differs from a local run's)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace

import pytest

from rolekit import models
from rolekit.models import LoadOptions
from rolekit.nn.kernels import Kernels
from rolekit.suite.cluster import ClusterOptions, RayCluster
from rolekit.suite.worker import SuiteWorker


def test_worker_loads_with_the_drivers_load_options(monkeypatch):
    seen = []
    real = models.load

    def spy(spec, options=None, *args, **kwargs):
        seen.append((spec, options))
        return real(spec, options, *args, **kwargs)

    monkeypatch.setattr(models, "load", spy)
    options = LoadOptions(dtype="bf16", quant="auto", compat="nvidia", batch=2)
    model, prefill_cache, load = RayCluster(ClusterOptions(), "tiny", options).worker_args()
    worker = SuiteWorker(model, prefill_cache, load)
    info = worker.ready()
    assert seen == [("tiny", options)]
    assert info["model"]["dtype"] == "bf16" and info["model"]["compat"] == "nvidia"
    assert info["model"]["random_weights"] is True and info["is_random"] is True


_UNPICKLE = """
import pickle, sys
args = pickle.loads(sys.stdin.buffer.read())
print("mlx.core" in sys.modules)
"""


def _imports_mlx(obj: object) -> bool:
    out = subprocess.run(
        [sys.executable, "-c", _UNPICKLE], input=pickle.dumps(obj), capture_output=True, check=True
    )
    return out.stdout.decode().strip() == "True"


def test_worker_arguments_unpickle_without_mlx():
    options = LoadOptions(dtype="fp32", quant="q4", compat="nvidia", batch=4)
    assert _imports_mlx(options)  # why the worker gets a plain dict: the dataclass's module imports mlx
    args = RayCluster(ClusterOptions(), "tiny", options).worker_args()
    assert args[2] == {"dtype": "fp32", "quant": "q4", "compat": "nvidia", "batch": 4, "kernels": None}
    assert not _imports_mlx(args)
    policy = Kernels(depformer_threads=512)  # --kernels: a frozen value of a module without mlx
    args = RayCluster(ClusterOptions(), "tiny", replace(options, kernels=policy)).worker_args()
    assert args[2]["kernels"] == policy and not _imports_mlx(args)
    assert RayCluster(ClusterOptions(), "tiny").worker_args() == ("tiny", True, None)
    with_kernels = RayCluster(ClusterOptions(kernels="fused=0"), "tiny", options).worker_args()
    assert with_kernels[2]["kernels"] == "fused=0" and not _imports_mlx(with_kernels)


def test_a_worker_turns_kernels_text_into_its_own_devices_policy():
    """`--kernels` on a cluster is resolved by each worker: here a CPU, where every kernel is off and
    one turned on is refused, naming the option."""
    from rolekit.errors import ConfigError
    from rolekit.nn.kernels import OPS

    worker = SuiteWorker("tiny", False, {"kernels": "fused=0"})
    worker.ready()
    assert worker.backend.bundle.kernels == OPS
    with pytest.raises(ConfigError, match="--kernels qmv: rolekit's kernels need a CUDA GPU"):
        SuiteWorker("tiny", False, {"kernels": "qmv=1"}).ready()
