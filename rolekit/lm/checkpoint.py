"""Read safetensors files tensor by tensor, without torch and without loading the whole file.

The header gives names, dtypes and shapes (enough to validate a checkpoint before reading it);
`get` memory-maps one tensor. bfloat16 is read as uint16 and reinterpreted, which numpy alone
cannot do.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np

from rolekit.errors import ModelError, Problem

_DTYPES = {
    "F32": (np.float32, mx.float32),
    "F16": (np.float16, mx.float16),
    "BF16": (np.uint16, mx.bfloat16),
    "U32": (np.uint32, mx.uint32),
    "I64": (np.int64, mx.int64),
    "I32": (np.int32, mx.int32),
    "U8": (np.uint8, mx.uint8),
    "I8": (np.int8, mx.int8),
    "F64": (np.float64, mx.float64),
    "BOOL": (np.bool_, mx.bool_),
}


class SafetensorsFile:
    """Lazy view of one .safetensors file: `shapes`, `dtypes`, `metadata`, `get(name) -> mx.array`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > 100_000_000:
                    raise ValueError("header too large")
                header = json.loads(f.read(n))
        except FileNotFoundError:
            raise ModelError(problems=[Problem("file not found", str(self.path))]) from None
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise ModelError(problems=[Problem(f"not a safetensors file ({exc})", str(self.path))]) from None
        self._data_start = 8 + n
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._entries: dict[str, dict] = header
        size = self.path.stat().st_size
        for name, e in header.items():
            if e.get("dtype") not in _DTYPES:
                raise ModelError(
                    problems=[Problem(f"unsupported dtype {e.get('dtype')}", str(self.path), None, name)]
                )
            if self._data_start + e["data_offsets"][1] > size:
                raise ModelError(problems=[Problem("file is truncated", str(self.path), None, name)])

    def keys(self) -> list[str]:
        return list(self._entries)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(e["shape"]) for k, e in self._entries.items()}

    def dtype(self, name: str) -> str:
        return self._entries[name]["dtype"]

    def __getitem__(self, name: str) -> mx.array:
        return self.get(name)

    def get(self, name: str) -> mx.array:
        e = self._entries[name]
        np_dtype, mx_dtype = _DTYPES[e["dtype"]]
        start, end = e["data_offsets"]
        count = (end - start) // np.dtype(np_dtype).itemsize
        raw = np.fromfile(self.path, dtype=np_dtype, count=count, offset=self._data_start + start)
        arr = mx.array(raw.reshape(e["shape"]))
        return arr.view(mx.bfloat16) if mx_dtype == mx.bfloat16 else arr
