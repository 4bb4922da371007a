"""rolekit.lm.temporal_cuda: the temporal layers' step as one CUDA kernel.

The kernel runs only on CUDA (checked there against the op path by the `gpu`-marked test below).
Here: off CUDA nothing is packed; packing keeps every weight and the op path's output; the
kernel's contract (`reference`, fp32 MLX ops) gives the op path's hidden state and keys; the
generated source's stages. The engine through the contract: tests/engine/test_temporal_kernel.py."""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from rolekit.lm import temporal_cuda as tc
from rolekit.lm import temporal_source as ts
from rolekit.lm.config import tiny
from rolekit.lm.model import LM


def _lm(seed: int = 0, **kw) -> LM:
    mx.random.seed(seed)
    lm = LM(tiny(num_heads=1, **kw))  # head dim 64: a layout the kernel takes
    mx.eval(lm.parameters())
    return lm


def test_off_cuda_the_kernel_never_applies():
    lm = _lm()
    assert not tc.covers(lm, 1, mx.float32)  # not packed
    assert tc.pack(lm) is not None and tc.pack(lm) is lm._temporal_packed  # explicit, idempotent
    assert not tc.covers(lm, 1, mx.float32)  # no CUDA device here


def test_layouts_the_kernel_does_not_take_are_not_packed():
    lm = LM(tiny())  # head dim 16
    assert tc.pack(lm) is None


def test_packing_keeps_every_weight_and_the_op_path():
    lm = _lm(1)
    x = mx.random.normal((2, 3, lm.cfg.dim))
    before = {k: np.array(v) for k, v in tree_flatten(lm.transformer.parameters())}
    y0 = np.array(lm.transformer(x, lm.make_cache(2)))
    packed = tc.pack(lm)
    assert packed is not None and packed.mats["wq"].w.shape[0] == lm.cfg.num_layers * 3 * lm.cfg.dim
    after = {k: np.array(v) for k, v in tree_flatten(lm.transformer.parameters())}
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    np.testing.assert_allclose(np.array(lm.transformer(x, lm.make_cache(2))), y0, atol=1e-6)


@pytest.mark.parametrize("quant", [False, True])
def test_reference_is_the_op_path_step(quant):
    """Five steps after a 3-frame prefill of two rows, one left-padded: hidden and keys equal."""
    lm = _lm(2)
    if quant:
        import mlx.nn as nn

        nn.quantize(lm.transformer, group_size=64, bits=4)
        mx.eval(lm.parameters())
    tc.pack(lm)
    cfg = lm.cfg
    cache = lm.make_cache(2)
    cache.start = np.array([0, 2])
    lm.transformer(mx.random.normal((2, 3, cfg.dim)), cache)
    ref_rings = [dataclasses.replace(r) for r in cache.rings]
    for _ in range(5):
        x = mx.random.normal((2, cfg.dim))
        pos = cache.offset
        ks = [r.keys for r in ref_rings]
        vs = [r.values for r in ref_rings]
        start = mx.array(cache.start.astype(np.int32))
        length = min(cfg.context, 8 * (1 + pos // 8))
        hidden, new_kv, _ = tc.reference(
            lm, x, mx.array(pos, dtype=mx.int32), start, ks, vs, length, cfg.context
        )
        want = lm.transformer(x[:, None], cache)[:, 0]
        np.testing.assert_allclose(np.array(hidden), np.array(want), rtol=1e-4, atol=1e-4)
        b, h, _, hd = cache.rings[0].keys.shape
        slot = pos % cache.rings[0].capacity
        for i, ring in enumerate(cache.rings):
            np.testing.assert_allclose(
                np.array(new_kv[i, 0]), np.array(ring.keys[:, :, slot]).reshape(b, h * hd), atol=1e-5
            )
            np.testing.assert_allclose(
                np.array(new_kv[i, 1]), np.array(ring.values[:, :, slot]).reshape(b, h * hd), atol=1e-5
            )
        ref_rings = [
            r.write(*(new_kv[i, j].reshape(b, h, 1, hd) for j in (0, 1)), pos)
            for i, r in enumerate(ref_rings)
        ]


def test_source_has_a_stage_per_layer_step_and_the_prefetches():
    shape = (4096, 32, 11264, 32, 3000, 3000, 256, 4, 64)
    src = ts.source(shape, tuple((n, 4, 64) for n in tc.FAMILIES), 1e-8)
    assert src.count("grid_sync(bar, epoch);") == 5  # five stages in the layer loop body
    # gated linear_in two rows a warp by its gate, the other three by pairs of rows
    assert (
        src.count("rows_quant<") == 4
        and src.count(", WORDS_IN_FLIGHT, true>(") == 3
        and "rows_dense" not in src
    )
    assert "rows_quant<3 * D, D, B, false, NT, 4, 64, WORDS_IN_FLIGHT, true>(wq, wq_s, wq_b" in src
    # four families, weights + scales + biases, both halves of the three paired ones
    assert src.count("prefetch_l2<NT>(") == 7 * 3
    assert src.count("if constexpr (PREFETCH)") == 7 and "constexpr bool PREFETCH = true;" in src
    off = ts.source(
        shape, tuple((n, 4, 64) for n in tc.FAMILIES), 1e-8, ts.Tuning(prefetch=False, slot_passes=2)
    )
    assert "constexpr bool PREFETCH = false;" in off and "constexpr int SLOT_U = 2;" in off
    dense = ts.source(shape, tuple((n, 0, 0) for n in tc.FAMILIES), 1e-8)
    assert dense.count("rows_dense<") == 4 and dense.count(", NT, true>(") == 3 and "rows_quant" not in dense
    single = ts.source(shape, tuple((n, 4, 64) for n in tc.FAMILIES), 1e-8, ts.Tuning(pairs=False))
    assert single.count("rows_quant<") == 4 and ", true>(" not in single
    assert tc.split_plan(1, 32, 256, 132) == (4, 64)
    assert tc.split_plan(4, 32, 3000, 132) == (1, 3000)
    assert tc.split_plan(1, 32, 100, 132) == (2, 50)


def _packed(bits: int, group: int = 64, wd_bits: int | None = None) -> tc.Packed:
    from rolekit.nn.grid import Mat

    mats = {n: Mat(mx.zeros((1,)), None, None, bits, group) for n in tc.FAMILIES}
    if wd_bits is not None:
        mats["wd"] = Mat(mx.zeros((1,)), None, None, wd_bits, group)
    return tc.Packed(mats, mx.zeros((1,)), mx.zeros((1,)), 1e-8)


def test_weight_pipeline_plan(monkeypatch):
    """Rings in q4 / q8 of one group size, as many slots (up to `stages`) as the block's shared
    memory holds next to the stage input and the chunk sums; off for dense weights, mixed
    layouts, too little room or `stages=0`."""
    monkeypatch.setattr(tc, "shared_optin", lambda: 232448)  # an H100's opt-in block limit
    d, f = 4096, 11264
    plan = tc.pipeline(_packed(4), 1, d, f, mx.bfloat16, ts.Tuning())
    # 16 warps x 8 slots x (512 B of weights + 32 B of scales + 32 B of biases)
    assert plan == tc.Pipeline(8, 32, 352, 144, 4 * f + 4 * 352 + 16 * 8 * 144 * 4)
    four = tc.pipeline(_packed(4), 4, d, f, mx.bfloat16, ts.Tuning())
    assert four.stages == 3 and four.smem <= 232448 - tc._STATIC_SMEM  # the stage input takes 176 KB
    q8 = tc.pipeline(_packed(8), 1, d, f, mx.float32, ts.Tuning(threads=256))
    assert (q8.stages, q8.lane_values, q8.slot_words) == (8, 16, 128 + 2 * 8)  # 8 groups of fp32 scales
    for packed in (_packed(0, 0), _packed(4, wd_bits=8)):
        assert tc.pipeline(packed, 1, d, f, mx.bfloat16, ts.Tuning()).stages == 0
    assert tc.pipeline(_packed(4), 1, d, f, mx.bfloat16, ts.Tuning(stages=0)).stages == 0
    monkeypatch.setattr(tc, "shared_optin", lambda: None)  # no device: 48 KB
    off = tc.pipeline(_packed(4), 1, d, f, mx.bfloat16, ts.Tuning())
    assert off.stages == 0 and off.smem == 4 * f


def test_source_with_the_weight_pipeline():
    """Every quantized product through the rings, each stage input swizzled and summed by chunk."""
    shape = (4096, 32, 11264, 32, 3000, 3000, 256, 4, 64)
    plan = tc.Pipeline(8, 32, 352, 144, 0)
    src = ts.source(shape, tuple((n, 4, 64) for n in tc.FAMILIES), 1e-8, ts.Tuning(), plan)
    assert src.count("rows_async<") == 4 and "rows_quant" not in src
    assert "rows_async<F, D, B, true, NT, 4, 64, SLOTS>(wi, wi_s, wi_b" in src  # gated linear_in
    assert src.count("chunk_sums<") == 4  # after each of the four stage inputs
    assert "constexpr int SLOTS = 8;" in src and "constexpr bool SWZ = true;" in src
    assert "ring_combine_stage<B, D, H, HD, NSPLIT, NT, SWZ>" in src and "stage<F, B, NT, false, SWZ>" in src
    assert src.count("prefetch_l2<NT>(") == 4 * 3  # one wave of rows per family, no halves
    assert "constexpr int SUMS = 352;" in src  # the rings start after the chunk sums
    plain = ts.source(shape, tuple((n, 4, 64) for n in tc.FAMILIES), 1e-8)
    assert "constexpr int SLOTS = 0;" in plain and "constexpr bool SWZ = false;" in plain


def test_rope_table_rotates_as_mlx_rope():
    """cos / sin of the table applied to interleaved pairs give mx.fast.rope at each row's position."""
    pos, start = mx.array(37, dtype=mx.int32), mx.array([0, 5, 36], dtype=mx.int32)
    table = tc.rope_table(pos, start, 64, 10000.0)  # [3, 32, 2]
    x = mx.random.normal((3, 1, 1, 64))
    want = mx.fast.rope(x, 64, traditional=True, base=10000.0, scale=1.0, offset=pos - start)
    c, s = table[:, None, None, :, 0], table[:, None, None, :, 1]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    got = mx.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1).reshape(x.shape)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=2e-5)


def test_shared_memory_request_raises_mlx_limit_only_when_needed():
    from rolekit.nn import grid

    assert grid.shared_memory(4096, 16 * 1024) == 4096  # fits the default 48 KB with the static part
    assert grid.shared_memory(45056, 16 * 1024) == 48004  # one row of linear_out's input: raise it
    assert grid.shared_memory(4 * 45056, 16 * 1024) == 4 * 45056  # already above: MLX raises it


def test_temporal_check_through_the_kernel_contract(monkeypatch):
    """`check_temporal_kernel` on a tiny model with 64-wide heads, the kernel replaced by its
    contract: errors near zero against it, the fp32 op path close, a wrapped ring (context 16 <
    prefill + steps), and a second kernel shape on the same model."""
    from tests.lm import check_temporal_kernel as ct

    monkeypatch.setattr(tc, "launch", tc.reference)
    monkeypatch.setattr(tc, "covers", lambda lm, b, dtype: True)
    tune = "slot_passes=2/prefetch=0"
    res = ct.check_temporal_kernel(
        "tiny", quant="bf16", batch=2, steps=3, prefill=14, heads=1, context=16, tunes=tune
    )
    assert res["tunes"][tune]["ok"] and res["tunes"][tune]["positions"] == [17, 19]
    assert res["ran"] and res["ok"] and not res["timed_out"], res
    assert res["hidden_vs_ref"] == 0.0 and res["kv_vs_ref"] == 0.0
    assert res["hidden_vs_ops"] < 1e-4 and res["kv_vs_ops"] < 1e-4  # the tiny model is fp32
    assert res["positions"] == [14, 16] and set(res["stage_us"]) == set(ct.STAGES) == set(res["work_us"])


def test_temporal_check_across_a_ring_growth_through_the_contract(monkeypatch):
    """A growing ring (`LmCache.reserve`) of 16 slots after the prefill grows to 32 between the
    steps (positions 14..17): the kernel's contract over the smaller ring, then the larger one,
    equals the op path."""
    from tests.lm import check_temporal_kernel as ct

    monkeypatch.setattr(tc, "launch", tc.reference)
    monkeypatch.setattr(tc, "covers", lambda lm, b, dtype: True)
    res = ct.check_temporal_kernel(
        "tiny", quant="bf16", batch=2, steps=4, prefill=14, heads=1, context=40, ring_floor=4
    )
    assert res["ran"] and res["ok"] and res["positions"] == [14, 17], res
    assert res["hidden_vs_ops"] < 1e-4 and res["kv_vs_ops"] < 1e-4


@pytest.mark.gpu
def test_temporal_kernel_on_cuda_across_a_ring_growth():
    """Full size, q4, 2 rows: positions 254..257, the growing ring goes from 256 to 512 slots
    between kernel steps (the kernel's C is the buffer's): within 2e-3 of the contract, written in place."""
    from tests.lm.check_temporal_kernel import check_temporal_kernel

    res = check_temporal_kernel("full", quant="q4", batch=2, prefill=254, steps=4)
    assert res["ran"] and res["ok"] and res["rings_written"] and res["positions"] == [254, 257], res


@pytest.mark.gpu
@pytest.mark.parametrize("quant, batch", [("q4", 1), ("q4", 4), ("q8", 1), ("bf16", 2)])
def test_temporal_kernel_on_cuda_matches_its_contract(quant, batch):
    """Full size (the 7B shapes), a prefill of 100 positions, 4 kernel steps, plus the register path
    (stages=0) on the same model: hidden state and keys within 2e-3 of the fp32 contract, the rings
    written in place, no barrier timeout."""
    from tests.lm.check_temporal_kernel import check_temporal_kernel

    res = check_temporal_kernel("full", quant=quant, batch=batch, tunes="stages=0")
    assert res["ran"] and res["ok"] and res["rings_written"], res
    assert all(t.get("ok") for t in res["tunes"].values()), res["tunes"]
