"""Causal self-attention with fused qkv, interleaved RoPE and a ring KV cache with a context window.

Semantics (Kyutai moshi >= 0.1.1, after fix #148 "fixing bug in KV Cache"): a query at absolute
position p sees exactly the keys at positions k with 0 <= p - k < context. The ring keeps the last
`context` keys; slot i holds the newest position k written so far with k % context == i.

Left padding (batches of prompts of unequal length): row b starts at global position `start[b]`.
Its keys before `start[b]` are never attended, and RoPE rotates q and k by the row's own position
(global - start[b]), so a row's keys and scores are those of its batch-1 run.

NVIDIA's PersonaPlex fork still has the pre-#148 ring: once the ring has wrapped, it labels the
oldest slot with a "future" position and masks it out, so a query sees only context - 1 keys
(temporal LM from step 3000, i.e. after 4 minutes). We follow the fixed upstream code.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from rolekit.nn import ring_attention
from rolekit.nn.kernels import Blocks

MIN_RING = 256  # slots of a growing ring at its first step (`ring_capacity`)


def ring_capacity(written: int, context: int, floor: int = MIN_RING) -> int:
    """Slots a growing ring needs once `written` positions are in it: the next power of two
    >= written (at least `floor`), at most `context` (the ring's full size, where it wraps)."""
    n = max(floor, 1 << max(written - 1, 0).bit_length())
    return min(n, context)


@dataclass
class RingKV:
    """One layer's ring cache: keys and values [B, H, C, Dh]; C <= context. `write` (whole
    sequences) returns a new ring; `update_and_fetch` (one step) updates this one.

    Slot i holds the newest position p written so far with p % C == i. A ring smaller than the
    context must never wrap: it is grown (`grow`) before a position >= C is written, and while
    every position written is < C, position p sits at slot p in a ring of any capacity."""

    keys: mx.array
    values: mx.array

    @classmethod
    def empty(cls, batch: int, heads: int, capacity: int, head_dim: int, dtype: mx.Dtype) -> RingKV:
        shape = (batch, heads, capacity, head_dim)
        return cls(mx.zeros(shape, dtype=dtype), mx.zeros(shape, dtype=dtype))

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def grow(self, capacity: int) -> RingKV:
        """The same ring in `capacity` >= C slots (new slots zero), evaluated, so the old buffers
        can be freed at once. Only valid before the wrap (no position >= C written yet)."""
        if capacity == self.capacity:
            return self
        grown = RingKV(grow_slots(self.keys, capacity), grow_slots(self.values, capacity))
        mx.eval(grown.keys, grown.values)
        return grown

    def roll(self, shift: np.ndarray) -> RingKV:
        """Per-row ring rotation by shift [B] slots: slot j takes old slot (j - shift[b]) % C."""
        cap = self.capacity
        idx = (np.arange(cap)[None, :] - np.asarray(shift)[:, None]) % cap  # [B, C]
        idx_mx = mx.array(idx.astype(np.int32))[:, None, :, None]  # [B, 1, C, 1]
        take = lambda a: mx.take_along_axis(a, mx.broadcast_to(idx_mx, a.shape), axis=2)  # noqa: E731
        return RingKV(take(self.keys), take(self.values))

    def write(self, k: mx.array, v: mx.array, offset: int) -> RingKV:
        """Store k, v [B, H, T, Dh] for positions offset .. offset+T-1 (only the last C survive)."""
        cap, t = self.capacity, k.shape[2]
        if t > cap:
            k, v = k[:, :, t - cap :], v[:, :, t - cap :]
            offset, t = offset + t - cap, cap
        start = offset % cap
        first = min(t, cap - start)
        keys = _put(self.keys, k[:, :, :first], start)
        values = _put(self.values, v[:, :, :first], start)
        if first < t:  # wrapped: the rest goes to the front of the ring
            keys = _put(keys, k[:, :, first:], 0)
            values = _put(values, v[:, :, first:], 0)
        return RingKV(keys, values)

    def update_and_fetch(self, k: mx.array, v: mx.array, pos: mx.array) -> tuple[mx.array, mx.array]:
        """Store one position's k, v [B, H, 1, Dh] at slot pos % C (pos: int32 device scalar, the
        global position) -> the whole rings (keys, values) [B, H, C, Dh] with it written; this cache
        then holds them. `put_along_axis`: MLX writes in place when nothing else holds the ring."""
        idx = mx.broadcast_to((pos % self.capacity).reshape(1, 1, 1, 1), k.shape)  # [B, H, 1, Dh]
        self.keys = mx.put_along_axis(self.keys, idx, k.astype(self.keys.dtype), axis=2)
        self.values = mx.put_along_axis(self.values, idx, v.astype(self.values.dtype), axis=2)
        return self.keys, self.values


def grow_slots(buf: mx.array, capacity: int) -> mx.array:
    """buf [B, H, C, Dh] -> [B, H, capacity, Dh]: slots 0..C-1 as they are, zeros after (lazy)."""
    extra = capacity - buf.shape[2]
    if extra < 0:
        raise ValueError(f"a ring of {buf.shape[2]} slots cannot shrink to {capacity}")
    return mx.pad(buf, [(0, 0), (0, 0), (0, extra), (0, 0)]) if extra else buf


def _put(buf: mx.array, update: mx.array, start: int) -> mx.array:
    """buf [B, H, C, Dh] with update [B, H, T, Dh] at slots start .. start+T-1 (a new array).

    One position (every 80 ms step) goes through `put_along_axis`: MLX then updates the ring in
    place when nothing else holds it (a snapshot does: it then gets a copy, so it never sees this
    write). `slice_update` at an array index would copy the whole ring every step."""
    if update.shape[2] == 1:
        idx = mx.broadcast_to(mx.array(start, dtype=mx.int32).reshape(1, 1, 1, 1), update.shape)
        return mx.put_along_axis(buf, idx, update.astype(buf.dtype), axis=2)
    return mx.slice_update(buf, update, mx.array([start]), axes=(2,))


@dataclass(frozen=True)
class StepView:
    """What one-position attention reads at the device position `pos`, shared by every layer.

    pos: int32 scalar, the step's global position; start: [B] int32, each row's left padding;
    rope_offset: [B] int32 = pos - start (each row's own position); length: ring slots attended,
    0 .. length - 1 (static: one trace per value); mask: [B, 1, 1, length] bool (the rule of
    `ring_attention.step_mask`) or None when every attended slot is visible; ring_kernel / fused:
    `Kernels.ring_attention` / `Kernels.blocks` (CUDA kernels where they cover the shapes)."""

    pos: mx.array
    start: mx.array
    rope_offset: mx.array
    length: int
    mask: mx.array | None
    ring_kernel: bool = False
    fused: Blocks | bool = False


def step_view(
    pos: mx.array,
    start: mx.array,
    capacity: int,
    context: int,
    length: int,
    masked: bool,
    ring_kernel: bool = False,
    fused: bool = False,
) -> StepView:
    """The view of the step at `pos` (device arrays: traceable). The mask is built lazily: a graph
    whose attention never reads it (the ring kernels evaluate the rule themselves) never runs it."""
    mask = ring_attention.step_mask(pos, start, capacity, context, length) if masked else None
    return StepView(pos, start, pos - start, length, mask, ring_kernel, fused)


def attended(
    offset: int, capacity: int, context: int, start: np.ndarray | None = None, floor: int | None = None
) -> tuple[int, bool]:
    """(length, masked) of the one-position step at global position `offset` (host values).

    floor None (the eager step): exactly the written slots, min(offset + 1, C), masked only where
    one of them is hidden (a row's left padding, or a ring longer than the context). floor n (a
    compiled step, one trace per result): (C, False) once a full-size ring (C = context) is full
    and every slot is visible; else the next power of two >= the written slots (>= n, <= C),
    masked. A growing ring (C < context) is full for one step only, before it grows: that step
    keeps the masked trace of the steps before it rather than tracing a graph used once."""
    written = min(offset + 1, capacity)
    oldest = offset + 1 - written  # oldest position in the ring after this step's write
    first = 0 if start is None else int(np.max(start))
    if floor is None:  # a lone slot holds this position: every row sees it (a padding row itself)
        return written, not ((oldest >= first or written == 1) and written <= context)
    if offset + 1 >= capacity and capacity == context and oldest >= first:
        return capacity, False
    return prefix_length(offset + 1, capacity, floor), True


prefix_length = ring_capacity  # the attended prefix before the wrap: the same power-of-two rule


def ring_positions(written: int, capacity: int) -> np.ndarray:
    """Absolute position held by each ring slot after `written` positions (-1 = never written)."""
    slots = np.arange(capacity)
    if written == 0:
        return np.full(capacity, -1)
    pos = (written - 1) - ((written - 1 - slots) % capacity)
    return np.where(pos >= 0, pos, -1)


def context_mask(q_pos: np.ndarray, k_pos: np.ndarray, context: int) -> np.ndarray:
    """[Tq, Tk] bool: key visible iff it exists and 0 <= q - k < context."""
    delta = q_pos[:, None] - k_pos[None, :]
    return (k_pos[None, :] >= 0) & (delta >= 0) & (delta < context)


def padded_mask(q_pos: np.ndarray, k_pos: np.ndarray, context: int, start: np.ndarray) -> np.ndarray:
    """[B, 1, Tq, Tk] bool: the context mask, minus keys before each row's start.

    A query of the padding itself (q < start) sees only its own key, so that no row of the
    attention is empty (an all-masked softmax would give NaN and 0 * NaN leaks into real rows).
    """
    base = context_mask(q_pos, k_pos, context)[None]  # [1, Tq, Tk]
    s = np.asarray(start)[:, None, None]  # [B, 1, 1]
    real = base & (k_pos[None, None, :] >= s)
    pad_self = (q_pos[None, :, None] < s) & (k_pos[None, None, :] == q_pos[None, :, None])
    return (real | pad_self)[:, None]


def merge_heads(out: mx.array) -> mx.array:
    """[B, H, T, Dh] -> [B, T, H * Dh]. At T = 1 both layouts are the same bytes, so a reshape
    does it without the copy kernel that reshaping the transposed view costs (one per layer)."""
    b, h, t, hd = out.shape
    if t == 1:
        return out.reshape(b, 1, h * hd)
    return out.transpose(0, 2, 1, 3).reshape(b, t, h * hd)


def heads_first(x: mx.array) -> mx.array:
    """[B, T, H, Dh] -> [B, H, T, Dh]. At T = 1 both layouts are the same bytes: a reshape, so that
    a kernel needing a contiguous input (RoPE, attention) gets one without a copy kernel."""
    b, t, h, hd = x.shape
    if t == 1:
        return x.reshape(b, h, 1, hd)
    return x.transpose(0, 2, 1, 3)


def split_qkv(qkv: mx.array, heads: int, rope: dict | None = None) -> tuple[mx.array, mx.array, mx.array]:
    """Fused projection [B, T, 3 * D] -> q, k, v [B, H, T, Dh]; q and k rotated by `rope` (keyword
    arguments of mx.fast.rope) in ONE call. Only slices, transposes and reshapes (views): an
    integer index such as `qkv[0]` of a transposed array is a gather kernel in MLX, three per layer
    per step."""
    b, t, three_d = qkv.shape
    hd = three_d // (3 * heads)
    x = qkv.reshape(b, t, 3, heads, hd)
    v = heads_first(x[:, :, 2])
    if rope is None:
        return heads_first(x[:, :, 0]), heads_first(x[:, :, 1]), v
    qk = heads_first(x[:, :, :2].reshape(b, t, 2 * heads, hd))  # [B, 2H, T, Dh]
    qk = mx.fast.rope(qk, hd, **rope)  # per-row offsets [B] index the batch axis, as before
    return qk[:, :heads], qk[:, heads:], v


class Attention(nn.Module):
    """Multi-head causal attention: fused `in_proj` (q|k|v), interleaved RoPE, `out_proj`; no biases.

    The layer that owns it applies `in_proj` and `out_proj` (with its norm and residual, as one
    fused product each on CUDA); `__call__` is the part between them."""

    def __init__(self, dim: int, num_heads: int, context: int, max_period: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.context = context
        self.max_period = max_period
        self.in_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def __call__(
        self, qkv: mx.array, ring: RingKV, at: StepView | int, start: np.ndarray | None = None
    ) -> tuple[mx.array, RingKV]:
        """qkv [B, T, 3D] (the `in_proj` output) -> (attention output before `out_proj` [B, T, D],
        the ring with these positions written).

        One step (T = 1): `at` is the step's `StepView` (device position; the ring is updated
        through `update_and_fetch`). A whole sequence: `at` is the global position of its first
        element (host int) and start [B] (None = zeros) row b's first real position.
        """
        if isinstance(at, StepView):
            return self._step(qkv, ring, at)
        b, t, three_d = qkv.shape
        h = self.num_heads
        hd = three_d // (3 * h)
        offset = at
        padded = start is not None and bool(np.any(start))
        rope_off = mx.array((offset - np.asarray(start)).astype(np.int32)) if padded else offset  # [B]
        q, k, v = split_qkv(qkv, h, self.rope_args(rope_off))  # [B, H, T, Dh]
        q_pos = offset + np.arange(t)
        # Whole sequence: attend over [old ring, new keys] so that every query sees its full
        # window (a ring alone would lose keys that later queries of the chunk overwrite).
        # Before the ring has wrapped, only its first `offset` slots hold keys: skip the rest.
        old = min(offset, ring.capacity)
        keys = mx.concatenate([ring.keys[:, :, :old], k], axis=2)  # [B, H, old + T, Dh]
        values = mx.concatenate([ring.values[:, :, :old], v], axis=2)
        k_pos = np.concatenate([ring_positions(offset, ring.capacity)[:old], q_pos])
        ring = ring.write(k, v, offset)
        if padded:
            visible = padded_mask(q_pos, k_pos, self.context, np.asarray(start))  # [B, 1, Tq, Tk]
        else:
            visible = context_mask(q_pos, k_pos, self.context)  # [Tq, Tk]
        mask = None if visible.all() else mx.array(visible)
        out = mx.fast.scaled_dot_product_attention(
            q, keys, values, scale=hd**-0.5, mask=mask
        )  # [B, H, T, Dh]
        return merge_heads(out), ring

    def rope_args(self, offset: int | mx.array) -> dict:
        """Keyword arguments of `mx.fast.rope` for this layer (Kyutai: interleaved pairs)."""
        return dict(traditional=True, base=self.max_period, scale=1.0, offset=offset)

    def _step(self, qkv: mx.array, ring: RingKV, view: StepView) -> tuple[mx.array, RingKV]:
        """qkv [B, 1, 3D] at `view.pos`: write first, then attend to the view's ring prefix.

        Masked steps run `ring_attention`'s two CUDA kernels where `view.ring_kernel` and they
        cover the shapes (they evaluate the mask's rule themselves: the mask is then never
        computed); else MLX's SDPA over the prefix, with the mask where there is one."""
        h = self.num_heads
        hd = qkv.shape[-1] // (3 * h)
        q, k, v = split_qkv(qkv, h, self.rope_args(view.rope_offset))  # [B, H, 1, Dh]
        keys, values = ring.update_and_fetch(k, v, view.pos)  # [B, H, C, Dh]
        if (
            view.mask is not None
            and view.ring_kernel
            and ring_attention.covers(q, keys, values, view.length, self.context)
        ):
            out = ring_attention.masked_step_attention(
                q, keys, values, view.pos, view.start, self.context, view.length, hd**-0.5, use_kernel=True
            )  # [B, H, 1, Dh]
            return merge_heads(out), ring
        if view.length < ring.capacity:  # before the wrap: a ring prefix
            keys, values = keys[:, :, : view.length], values[:, :, : view.length]
        out = mx.fast.scaled_dot_product_attention(
            q, keys, values, scale=hd**-0.5, mask=view.mask
        )  # [B, H, 1, Dh]
        return merge_heads(out), ring
