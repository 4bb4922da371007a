"""Changes proposed to other packages, applied in-process only while a benchmark runs, so that
their effect is measured on the real code paths before anyone edits those packages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx


@contextmanager
def proposed_ring_write() -> Iterator[None]:
    """Measure proposal P1 (bench/RESULTS.md) in-process: one-position ring writes of
    `rolekit.nn.attention` use `mx.put_along_axis`, which updates the ring in place when nothing
    else holds it, instead of `mx.slice_update` at an array index, which copies the whole ring.
    Restored on exit; rolekit.nn itself is unchanged."""
    from rolekit.nn import attention

    original = attention._put

    def put(buf: mx.array, update: mx.array, start: int) -> mx.array:
        if update.shape[2] != 1:
            return original(buf, update, start)
        b, h, _, d = buf.shape
        idx = mx.full((b, h, 1, d), start, dtype=mx.int32)  # [B, H, 1, Dh]
        return mx.put_along_axis(buf, idx, update.astype(buf.dtype), axis=2)

    attention._put = put
    try:
        yield
    finally:
        attention._put = original
