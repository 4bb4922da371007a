"""A step's token-ring bookkeeping as two CUDA kernels (`Kernels.token_ring`; off: the MLX ops of
`engine.ring`, `reference_in` / `reference_out`).

Why: as MLX ops the ring's selects, masks and column reads around the model are ~6 fused kernels
that MLX compiles one at a time on a machine's first step (3-5 s each on an H100) and launches
every step. Here the input side (`ring_in`: the user's codes and initial tokens into the ring, the
model's input column, the targets the depformer and the text draw are forced to) and the commit
side (`ring_out`: the sampled tokens into the ring, the output frame) are one small kernel each,
compiled with rolekit's others (at once, cached on disk): one thread a (row, stream), looping over
the ring's CT columns. Integers only: equal to the references exactly, which the `gpu`-marked test
of tests/engine/test_ring_cuda.py checks. The device code is `device/ring_in.cu` and `ring_out.cu`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import mlx.core as mx

from rolekit.engine import ring as R
from rolekit.frames import N_CODEBOOKS, N_STREAMS, USER_STREAMS
from rolekit.nn.cuda import build_kernel
from rolekit.nn.cuda_text import device_code

THREADS = 128
RingIn = tuple[mx.array, mx.array, mx.array, mx.array, mx.array, mx.array]


def reference_in(
    cache: mx.array, provided: mx.array, cols: mx.array, user: mx.array, initial: mx.array, dep_q: int
) -> RingIn:
    """The input side with `engine.ring`'s ops: ring cache / provided [B, 17, CT], cols [B|1,
    R.PACKED, CT] (`R.pack` of `R.step_columns`), user [B, 8] codes, initial [17] -> (cache,
    provided, model input tokens [B, 17], text target [B], text provided [B] bool, the depformer's
    given codes [B, dep_q] (-1: sample it))."""
    at = R.unpack(cols)
    batch = cache.shape[0]
    tokens = mx.concatenate([mx.zeros((batch, 1 + N_CODEBOOKS), mx.int32), user.astype(mx.int32)], axis=1)
    ring = R.provide(mx, R.Ring(cache, provided), tokens, None, at, initial)  # `at` masked
    target, given = R.targets(mx, ring, at)
    dep = R.depformer_provided(mx, ring, at, dep_q)
    return ring.cache, ring.provided, R.model_input(mx, ring, at), target[:, 0], given[:, 0], dep


def reference_out(
    cache: mx.array, provided: mx.array, cols: mx.array, text: mx.array, audio: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    """The commit side with `engine.ring`'s ops: text [B] sampled, audio [B, n] the depformer's
    codes -> (cache, provided, out [B, 9] text + agent codes of the output frame)."""
    at = R.unpack(cols)
    ring = R.commit(mx, R.Ring(cache, provided), at, text, audio)
    return ring.cache, ring.provided, R.output(mx, ring, at)


def ring_in(
    cache: mx.array, provided: mx.array, cols: mx.array, user: mx.array, initial: mx.array, dep_q: int
) -> RingIn:
    """`reference_in` as one CUDA kernel."""
    b, ns, ct = cache.shape
    kernel = _kernel("ring_in", ("cache", "provided", "cols", "user", "initial"))
    return tuple(
        kernel(
            inputs=[cache, provided, cols, user.astype(mx.int32), initial],
            template=[
                *_shape(cache, cols),
                ("USER0", USER_STREAMS[0]),
                ("NU", len(USER_STREAMS)),
                ("DQ", dep_q),
            ],  # fmt: skip
            grid=(_threads(b * ns), 1, 1),
            threadgroup=(THREADS, 1, 1),
            output_shapes=[(b, ns, ct), (b, ns, ct), (b, ns), (b,), (b,), (b, dep_q)],
            output_dtypes=[mx.int32, mx.bool_, mx.int32, mx.int32, mx.bool_, mx.int32],
        )
    )  # type: ignore[return-value]


def ring_out(
    cache: mx.array, provided: mx.array, cols: mx.array, text: mx.array, audio: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    """`reference_out` as one CUDA kernel."""
    b, ns, ct = cache.shape
    kernel = _kernel("ring_out", ("cache", "provided", "cols", "text", "audio"))
    out = kernel(
        inputs=[cache, provided, cols, text.astype(mx.int32), audio.astype(mx.int32)],
        template=[
            *_shape(cache, cols),
            ("NA", audio.shape[1]),
            ("NO", R.OUT_STREAMS),
        ],  # fmt: skip
        grid=(_threads(b * ns), 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(b, ns, ct), (b, ns, ct), (b, R.OUT_STREAMS)],
        output_dtypes=[mx.int32, mx.bool_, mx.int32],
    )
    return out[0], out[1], out[2]


def covers(cache: mx.array, provided: mx.array, cols: mx.array, dep_q: int) -> bool:
    """The kernels are written for this ring: cache [B, 17, CT] int32, provided of its shape and
    cols [B or 1, R.PACKED, CT] bool, at most 16 given codes."""
    if cache.ndim != 3 or cache.shape[1] != N_STREAMS or cache.dtype != mx.int32 or not 0 < dep_q < N_STREAMS:
        return False
    b, _, ct = cache.shape
    if provided.dtype != mx.bool_ or provided.shape != cache.shape or cols.dtype != mx.bool_:
        return False
    return cols.ndim == 3 and cols.shape[0] in (1, b) and cols.shape[1:] == (R.PACKED, ct)


def _shape(cache: mx.array, cols: mx.array) -> list[tuple[str, int]]:
    """The template constants both kernels take: rows, rows of `cols`, ring columns, streams."""
    b, ns, ct = cache.shape
    return [("B", b), ("CB", cols.shape[0]), ("CT", ct), ("NS", ns), ("PACKED", R.PACKED)]


def _threads(n: int) -> int:
    return -(-n // THREADS) * THREADS


@cache
def _kernel(name: str, inputs: tuple[str, ...]) -> Any:
    outputs = {
        "ring_in": ["cache_out", "provided_out", "tokens", "text_target", "text_given", "dep_given"],
        "ring_out": ["cache_out", "provided_out", "out"],
    }[name]
    return build_kernel("tokenring", list(inputs), outputs, device_code("rolekit.engine", f"{name}.cu"))
