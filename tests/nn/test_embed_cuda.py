"""rolekit.nn.embed_cuda: a step's summed token embeddings as one CUDA kernel.

The kernel runs only on CUDA (checked there for bit-equality with the MLX ops by the `gpu`-marked
test below). Here: its contract (`reference`) is `LM.embed`'s op path, token
for token and rounding for rounding; when it applies; its generated source."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.lm.config import tiny
from rolekit.lm.model import LM
from rolekit.nn import embed_cuda as ec
from rolekit.nn.kernels import OPS, Kernels


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_reference_is_the_lm_embedding_sum(dtype):
    mx.random.seed(3)
    lm = LM(tiny())
    lm.set_dtype(dtype)
    mx.eval(lm.parameters())
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 16, size=(2, 17, 5)).astype(np.int32)
    tokens[rng.random(tokens.shape) < 0.3] = -1
    tokens[0, 3, 1] = -3  # any other negative id reads row 0, as `embed_tokens` clamps it
    tokens = mx.array(tokens)
    tables = [lm.text_emb.weight, *(e.weight for e in lm.emb)]
    got = ec.reference(tables, tokens, (*range(1, 17), 0))
    want = lm.embed(tokens)
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.array(got.astype(mx.float32)), np.array(want.astype(mx.float32)))


def test_covers_checks_the_layout():
    tables = [mx.zeros((10, 64), mx.bfloat16) for _ in range(3)]
    assert ec.covers(tables, mx.zeros((2, 3, 4), mx.int32))
    assert not ec.covers(tables, mx.zeros((2, 4, 4), mx.int32))  # a stream without a table
    assert not ec.covers([*tables[:2], mx.zeros((10, 64), mx.float32)], mx.zeros((1, 3, 1), mx.int32))
    assert not ec.covers([mx.zeros((10, 60), mx.bfloat16)] * 3, mx.zeros((1, 3, 1), mx.int32))
    assert not ec.covers([mx.zeros((10, 64), mx.uint32)] * 3, mx.zeros((1, 3, 1), mx.int32))


def test_lm_embed_runs_the_kernel_only_when_the_policy_asks(monkeypatch):
    from rolekit.nn.kernels import OPS, Kernels

    lm = LM(tiny())
    tokens = mx.zeros((1, 17, 2), mx.int32)
    calls = []
    monkeypatch.setattr(ec, "embed_sum", lambda *a: (calls.append(a[2]), ec.reference(*a))[1])
    want = lm.embed(tokens, OPS)
    got = lm.embed(tokens, Kernels(embed=True))
    assert calls == [(*range(1, 17), 0)]  # audio streams first, then text: the op path's order
    np.testing.assert_array_equal(np.array(got), np.array(want))


def test_source_names_the_order_and_the_tables():
    """The body (device/embed_sum.cu) sums the streams in ORDER over `tables`; the glue sets both."""
    src = ec._source(3, 64, (1, 2, 0))
    assert "constexpr int ORDER[S] = {1, 2, 0};" in src and "constexpr int S = 3;" in src
    assert "const T* const tables[S] = {t0, t1, t2};" in src
    assert src.endswith(ec._BODY)


def _tokens(rng: np.random.Generator, b: int, t: int, text_card: int, card: int) -> mx.array:
    """[B, 17, T]: text then 16 audio streams, random ids with about one in five -1 (no token)."""
    cards = np.array([text_card] + [card] * 16)[None, :, None]
    ids = (rng.random((b, 17, t)) * cards).astype(np.int32)
    ids[rng.random(ids.shape) < 0.2] = -1
    return mx.array(ids)


def check_embed_kernel(
    size: str, quant: str, batches=(1, 3), times=(1, 5), seed: int = 0, kernels: Kernels | None = None
) -> list[dict]:
    """`LM.embed` under `kernels` (default: this device's policy) against the op path, per (batch,
    time): `ran` (the kernel served the lookup), `exact` (bit for bit); `ok` = exact, and ran where
    the policy asks for the kernel."""
    from rolekit.randlm import build_lm, lm_config

    kernels = Kernels.for_device() if kernels is None else kernels
    lm = build_lm(lm_config(size), quant, seed)
    rng = np.random.default_rng(seed)
    tables = [lm.text_emb.weight, *(e.weight for e in lm.emb)]
    rows = []
    for b in batches:
        for t in times:
            tokens = _tokens(rng, b, t, lm.cfg.text_card, lm.cfg.card)
            ran = kernels.embed and ec.covers(tables, tokens)
            got, want = lm.embed(tokens, kernels), lm.embed(tokens, OPS)
            exact = bool(mx.array_equal(got, want).item())
            ok = exact and (ran or not kernels.embed)
            rows.append({"batch": b, "time": t, "ran": ran, "exact": exact, "ok": ok})
    return rows


def test_the_check_runs_here_on_the_op_path():
    rows = check_embed_kernel("tiny", "fp32", batches=(1,), times=(1, 2))
    assert [(r["batch"], r["time"]) for r in rows] == [(1, 1), (1, 2)]
    assert all(r["ok"] and r["exact"] and not r["ran"] for r in rows)


@pytest.mark.gpu
def test_embed_kernel_on_cuda_is_the_op_path_bit_for_bit():
    rows = check_embed_kernel("full", "q4")
    assert all(r["ran"] and r["ok"] for r in rows), rows
