"""A step's token-ring bookkeeping as two CUDA kernels (`engine.ring_cuda`). No GPU here: the
kernels' algorithm, one (row, stream) at a time over the ring's columns as `device/ring_in.cu` and
`ring_out.cu` write it, gives the references' results (`engine.ring`'s ops) on random rings,
offsets and provided tokens; the step launches the kernels where the policy asks; the `gpu` test
compares the kernels with the references exactly."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.engine import ring as R
from rolekit.engine import ring_cuda
from rolekit.frames import MAX_DELAY, N_STREAMS, USER_STREAMS

DEP_Q = 16


def _state(rng: np.random.Generator, batch: int, offsets: list[int]) -> dict[str, np.ndarray]:
    cache = rng.integers(-2, 2048, (batch, N_STREAMS, R.CT)).astype(np.int32)
    cache[rng.random(cache.shape) < 0.1] = -1  # provided ZERO_TOKENs: a given -1 is still given
    return {
        "cache": cache,
        "provided": rng.random((batch, N_STREAMS, R.CT)) < 0.5,
        "cols": np.asarray(R.pack(np, R.step_columns(np, np.array(offsets)))),
        "user": rng.integers(0, 2048, (batch, len(USER_STREAMS))).astype(np.int32),
        "initial": np.array([32000] + [2048] * (N_STREAMS - 1), np.int32),
        "text": rng.integers(0, 32000, (batch,)).astype(np.int32),
        "audio": rng.integers(0, 2048, (batch, 8)).astype(np.int32),
    }


def algorithm_in(st: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """device/ring_in.cu, thread by thread."""
    cache, provided, cols = st["cache"].copy(), st["provided"].copy(), st["cols"]
    b_n, ns, ct = cache.shape
    tokens = np.zeros((b_n, ns), np.int32)
    text_target, text_given = np.zeros(b_n, np.int32), np.zeros(b_n, bool)
    dep = np.zeros((b_n, DEP_Q), np.int32)
    for b in range(b_n):
        col = cols[0 if cols.shape[0] == 1 else b]
        for s in range(ns):
            write, init, prev, now = col[s], col[ns + s], col[2 * ns + s], col[3 * ns + s]
            tok = st["user"][b, s - USER_STREAMS[0]] if s >= USER_STREAMS[0] else 0
            inp = target = 0
            given = False
            for c in range(ct):
                v, p = cache[b, s, c], provided[b, s, c]
                if write[c]:
                    v = tok
                if init[c]:
                    v = st["initial"][s]
                p = p or write[c] or init[c]
                cache[b, s, c], provided[b, s, c] = v, p
                if prev[c]:
                    inp += v
                if now[c]:
                    target += v
                    given = given or p
            tokens[b, s] = inp
            if s == 0:
                text_target[b], text_given[b] = target, given
            elif s <= DEP_Q:
                dep[b, s - 1] = target if given else -1
    return cache, provided, tokens, text_target, text_given, dep


def algorithm_out(
    cache: np.ndarray, provided: np.ndarray, st: dict[str, np.ndarray]
) -> tuple[np.ndarray, ...]:
    """device/ring_out.cu, thread by thread."""
    cols, text, audio = st["cols"], st["text"], st["audio"]
    b_n, ns, ct = cache.shape
    new_cache, new_prov = cache.copy(), provided.copy()
    out = np.zeros((b_n, R.OUT_STREAMS), np.int32)
    for b in range(b_n):
        col = cols[0 if cols.shape[0] == 1 else b]
        for s in range(ns):
            prev, now = col[2 * ns + s], col[3 * ns + s]
            at_out = col[4 * ns + (s if s < R.OUT_STREAMS else 0)]
            target, given = 0, False
            for c in range(ct):
                if now[c]:
                    target += cache[b, s, c]
                    given = given or (provided[b, s, c] and not prev[c])
            na = audio.shape[1]
            sampled = text[b] if s == 0 else (audio[b, s - 1] if s <= na else target)
            nxt = target if given else sampled
            read = 0
            for c in range(ct):
                v = nxt if now[c] else cache[b, s, c]
                new_cache[b, s, c] = v
                new_prov[b, s, c] = provided[b, s, c] and not prev[c]
                if at_out[c]:
                    read += v
            if s < R.OUT_STREAMS:
                out[b, s] = read
    return new_cache, new_prov, out


def _mx(st: dict[str, np.ndarray], *names: str) -> list[mx.array]:
    return [mx.array(st[n]) for n in names]


@pytest.mark.parametrize(
    "offsets",
    [[1, 2, 3], [0, MAX_DELAY, MAX_DELAY + 1], [57, 58, 1000], [5]],
)
@pytest.mark.parametrize("shared_columns", [False, True])
def test_the_kernels_algorithm_gives_the_ring_ops(offsets, shared_columns):
    rng = np.random.default_rng(sum(offsets) + shared_columns)
    st = _state(rng, len(offsets), offsets)
    if shared_columns:  # one offset for every row: cols [1, PACKED, CT]
        st["cols"] = np.asarray(R.pack(np, R.step_columns(np, offsets[0])))
        assert st["cols"].shape[0] == 1
    want = ring_cuda.reference_in(*_mx(st, "cache", "provided", "cols", "user", "initial"), DEP_Q)
    got = algorithm_in(st)
    for w, g in zip(want, got, strict=True):
        assert np.array_equal(np.array(w), g)
    cache, provided = got[0], got[1]
    want_out = ring_cuda.reference_out(
        mx.array(cache), mx.array(provided), mx.array(st["cols"]), mx.array(st["text"]), mx.array(st["audio"])
    )
    for w, g in zip(want_out, algorithm_out(cache, provided, st), strict=True):
        assert np.array_equal(np.array(w), g)


def test_the_step_launches_the_ring_kernels_where_the_policy_asks(monkeypatch):
    from tests.engine.test_compile_ahead import ALL, _engine
    from tests.nn.nvrtc import capture_kernels, pretend_cuda

    pretend_cuda(monkeypatch)
    for kernels, want in ((ALL, 2), (ALL.with_values({"token_ring": False}), 0)):
        engine = _engine("q4", 2, context=40, kernels=kernels)
        with capture_kernels(monkeypatch) as seen:
            for _ in range(3):  # the first call only primes the ring
                engine.step(np.zeros((2, 1920), np.float32))
        assert sum(k.name.startswith("rolekit_tokenring_") for k in seen) == want


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 5])
def test_ring_kernels_on_cuda_equal_the_ring_ops(batch):
    rng = np.random.default_rng(batch)
    for offsets in ([1] * batch, list(range(batch)), list(rng.integers(1, 3000, batch))):
        st = _state(rng, batch, [int(o) for o in offsets])
        args = _mx(st, "cache", "provided", "cols", "user", "initial")
        want, got = ring_cuda.reference_in(*args, DEP_Q), ring_cuda.ring_in(*args, DEP_Q)
        for w, g in zip(want, got, strict=True):
            assert w.dtype == g.dtype and np.array_equal(np.array(w), np.array(g))
        tail = [got[0], got[1], *_mx(st, "cols", "text", "audio")]
        for w, g in zip(ring_cuda.reference_out(*tail), ring_cuda.ring_out(*tail), strict=True):
            assert w.dtype == g.dtype and np.array_equal(np.array(w), np.array(g))
