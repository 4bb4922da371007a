"""PyTorch `.pt` files (NVIDIA's voice presets) as numpy. No mlx; torch is imported only here.

Contract of `read_pt(source, where)`:
- `source` is a path or the file's bytes (e.g. a member of `voices.tgz`); `where` names it in
  errors (default: the path).
- Loaded with `torch.load(weights_only=True)`: a `.pt` is untrusted input, and no pickled code runs.
- Returns `dict[str, np.ndarray]` with the file's top-level keys. bfloat16 tensors widen to float32
  (exact; numpy has no bfloat16); every other dtype is kept (float16, float32, int64, bool...).
- Anything else (torch missing, a damaged or truncated pickle, not a dict of tensors) raises
  `ModelError` naming `where`: one line, no traceback.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from rolekit.errors import ModelError, Problem

TORCH_HINT = (
    "reading a .pt file needs torch (pip install 'rolekit[convert]'), "
    "or convert the voices to .safetensors once with `rolekit convert`"
)


def read_pt(source: str | Path | bytes, where: str | None = None) -> dict[str, np.ndarray]:
    """A `.pt` file of named tensors -> {name: array} (see the module contract)."""
    if where is None:
        where = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        import torch
    except ImportError:
        raise ModelError(problems=[Problem(TORCH_HINT, where)]) from None
    try:
        obj = torch.load(
            io.BytesIO(source) if isinstance(source, bytes) else str(source),
            map_location="cpu",
            weights_only=True,
        )
    except Exception as exc:  # torch raises many types for damaged pickles; one clear message
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelError(
            problems=[Problem(f"not a readable .pt file ({type(exc).__name__}: {detail})", where)]
        ) from None
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        found = type(obj).__name__
        raise ModelError(problems=[Problem(f"expected a dict of named tensors, found a {found}", where)])
    out: dict[str, np.ndarray] = {}
    for key, t in obj.items():
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        try:
            out[key] = t.contiguous().numpy()
        except (TypeError, RuntimeError) as exc:  # dtypes numpy lacks (float8, quantized...)
            raise ModelError(
                problems=[Problem(f"tensor dtype {t.dtype} has no numpy form ({exc})", where, field=key)]
            ) from None
    return out
