"""Suite-wide test settings: never touch the network, keep the torch oracle fast."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Commands default to the real model (nvidia/personaplex-7b-v1); tests run on the embedded random one.
os.environ.setdefault("ROLEKIT_MODEL", "tiny")

# Same as the CLI: MLX on Linux binds to the system OpenBLAS when it is loaded before mlx.
from rolekit.codec.blas import preload_openblas  # noqa: E402

preload_openblas()


import pytest  # noqa: E402


def fused_contract(x, wt, norm=None, gate=False, residual=None):
    """What rolekit.nn.fused's CUDA kernel computes, in float32 MLX ops: rows row0 .. row0 + rows
    (x2 gated) of the (dequantized) weight, the RMSNorm prologue, the gate and residual epilogues."""
    import mlx.core as mx
    import mlx.nn as nn

    w = wt.w
    if wt.bits:
        w = mx.dequantize(wt.w, wt.scales, wt.biases, group_size=wt.group, bits=wt.bits)
    w = w[wt.row0 : wt.row0 + (2 if gate else 1) * wt.rows].astype(mx.float32)
    xf = x.astype(mx.float32)
    if norm is not None:
        xf = mx.fast.rms_norm(xf, norm.weight.astype(mx.float32), norm.eps)
    y = xf @ w.T
    if gate:
        y = nn.silu(y[..., : wt.rows]) * y[..., wt.rows :]
    if residual is not None:
        y = residual.astype(mx.float32) + y
    return y.astype(x.dtype)


@pytest.fixture
def kernel_model(monkeypatch):
    """Pretend rolekit.nn.fused's kernel applies (as on CUDA), record its calls
    (x shape, row0, rows, bits, norm?, gate?, residual?); it computes `fused_contract`."""
    from rolekit.nn import fused

    calls: list[tuple] = []

    def fake(x, wt, norm=None, gate=False, residual=None):
        calls.append((x.shape, wt.row0, wt.rows, wt.bits, norm is not None, gate, residual is not None))
        return fused_contract(x, wt, norm, gate, residual)

    monkeypatch.setattr(fused, "enabled", lambda: True)
    monkeypatch.setattr(fused, "fused", fake)
    return calls
