"""One-position ("decode") attention over the temporal transformer's ring KV cache before the ring
wraps, as two CUDA kernels instead of MLX's masked path.

Why: on a CUDA GPU the batch-1 `Engine.step` is bound by the host (each MLX op costs host time to
launch). Before the wrap, the compiled step attends a power-of-two prefix of
the ring through a bool mask built on the device from the position and each row's left padding;
per layer that is the mask's share plus the prefix slices and MLX's masked SDPA, about 5 launches,
x 32 layers every 80 ms frame. Here the visibility rule is evaluated inside the attention kernel,
so a layer takes exactly 2 launches and no mask is built at all.

Layout: q [B, H, 1, Dh] (already rotated), k_buf / v_buf [B, H, C, Dh] (ring: slot j holds the
newest position p written so far with p % C == j), pos an int32 device scalar (the current
position, already written into the ring), start [B] int32 (row b's left padding). Only slots
0 .. length - 1 are read (length <= C). Slot j is visible for row b exactly as in
`step_mask`: held = pos - ((pos - j + C) % C); visible = (held >= start[b]) &
(pos - held < context), or own = (pos < start[b]) & (j == pos % C) (a padding row sees itself).

Kernels (split-K "flash decoding", softmax and accumulation in fp32):
1. `partial`: one block of NW warps per (b * H + h, split); a split is CHUNK consecutive slots.
   Each warp takes CHUNK / NW slots; a slot is read by LPS = Dh / 8 lanes (8 values each, one
   16-byte load per lane for 16-bit types), so a warp reads 32 / LPS slots per pass and keeps U
   passes of K and V loads in flight. Invisible slots are skipped (never loaded). Each lane group
   keeps an online softmax (running max, sum of exp, weighted V sum); groups merge through
   shuffles, warps through shared memory. Outputs per (row-head, split): max m (log2 domain, -inf
   when the split saw no visible slot), sum l (0 then) and the unnormalized V sum [Dh] (fp32).
2. `combine`: one block of Dh threads per row-head: out = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s
   over the splits with m_s > -inf (M their max), cast to q's dtype.

Scores are scaled by scale * log2(e) once (q is pre-multiplied), so exp is `exp2f`.

Elsewhere (CPU, `Kernels.ring_attention` off, Dh not 64/128, other dtypes) `masked_step_attention` is the
MLX path: the [B, 1, 1, length] bool mask (`step_mask`) and
`mx.fast.scaled_dot_product_attention` over the ring prefix.

Kernel names carry a hash of their source, so the two kernels are told apart at a glance in a
profile of an edited build (MLX's own on-disk PTX cache is keyed by a hash of the whole source).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import mlx.core as mx

from rolekit.nn.cuda import build_kernel
from rolekit.nn.cuda_text import device_code

HEAD_DIMS = (64, 128)
DTYPES = (mx.bfloat16, mx.float16, mx.float32)
NW = 4  # warps per block of the partial kernel
CHUNKS = (256, 128, 64)  # slots per split, largest first; must be multiples of NW * 32 / (Dh / 8) * U
MIN_BLOCKS = 256  # shorter chunks until the partial kernel has this many blocks (a few per SM)
_LOG2E = 1.4426950408889634

# Template constants: T (dtype of q / k_buf / v_buf), NH (heads), CAP (ring slots C), HD (Dh),
# LEN (attended slots), CHUNK (slots per split), NSPLIT (splits = ceil(LEN / CHUNK)), CTX
# (context, clamped to C). QSCALE (scale * log2 e), NW and U are written into the source.
# Inputs: q [B*H, Dh], kb / vb [B, H, C, Dh], pos [] int32, start [B] int32.
# Outputs: pm, pl [B*H*NSPLIT] fp32, po [B*H*NSPLIT, Dh] fp32.
_PARTIAL = device_code("rolekit.nn", "ring_attention_partial.cu")

# Template constants: T (output dtype), NSPLIT, HD. Inputs pm, pl [B*H*NSPLIT], po [B*H*NSPLIT, HD]
# (fp32); output out [B*H, HD]. One block of HD threads per row-head, a thread per dim.
_COMBINE = device_code("rolekit.nn", "ring_attention_combine.cu")

_U = 4  # passes of loads in flight per warp


def partial_source(scale: float) -> str:
    """The partial kernel's body for one softmax scale (written into the source as a constant)."""
    head = f"  constexpr float QSCALE = {float(scale) * _LOG2E!r}f;\n  constexpr int NW = {NW};\n  constexpr int U = {_U};\n"
    return head + _PARTIAL


def combine_source() -> str:
    return _COMBINE


@lru_cache(maxsize=8)
def _partial_kernel(scale: float) -> Any:
    source = partial_source(scale)
    return build_kernel("ring_attn_partial", ["q", "kb", "vb", "pos", "start"], ["pm", "pl", "po"], source)


@lru_cache(maxsize=1)
def _combine_kernel() -> Any:
    source = combine_source()
    return build_kernel("ring_attn_combine", ["pm", "pl", "po"], ["out"], source)


def covers(q: mx.array, k_buf: mx.array, v_buf: mx.array, length: int, context: int) -> bool:
    """Shapes and dtypes the kernels are written for (else MLX's masked SDPA runs)."""
    if q.ndim != 4 or k_buf.ndim != 4 or k_buf.shape != v_buf.shape:
        return False
    b, h, t, hd = q.shape
    return (
        t == 1
        and hd in HEAD_DIMS
        and k_buf.shape[0] == b
        and k_buf.shape[1] == h
        and k_buf.shape[3] == hd
        and 1 <= length <= k_buf.shape[2]
        and context >= 1
        and q.dtype in DTYPES
        and k_buf.dtype == q.dtype
        and v_buf.dtype == q.dtype
    )


def split_plan(rows: int, length: int) -> tuple[int, int]:
    """(CHUNK, NSPLIT) for `rows` = B * H row-heads: the longest chunk that still gives the partial
    kernel MIN_BLOCKS blocks (down to the shortest chunk)."""
    for chunk in CHUNKS:
        splits = -(-length // chunk)
        if rows * splits >= MIN_BLOCKS or chunk == CHUNKS[-1]:
            return chunk, splits
    raise AssertionError("unreachable")


def step_mask(pos: mx.array | int, start: mx.array, cap: int, context: int, length: int) -> mx.array:
    """[B, 1, 1, length] bool: ring slot visible after writing `pos` (the rule of the
    whole-sequence `nn.attention.padded_mask`, from device values)."""
    slots = mx.arange(length, dtype=mx.int32)  # [L]
    held = pos - (pos - slots + cap) % cap  # [L] newest position in each slot (< 0: never written)
    visible = (held[None, :] >= start[:, None]) & (pos - held < context)[None, :]  # [B, L]
    own = (pos < start)[:, None] & (slots == pos % cap)[None, :]  # padding sees only itself
    return (visible | own)[:, None, None, :]


def _kernel_attention(
    q: mx.array,
    k_buf: mx.array,
    v_buf: mx.array,
    pos: mx.array,
    start: mx.array,
    context: int,
    length: int,
    scale: float,
) -> mx.array:
    b, h, _, hd = q.shape
    cap = k_buf.shape[2]
    rows = b * h
    chunk, splits = split_plan(rows, length)
    threads = NW * 32
    pm, pl, po = _partial_kernel(float(scale))(
        inputs=[q.reshape(rows, hd), k_buf, v_buf, pos, start],
        template=[
            ("T", q.dtype),
            ("NH", h),
            ("CAP", cap),
            ("HD", hd),
            ("LEN", length),
            ("CHUNK", chunk),
            ("NSPLIT", splits),
            ("CTX", min(context, cap)),  # pos - held < C always holds
        ],
        grid=(rows * splits * threads, 1, 1),
        threadgroup=(threads, 1, 1),
        output_shapes=[(rows * splits,), (rows * splits,), (rows * splits, hd)],
        output_dtypes=[mx.float32, mx.float32, mx.float32],
    )
    (out,) = _combine_kernel()(
        inputs=[pm, pl, po],
        template=[("T", q.dtype), ("NSPLIT", splits), ("HD", hd)],
        grid=(rows * hd, 1, 1),
        threadgroup=(hd, 1, 1),
        output_shapes=[(rows, hd)],
        output_dtypes=[q.dtype],
    )
    return out.reshape(b, h, 1, hd)


def masked_step_attention(
    q: mx.array,
    k_buf: mx.array,
    v_buf: mx.array,
    pos: mx.array | int,
    start: mx.array,
    context: int,
    length: int,
    scale: float,
    use_kernel: bool = False,
) -> mx.array:
    """Attention of q [B, H, 1, Dh] over ring slots 0 .. length - 1 of k_buf / v_buf [B, H, C, Dh]
    visible after writing position `pos` (int32 device scalar) with left padding start [B] int32
    -> [B, H, 1, Dh] in q's dtype. Two CUDA kernels with `use_kernel` (`Kernels.ring_attention`,
    CUDA only) where `covers` holds, else MLX's masked SDPA."""
    if not isinstance(pos, mx.array):
        pos = mx.array(pos, dtype=mx.int32)
    if use_kernel and covers(q, k_buf, v_buf, length, context):
        if pos.dtype != mx.int32:
            pos = pos.astype(mx.int32)
        if start.dtype != mx.int32:
            start = start.astype(mx.int32)
        return _kernel_attention(q, k_buf, v_buf, pos, start, context, length, scale)
    cap = k_buf.shape[2]
    mask = step_mask(pos, start, cap, context, length)
    keys, values = k_buf, v_buf
    if length < cap:
        keys, values = k_buf[:, :, :length], v_buf[:, :, :length]
    return mx.fast.scaled_dot_product_attention(q, keys, values, scale=scale, mask=mask)
