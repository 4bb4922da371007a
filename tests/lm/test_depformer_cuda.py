"""rolekit.lm.depformer_cuda: the depformer frame as one CUDA kernel.

The kernel runs only on CUDA (checked there against the op path by the `gpu`-marked test below).
Here: packing keeps every weight's values (modules become views of the stacks); a float32 model
of the kernel's contract (`dep_kernel_model`, reading the inputs by name as the CUDA source does)
gives the op path's tokens, greedy and sampled, dense and q4, batch 1 and 3; the noise is the op
path's; the rules for when the kernel applies; the radix select's bin search."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from rolekit.lm import depformer_cuda as dc
from rolekit.lm import depformer_source as ds
from rolekit.lm.config import tiny
from rolekit.lm.model import LM
from rolekit.lm.sampling import SamplingParams, _row_gumbel, split_keys
from rolekit.nn.kernels import Kernels

KERNEL = Kernels(depformer=True)  # with the `dep_kernel_model` stand-in


def _lm(quant: bool, seed: int = 0) -> LM:
    mx.random.seed(seed)
    lm = LM(tiny(depformer_num_heads=2))
    if quant:
        nn.quantize(
            lm,
            group_size=64,
            bits=4,
            class_predicate=lambda path, m: (
                path.startswith(("depformer.", "depformer_in."))
                and hasattr(m, "to_quantized")
                and not isinstance(m, nn.Embedding)
            ),
        )
    mx.eval(lm.parameters())
    return lm


def _inputs(lm: LM, b: int, steps: int, seed: int):
    cfg = lm.cfg
    rng = np.random.default_rng(seed)
    hidden = mx.array(rng.standard_normal((b, cfg.dim)).astype(np.float32))
    text = mx.array(rng.integers(0, cfg.text_card, b).astype(np.int32))
    provided = np.full((b, cfg.dep_q), -1, np.int32)
    provided[:, steps:] = rng.integers(0, cfg.card, (b, cfg.dep_q - steps))
    provided[0, 1] = 5  # a given token inside the run steps: taken as given, fed to the next step
    keys = mx.stack([mx.random.key(seed * 10 + i) for i in range(b)])
    return hidden, text, mx.array(provided), keys


def test_off_cuda_the_kernel_never_applies(monkeypatch):
    lm = _lm(False)
    hidden, text, provided, keys = _inputs(lm, 1, 8, 1)
    monkeypatch.setattr(dc, "_dims_ok", lambda cfg: True)
    assert dc.pack(lm) is not None  # packing is explicit and runs anywhere
    assert not dc.covers(lm, hidden, SamplingParams(), keys, 8)  # no CUDA device here


@pytest.mark.parametrize("quant", [False, True])
def test_packing_keeps_every_weight_and_the_op_path(quant, monkeypatch):
    lm = _lm(quant)
    hidden, text, provided, keys = _inputs(lm, 2, 8, 2)
    params = SamplingParams()
    before = lm.depformer(hidden, text, provided, params, keys, 8)
    flat = dict(nn.utils.tree_flatten(lm.parameters()))
    monkeypatch.setattr(dc, "_dims_ok", lambda cfg: True)
    packed = dc.pack(lm)
    assert packed is not None and lm._dep_packed is packed
    after = dict(nn.utils.tree_flatten(lm.parameters()))
    assert after.keys() == flat.keys()
    for name, value in flat.items():
        assert mx.array_equal(after[name], value).item(), name
    cfg = lm.cfg
    assert packed.head.w.shape == (cfg.dep_q * cfg.card, cfg.depformer_dim)
    assert packed.emb_audio.shape == ((cfg.dep_q - 1) * (cfg.card + 1), cfg.depformer_dim)
    n1, qkv, out, n2, lin_in, lin_out = packed.layers[1]
    assert lin_in.w.shape[0] == cfg.dep_q * 2 * cfg.depformer_hidden
    assert (lin_in.bits, packed.dep_in.bits, packed.head.bits) == ((4, 4, 0) if quant else (0, 0, 0))
    assert mx.array_equal(lm.depformer(hidden, text, provided, params, keys, 8), before).item()


@pytest.mark.parametrize("quant", [False, True])
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("greedy", [True, False])
def test_the_kernel_contract_gives_the_op_path_tokens(quant, b, greedy, dep_kernel_model, monkeypatch):
    lm = _lm(quant, seed=3)
    steps = 8
    hidden, text, provided, keys = _inputs(lm, b, steps, 4 + b)
    params = SamplingParams(greedy=greedy, audio_top_k=20 if not greedy else 250)
    dc.pack(lm)
    assert dc.covers(lm, hidden, params, keys, steps)
    got = lm.depformer(hidden, text, provided, params, keys, steps, KERNEL)
    assert dep_kernel_model == [{"T": mx.float32, "B": b, "NS": steps, "GREEDY": greedy}]
    want = lm.depformer(hidden, text, provided, params, keys, steps)
    assert got.shape == want.shape == (b, lm.cfg.dep_q)
    np.testing.assert_array_equal(np.array(got), np.array(want))
    assert int(got[0, 1]) == 5  # the given token


def test_per_row_temperatures_and_top_k(dep_kernel_model, monkeypatch):
    """Rows with temperature 0 take the argmax; top_k 0 keeps all: the op path's per-row rules."""
    lm = _lm(False, seed=5)
    hidden, text, provided, keys = _inputs(lm, 3, 6, 9)
    params = SamplingParams(audio_temperature=mx.array([0.0, 0.9, 1.3]), audio_top_k=mx.array([5, 0, 3]))
    dc.pack(lm)
    got = lm.depformer(hidden, text, provided, params, keys, 6, KERNEL)
    assert dep_kernel_model
    np.testing.assert_array_equal(
        np.array(got), np.array(lm.depformer(hidden, text, provided, params, keys, 6))
    )


def test_the_kernel_noise_is_the_op_path_noise():
    key = mx.stack([mx.random.key(3), mx.random.key(4)])
    noise = dc.step_noise(key, 5, 64)  # [B, steps, card]
    for k, step_key in enumerate(split_keys(key, 5)):
        assert mx.array_equal(noise[:, k], _row_gumbel(step_key, 64)).item()


def test_when_the_kernel_applies(dep_kernel_model):
    lm = _lm(False)
    hidden, text, provided, keys = _inputs(lm, 1, 8, 1)
    assert not dc.covers(lm, hidden, SamplingParams(), keys, 8)  # not packed yet
    dc.pack(lm)
    assert dc.covers(lm, hidden, SamplingParams(), keys, 8)
    assert dc.covers(lm, hidden, SamplingParams(greedy=True), None, 16)
    assert not dc.covers(lm, hidden, SamplingParams(), None, 8)  # global RNG: categorical
    assert not dc.covers(lm, hidden, SamplingParams(), mx.random.key(1), 8)  # one key
    big = mx.zeros((dc.MAX_ROWS + 1, lm.cfg.dim))
    assert not dc.covers(lm, big, SamplingParams(greedy=True), None, 8)
    assert not dc.covers(lm, hidden, SamplingParams(greedy=True), None, lm.cfg.dep_q + 1)


def test_kernel_sources_differ_by_layout_and_name_their_variant():
    shape = (4096, 1024, 16, 2816, 2048, 6)
    mats = ["win", "head"] + [f"{p}{i}" for i in range(6) for p in ("qkv", "o", "gi", "go")]
    dense = ds.source(shape, tuple((m, 0, 0) for m in mats), 1e-8)
    q4 = ds.source(shape, tuple((m, *((0, 0) if m == "head" else (4, 64))) for m in mats), 1e-8)
    assert dense != q4
    assert "rows_quant<3 * DD, DD, B, false, NT, 4, 64, 8>(qkv5, qkv5_s, qkv5_b" in q4
    assert "head_s" not in q4 and "rows_dense<CARD, DD, B, false, NT>(head" in q4
    assert dense.count("grid_sync(bar, epoch);") == 2 + 4 * 6  # per step: input, 4 per layer, head
    assert dense.count("block_attention<") == 6 and "step_attention" not in dense
    # the rows' sampling settings are read once into shared memory, not once a step
    assert "temp_s[threadIdx.x] = temp[threadIdx.x];" in dense and "temp[b]" not in dense
    assert "constexpr int NT = 256;" in dense and "constexpr int NT = 512;" in ds.source(
        shape, tuple((m, 0, 0) for m in mats), 1e-8, 512
    )


def test_block_size_comes_from_the_policy(dep_kernel_model, monkeypatch):
    from rolekit.nn.kernels import Kernels

    seen = []
    real = dc._kernel
    monkeypatch.setattr(dc, "_kernel", lambda *a: (seen.append(a[-1]), real(*a))[1])
    lm = _lm(False)
    dc.pack(lm)
    hidden, text, provided, keys = _inputs(lm, 1, 8, 1)
    lm.depformer(hidden, text, provided, SamplingParams(), keys, 8, KERNEL)
    lm.depformer(
        hidden, text, provided, SamplingParams(), keys, 8, Kernels(depformer=True, depformer_threads=512)
    )
    assert seen == [dc.THREADS, 512]


def _radix_kth(values: np.ndarray, k: int) -> float:
    """The kernel's kth_largest, step for step: 8-bit passes from the top over order keys, the bin
    found by 32 lanes of 8 bins each (descending) and an inclusive scan."""
    u = values.astype(np.float32).view(np.uint32)
    keys = np.where(u & 0x80000000, ~u, u | 0x80000000).astype(np.uint32)
    prefix, mask = 0, 0
    for shift in (24, 16, 8, 0):
        sel = keys[(keys & mask) == prefix]
        hist = np.bincount((sel >> shift) & 255, minlength=256)
        lanes = np.array([[hist[255 - 8 * lane - j] for j in range(8)] for lane in range(32)])
        incl = np.cumsum(lanes.sum(axis=1))
        lane = int(np.nonzero((incl - lanes.sum(axis=1) < k) & (k <= incl))[0][0])
        run = incl[lane] - lanes[lane].sum()
        for j in range(8):
            if run + lanes[lane, j] >= k:
                prefix |= (255 - 8 * lane - j) << shift
                k -= int(run)
                break
            run += lanes[lane, j]
        mask |= 255 << shift
    u = np.uint32(prefix)
    return float(np.array([u & 0x7FFFFFFF if u & 0x80000000 else ~u], np.uint32).view(np.float32)[0])


@pytest.mark.parametrize("seed", range(6))
def test_radix_select_finds_the_kth_largest(seed):
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(2048) * 4).astype(np.float32)
    values[:300] = np.round(values[:300])  # ties, negatives, zeros
    for k in (1, 2, 25, 250, 2047, 2048):
        assert _radix_kth(values, k) == np.sort(values)[::-1][k - 1]


def test_the_gpu_check_passes_on_the_kernel_contract(dep_kernel_model):
    """`check_depformer_kernel` (the `gpu` test below) with the contract in place of the kernel: it
    runs, reads the logits out of the scratch, and every case is ok."""
    from tests.lm.check_depformer_kernel import check_depformer_kernel

    rows = check_depformer_kernel("tiny", quants=("fp32", "q4"), batches=(1, 2))
    assert len(rows) == 8 and all(r["ran"] and r["ok"] for r in rows), rows
    assert all(r["op_agreement"] == 1.0 for r in rows if r["greedy"])
    assert max(r["logit_rel_err"] for r in rows) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("threads", [dc.THREADS, 512])
def test_depformer_kernel_on_cuda_matches_the_op_path(threads):
    """Full size, bf16 / q4 / q8, batches 1 and 3, greedy and sampled (see check_depformer_kernel)."""
    from tests.lm.check_depformer_kernel import check_depformer_kernel

    rows = check_depformer_kernel("full", threads=threads)
    assert all(r["ran"] and r["ok"] for r in rows), rows
