"""Ring attention before the wrap (rolekit.nn.ring_attention): on CPU the MLX fallback against a
plain numpy masked softmax over a simulated ring, the CUDA switch, and the kernels' launch plan and
source rules; on a CUDA GPU (`gpu` marker) the kernels against the same numpy reference."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from rolekit.nn import ring_attention as ra
from rolekit.nn.attention import padded_mask, ring_positions


def simulated_visible(pos: int, start: list[int], cap: int, context: int, length: int) -> np.ndarray:
    """[B, length] bool from writing positions 0 .. pos into a ring of `cap` slots one by one."""
    held = np.full(cap, -1)
    for p in range(pos + 1):
        held[p % cap] = p
    out = np.zeros((len(start), length), dtype=bool)
    for b, s in enumerate(start):
        for j in range(length):
            h = held[j]
            out[b, j] = (h >= 0 and h >= s and pos - h < context) or (pos < s and j == pos % cap)
    return out


def numpy_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, visible: np.ndarray, scale: float
) -> np.ndarray:
    """q [B, H, 1, D], k / v [B, H, L, D], visible [B, L] -> [B, H, 1, D], loops over rows and heads."""
    b_n, h_n, _, d = q.shape
    out = np.zeros((b_n, h_n, 1, d))
    for b in range(b_n):
        idx = np.nonzero(visible[b])[0]
        for h in range(h_n):
            s = (k[b, h, idx].astype(np.float64) @ q[b, h, 0].astype(np.float64)) * scale
            w = np.exp(s - s.max())
            w /= w.sum()
            out[b, h, 0] = w @ v[b, h, idx].astype(np.float64)
    return out


CASES = [
    # name, start, cap, pos, context, length
    ("first-step", [0], 64, 0, 64, 16),
    ("early", [0], 64, 3, 64, 16),
    ("prefix", [0], 64, 20, 64, 32),
    ("full-ring-unwrapped", [0], 64, 63, 64, 64),
    ("padded-row-in-padding", [0, 5], 64, 3, 64, 16),
    ("padded-row-started", [0, 5], 64, 12, 64, 16),
    ("wrapped-context-below-cap", [0, 3], 32, 50, 20, 32),
    ("wrapped-padding-inside", [0, 40], 32, 50, 20, 32),
    ("wrapped-padding-inside-full-context", [0, 40], 32, 50, 32, 32),
    ("growing-ring-below-context", [0, 5], 32, 20, 3000, 32),  # `LmCache.reserve`: C < context
    ("growing-full-ring-unwrapped", [0], 32, 31, 3000, 32),
]


@pytest.mark.parametrize("name,start,cap,pos,context,length", CASES, ids=[c[0] for c in CASES])
def test_fallback_matches_numpy_reference(name, start, cap, pos, context, length):
    rng = np.random.default_rng(len(name))
    batch, heads, dim = len(start), 3, 16
    scale = dim**-0.5
    q = rng.standard_normal((batch, heads, 1, dim), dtype=np.float32)
    k = np.full((batch, heads, cap, dim), np.nan, dtype=np.float32)  # slots past `length`: never read
    v = np.full((batch, heads, cap, dim), np.nan, dtype=np.float32)
    k[:, :, :length] = rng.standard_normal((batch, heads, length, dim), dtype=np.float32)
    v[:, :, :length] = rng.standard_normal((batch, heads, length, dim), dtype=np.float32)
    visible = simulated_visible(pos, start, cap, context, length)
    assert visible.any(axis=1).all()
    start_mx = mx.array(np.asarray(start, dtype=np.int32))
    for p in (mx.array(pos, dtype=mx.int32), pos):  # device scalar or Python int
        out = ra.masked_step_attention(
            mx.array(q), mx.array(k), mx.array(v), p, start_mx, context, length, scale
        )
        assert out.shape == (batch, heads, 1, dim) and out.dtype == mx.float32
        want = numpy_attention(q, k[:, :, :length], v[:, :, :length], visible, scale)
        np.testing.assert_allclose(np.array(out), want, rtol=2e-5, atol=2e-6)


def test_mask_rule_is_not_trivial():
    """The cases above hide something (but the full unwrapped ring): an all-visible mask would not
    test the rule."""
    for name, start, cap, pos, ctx, ln in CASES:
        all_visible = simulated_visible(pos, start, cap, ctx, ln).all()
        assert all_visible == name.endswith("full-ring-unwrapped"), name
    # the reference notices a wrong mask: all slots visible gives another answer
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s) for s in ((1, 1, 1, 8), (1, 1, 16, 8), (1, 1, 16, 8)))
    vis = simulated_visible(3, [0], 64, 64, 16)
    assert not np.allclose(
        numpy_attention(q, k, v, vis, 0.3), numpy_attention(q, k, v, np.ones_like(vis), 0.3)
    )


@pytest.mark.parametrize("pos", [0, 4, 37, 63, 64, 100, 1000])
@pytest.mark.parametrize("context", [16, 64])
def test_step_mask_is_the_whole_sequence_rule(pos, context):
    """The device mask of one step equals the host rule of the whole-sequence attention
    (`padded_mask` over the ring's positions) and a simulated ring."""
    cap, length = 64, 64
    start_np = np.array([0, 5, 70], dtype=np.int32)
    start = mx.array(start_np)
    pos_mx = mx.array(pos, dtype=mx.int32)
    k_pos = ring_positions(pos + 1, cap)[:length]
    want = padded_mask(np.array([pos]), k_pos, context, start_np)  # [B, 1, 1, length]
    got = np.array(ra.step_mask(pos_mx, start, cap, context, length))
    np.testing.assert_array_equal(got, want)
    sim = simulated_visible(pos, [0, 5, 70], cap, context, length)
    np.testing.assert_array_equal(got[:, 0, 0, :], sim)


def test_without_use_kernel_a_covered_shape_runs_mlx_masked_sdpa(monkeypatch):
    q = mx.random.normal((1, 2, 1, 128)).astype(mx.bfloat16)
    kv = mx.random.normal((1, 2, 256, 128)).astype(mx.bfloat16)
    assert ra.covers(q, kv, kv, 256, 256)  # the shape itself is one the kernel takes
    monkeypatch.setattr(ra, "_kernel_attention", lambda *a: pytest.fail("kernel launched"))
    start = mx.zeros((1,), mx.int32)
    out = ra.masked_step_attention(q, kv, kv, 300, start, 256, 256, 128**-0.5)
    assert out.shape == (1, 2, 1, 128)


def test_kernel_coverage_rules():
    def arrays(b=1, h=2, t=1, c=256, d=128, dt=mx.bfloat16, kdt=None):
        q = mx.zeros((b, h, t, d), dtype=dt)
        kv = mx.zeros((b, h, c, d), dtype=kdt or dt)
        return q, kv, kv

    assert ra.covers(*arrays(), 256, 3000)
    assert ra.covers(*arrays(d=64, dt=mx.float32), 100, 1)
    assert ra.covers(*arrays(dt=mx.float16), 1, 5)
    assert not ra.covers(*arrays(d=96), 256, 256)  # head dim
    assert not ra.covers(*arrays(t=2), 256, 256)  # one query position only
    assert not ra.covers(*arrays(), 257, 256)  # length > C
    assert not ra.covers(*arrays(), 0, 256)
    assert not ra.covers(*arrays(), 256, 0)  # no context
    assert not ra.covers(*arrays(kdt=mx.float32), 256, 256)  # mixed dtypes
    assert not ra.covers(*arrays(dt=mx.int32), 256, 256)


@pytest.mark.parametrize("rows", [1, 4, 8, 32, 64, 256])
@pytest.mark.parametrize("length", [1, 100, 256, 512, 1024, 2048, 3000, 4096])
def test_split_plan(rows, length):
    chunk, splits = ra.split_plan(rows, length)
    assert chunk in ra.CHUNKS
    assert (splits - 1) * chunk < length <= splits * chunk  # every slot in exactly one split
    for hd in ra.HEAD_DIMS:  # the partial kernel's static_assert: SW % (SPW * U) == 0
        slots_per_pass = 32 // (hd // 8)
        assert (chunk // ra.NW) % (slots_per_pass * ra._U) == 0
        assert ra.NW * 32 >= hd
    if chunk != ra.CHUNKS[-1]:
        assert rows * splits >= ra.MIN_BLOCKS
    if chunk != ra.CHUNKS[0]:  # a longer chunk would have given too few blocks
        longer = ra.CHUNKS[ra.CHUNKS.index(chunk) - 1]
        assert rows * -(-length // longer) < ra.MIN_BLOCKS


def test_kernel_sources():
    """MLX adds shape/stride arguments for any `<input>_shape|_strides|_ndim` in a body: none wanted.
    The scale goes into the source, and the kernel name changes with the source (MLX's disk cache
    is keyed by name and template arguments only)."""
    bodies = {
        ("q", "kb", "vb", "pos", "start"): ra.partial_source(128**-0.5),
        ("pm", "pl", "po"): ra.combine_source(),
    }
    for names, body in bodies.items():
        for n in names:
            for suffix in ("_shape", "_strides", "_ndim"):
                assert n + suffix not in body
        assert "inf" not in body.replace("__int_as_float", "").split()  # MLX #defines `inf`
    a, b = ra.partial_source(128**-0.5), ra.partial_source(64**-0.5)
    assert a != b and f"{128**-0.5 * ra._LOG2E!r}f" in a


# name, start, heads, ring slots C, pos, context, attended length: the kernels' head dim (128), the
# lengths the compiled step attends (powers of two >= 256 before the wrap, C after it)
GPU_CASES = [
    (f"B{len(start)}-H4-C{cap}-pos{pos}", start, 4, cap, pos, cap, length)
    for cap, steps in (
        (512, ((0, 256), (5, 256), (300, 512))),
        (4096, ((0, 256), (5, 256), (300, 512), (3000, 4096))),
    )
    for start in ([0], [0, 37])
    for pos, length in steps
] + [
    ("B2-H32-C4096-pos300", [0, 37], 32, 4096, 300, 4096, 512),
    ("B1-H32-C4096-pos3000", [0], 32, 4096, 3000, 4096, 4096),
    ("wrapped-B2-H4-C512-ctx400-pos700", [0, 37], 4, 512, 700, 400, 512),
    ("wrapped-padded-B2-H4-C512-ctx400-pos700", [0, 650], 4, 512, 700, 400, 512),
    # a growing ring (`LmCache.reserve`) smaller than the context, before it is grown again
    ("growing-B2-H32-C512-ctx3000-pos500", [0, 37], 32, 512, 500, 3000, 512),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(mx.bfloat16, 1e-2), (mx.float32, 1e-4)], ids=["bf16", "fp32"])
@pytest.mark.parametrize("name,start,heads,cap,pos,context,length", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_ring_attention_kernels_on_cuda_match_numpy(
    name, start, heads, cap, pos, context, length, dtype, tol
):
    """The two CUDA kernels, before the wrap and wrapped, padded rows: within 1e-2 (bf16) / 1e-4
    (fp32), relative, of the numpy reference over the dtype-rounded inputs. Ring slots past
    `length` hold NaN: a kernel reading them fails."""
    from rolekit.nn.kernels import Kernels

    rng = np.random.default_rng(len(name))
    batch, dim = len(start), 128
    q_np = rng.standard_normal((batch, heads, 1, dim), dtype=np.float32)
    rings = [np.full((batch, heads, cap, dim), np.nan, dtype=np.float32) for _ in range(2)]
    for ring in rings:
        ring[:, :, :length] = rng.standard_normal((batch, heads, length, dim), dtype=np.float32)
    q, k, v = (mx.array(a).astype(dtype) for a in (q_np, *rings))
    assert Kernels.for_device().ring_attention and ra.covers(q, k, v, length, context)
    start_mx = mx.array(np.asarray(start, dtype=np.int32))
    pos_mx = mx.array(pos, dtype=mx.int32)
    out = ra.masked_step_attention(q, k, v, pos_mx, start_mx, context, length, dim**-0.5, use_kernel=True)
    assert out.shape == (batch, heads, 1, dim) and out.dtype == dtype
    got = np.array(out.astype(mx.float32)).astype(np.float64)
    rounded = [np.array(a.astype(mx.float32)) for a in (q, k[:, :, :length], v[:, :, :length])]
    want = numpy_attention(*rounded, simulated_visible(pos, start, cap, context, length), dim**-0.5)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert np.isfinite(got).all() and err < tol, err
