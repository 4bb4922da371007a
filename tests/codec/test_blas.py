"""OpenBLAS preloading for MLX's CPU backend (checked in fresh interpreters)."""

import subprocess
import sys

from rolekit.codec.blas import openblas_path

SCRIPT = """
import sys
from rolekit.codec.blas import openblas_loaded, preload_openblas
{before}
print(preload_openblas())
import mlx.core as mx
mx.eval(mx.ones((4, 4)) @ mx.ones((4, 4)))
print(openblas_loaded())
"""


def _run(before: str = "", env_extra: dict | None = None) -> list[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ROLEKIT_NO_OPENBLAS")}
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(before=before)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return out.stdout.strip().splitlines()


def test_preload_binds_mlx_to_openblas_when_installed():
    message, loaded = _run()
    if openblas_path() is None:
        assert message.startswith("no system openblas") and loaded == "False"
    else:
        assert message.startswith("openblas loaded from") and loaded == "True"


def test_preload_is_a_no_op_after_mlx_or_when_disabled():
    message, loaded = _run(before="import mlx.core")
    assert message == "too late: mlx already imported" and loaded == "False"
    message, loaded = _run(env_extra={"ROLEKIT_NO_OPENBLAS": "1"})
    assert message == "disabled by ROLEKIT_NO_OPENBLAS=1" and loaded == "False"
