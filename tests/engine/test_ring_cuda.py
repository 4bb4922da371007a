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


def _state(rng: np.random.Generator, batch: int, offsets: list[int], na: int = 8) -> dict[str, np.ndarray]:
    cache = rng.integers(-2, 2048, (batch, N_STREAMS, R.CT)).astype(np.int32)
    cache[rng.random(cache.shape) < 0.1] = -1  # provided ZERO_TOKENs: a given -1 is still given
    return {
        "cache": cache,
        "provided": rng.random((batch, N_STREAMS, R.CT)) < 0.5,
        "cols": np.asarray(R.pack(np, R.step_columns(np, np.array(offsets)))),
        "user": rng.integers(0, 2048, (batch, len(USER_STREAMS))).astype(np.int32),
        "initial": np.array([32000] + [2048] * (N_STREAMS - 1), np.int32),
        "text": rng.integers(0, 32000, (batch,)).astype(np.int32),
        "audio": rng.integers(0, 2048, (batch, na)).astype(np.int32),
    }


def algorithm_in(st: dict[str, np.ndarray], dq: int = DEP_Q) -> tuple[np.ndarray, ...]:
    """device/ring_in.cu over flat buffers with its pointer arithmetic, thread by thread."""
    b_n, ns, ct = st["cache"].shape
    cb_n, packed = st["cols"].shape[:2]
    cache, provided, cols = st["cache"].ravel(), st["provided"].ravel(), st["cols"].ravel()
    user, initial, nu, user0 = st["user"].ravel(), st["initial"], len(USER_STREAMS), USER_STREAMS[0]
    cache_out = np.full(cache.size, 777, np.int32)  # a write the kernel skipped would show
    provided_out = np.zeros(provided.size, bool)
    tokens = np.full(b_n * ns, 777, np.int32)
    text_target, text_given = np.full(b_n, 777, np.int32), np.zeros(b_n, bool)
    dep = np.full(b_n * dq, 777, np.int32)
    for i in range(-(-b_n * ns // ring_cuda.THREADS) * ring_cuda.THREADS):  # the grid, rounded up
        if i >= b_n * ns:
            continue
        b, s = i // ns, i - (i // ns) * ns
        col = (0 if cb_n == 1 else b) * packed * ct
        write, init, prev, now = (
            col + s * ct,
            col + (ns + s) * ct,
            col + (2 * ns + s) * ct,
            col + (3 * ns + s) * ct,
        )
        tok = user[b * nu + (s - user0)] if s >= user0 else 0
        row = (b * ns + s) * ct
        inp = target = 0
        given = False
        for c in range(ct):
            v, p = cache[row + c], provided[row + c]
            if cols[write + c]:
                v = tok
            if cols[init + c]:
                v = initial[s]
            p = p or cols[write + c] or cols[init + c]
            cache_out[row + c], provided_out[row + c] = v, p
            if cols[prev + c]:
                inp += v
            if cols[now + c]:
                target += v
                given = given or p
        tokens[i] = inp
        if s == 0:
            text_target[b], text_given[b] = target, given
        elif s <= dq:
            dep[b * dq + (s - 1)] = target if given else -1
    shape = st["cache"].shape
    return (
        cache_out.reshape(shape), provided_out.reshape(shape), tokens.reshape(b_n, ns),
        text_target, text_given, dep.reshape(b_n, dq),
    )  # fmt: skip


def algorithm_out(
    cache3: np.ndarray, provided3: np.ndarray, st: dict[str, np.ndarray]
) -> tuple[np.ndarray, ...]:
    """device/ring_out.cu over flat buffers with its pointer arithmetic, thread by thread."""
    b_n, ns, ct = cache3.shape
    cb_n, packed = st["cols"].shape[:2]
    cache, provided, cols = cache3.ravel(), provided3.ravel(), st["cols"].ravel()
    text, na, audio, no = st["text"], st["audio"].shape[1], st["audio"].ravel(), R.OUT_STREAMS
    cache_out = np.full(cache.size, 777, np.int32)
    provided_out = np.ones(provided.size, bool)
    out = np.full(b_n * no, 777, np.int32)
    for i in range(b_n * ns):
        b, s = i // ns, i - (i // ns) * ns
        col = (0 if cb_n == 1 else b) * packed * ct
        prev, now = col + (2 * ns + s) * ct, col + (3 * ns + s) * ct
        at_out = col + (4 * ns + (s if s < no else 0)) * ct
        row = (b * ns + s) * ct
        target, given = 0, False
        for c in range(ct):
            if cols[now + c]:
                target += cache[row + c]
                given = given or (provided[row + c] and not cols[prev + c])
        sampled = text[b] if s == 0 else (audio[b * na + (s - 1)] if s <= na else target)
        nxt = target if given else sampled
        read = 0
        for c in range(ct):
            v = nxt if cols[now + c] else cache[row + c]
            cache_out[row + c] = v
            provided_out[row + c] = provided[row + c] and not cols[prev + c]
            if cols[at_out + c]:
                read += v
        if s < no:
            out[b * no + s] = read
    return cache_out.reshape(cache3.shape), provided_out.reshape(cache3.shape), out.reshape(b_n, no)


def _mx(st: dict[str, np.ndarray], *names: str) -> list[mx.array]:
    return [mx.array(st[n]) for n in names]


@pytest.mark.parametrize(
    "offsets",
    [[1, 2, 3], [0, MAX_DELAY, MAX_DELAY + 1], [57, 58, 1000], [5]],
)
@pytest.mark.parametrize("shared_columns", [False, True])
@pytest.mark.parametrize(("dq", "na"), [(16, 8), (8, 16), (1, 1)])
def test_the_kernels_algorithm_gives_the_ring_ops(offsets, shared_columns, dq, na):
    rng = np.random.default_rng(sum(offsets) + shared_columns)
    st = _state(rng, len(offsets), offsets, na)
    if shared_columns:  # one offset for every row: cols [1, PACKED, CT]
        st["cols"] = np.asarray(R.pack(np, R.step_columns(np, offsets[0])))
        assert st["cols"].shape[0] == 1
    want = ring_cuda.reference_in(*_mx(st, "cache", "provided", "cols", "user", "initial"), dq)
    got = algorithm_in(st, dq)
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
@pytest.mark.parametrize(("dq", "na"), [(16, 8), (8, 16)])
def test_ring_kernels_on_cuda_equal_the_ring_ops(batch, dq, na):
    rng = np.random.default_rng(batch)
    cases = [[1] * batch, list(range(batch)), [int(o) for o in rng.integers(1, 3000, batch)]]
    for offsets, shared in [(o, False) for o in cases] + [(cases[2], True)]:
        st = _state(rng, batch, offsets, na)
        if shared:  # one set of columns for every row: cols [1, PACKED, CT]
            st["cols"] = np.asarray(R.pack(np, R.step_columns(np, offsets[0])))
        args = _mx(st, "cache", "provided", "cols", "user", "initial")
        assert ring_cuda.covers(args[0], args[1], args[2], dq)
        want, got = ring_cuda.reference_in(*args, dq), ring_cuda.ring_in(*args, dq)
        for w, g in zip(want, got, strict=True):
            assert w.dtype == g.dtype and np.array_equal(np.array(w), np.array(g))
        tail = [got[0], got[1], *_mx(st, "cols", "text", "audio")]
        for w, g in zip(ring_cuda.reference_out(*tail), ring_cuda.ring_out(*tail), strict=True):
            assert w.dtype == g.dtype and np.array_equal(np.array(w), np.array(g))


def test_the_kernels_cover_only_the_rings_they_are_written_for():
    rng = np.random.default_rng(0)
    st = _state(rng, 2, [3, 4])
    cache, provided, cols = _mx(st, "cache", "provided", "cols")
    assert ring_cuda.covers(cache, provided, cols, 16) and ring_cuda.covers(cache, provided, cols[:1], 16)
    assert not ring_cuda.covers(cache, provided.astype(mx.int32), cols, 16)
    assert not ring_cuda.covers(cache, provided, cols.astype(mx.int32), 16)
    assert not ring_cuda.covers(cache, provided, cols[:, :70], 16)
    assert not ring_cuda.covers(cache.astype(mx.int64), provided, cols, 16)
    assert not ring_cuda.covers(cache, provided, cols, 17) and not ring_cuda.covers(cache, provided, cols, 0)
