"""rolekit.nn.embed_cuda: a step's summed token embeddings as one CUDA kernel.

The kernel runs only on CUDA (checked there for bit-equality with the MLX ops by
`bench/gpu_run.py embedcheck:`). Here: its contract (`reference`) is `LM.embed`'s op path, token
for token and rounding for rounding; when it applies; its generated source."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.lm.config import tiny
from rolekit.lm.model import LM
from rolekit.nn import embed_cuda as ec


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


def test_applies_only_on_cuda_to_one_float_table_per_stream():
    tables = [mx.zeros((10, 64), mx.bfloat16) for _ in range(3)]
    tokens = mx.zeros((1, 3, 1), mx.int32)
    assert not ec.applies(tables, tokens)  # this machine has no CUDA GPU
    assert not ec.enabled()


def test_applies_checks_the_layout(monkeypatch):
    monkeypatch.setattr(ec, "enabled", lambda: True)
    tables = [mx.zeros((10, 64), mx.bfloat16) for _ in range(3)]
    assert ec.applies(tables, mx.zeros((2, 3, 4), mx.int32))
    assert not ec.applies(tables, mx.zeros((2, 4, 4), mx.int32))  # a stream without a table
    assert not ec.applies([*tables[:2], mx.zeros((10, 64), mx.float32)], mx.zeros((1, 3, 1), mx.int32))
    assert not ec.applies([mx.zeros((10, 60), mx.bfloat16)] * 3, mx.zeros((1, 3, 1), mx.int32))
    assert not ec.applies([mx.zeros((10, 64), mx.uint32)] * 3, mx.zeros((1, 3, 1), mx.int32))


def test_source_sums_in_order_and_rounds_each_addition():
    src = ec._source(3, 64, (1, 2, 0))
    reads = [src.index(f"load8(t{s} + ") for s in (1, 2, 0)]
    assert reads == sorted(reads)  # streams in the given order
    assert src.count("acc[j] = e[j];") == 1  # the first lookup as stored
    assert src.count("static_cast<float>(static_cast<T>(acc[j] + e[j]))") == 2  # then rounded adds
    assert src.count("if (tok == -1)") == 3 and "tok > 0 ? tok : 0" in src


def test_gpu_check_runs_here_on_the_op_path():
    from rolekit.bench.embed import check_embed_kernel

    rows = check_embed_kernel("tiny", reps=1, batches="1", times="1+2")
    assert [(r["batch"], r["time"]) for r in rows] == [(1, 1), (1, 2)]
    assert all(r["ok"] and r["exact"] and not r["ran"] for r in rows)
