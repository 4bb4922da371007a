"""The temporal transformer (one position per 80 ms step) and its explicit ring KV cache."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from rolekit.lm.config import LmConfig
from rolekit.nn import fused
from rolekit.nn.attention import (
    MIN_RING,
    Attention,
    RingKV,
    StepView,
    attended,
    grow_slots,
    ring_capacity,
    ring_positions,
    step_view,
)
from rolekit.nn.kernels import Blocks
from rolekit.nn.mlp import GatedMLP
from rolekit.nn.norm import RMSNorm


@dataclass
class LmCache:
    """Ring KV caches of every temporal layer, `offset` = global positions consumed so far, and
    `start` [B] = each row's left padding (its first real position; host-side numpy).

    All rows advance together; row b's own position is `offset - start[b]`. On CUDA the temporal
    kernel (`lm.temporal_cuda`) writes each step's keys and values into the ring arrays in place,
    so `snapshot` and `restore` copy the rings: a snapshot never shares a buffer with a live cache
    and stays valid after later steps.

    `context` set (`LM.make_cache`): the rings grow with the conversation, `ring_capacity` slots
    for the positions written (a power of two >= `floor`, at most the context); whoever writes
    positions calls `reserve` first, outside any compiled graph. None: fixed rings.
    """

    rings: list[RingKV] = field(default_factory=list)
    offset: int = 0
    start: np.ndarray | None = None  # [B] int64; None = no padding
    context: int | None = None
    floor: int = MIN_RING

    def reserve(self, written: int) -> None:
        """Grow every ring (before it wraps) to hold global positions 0 .. written - 1; a no-op
        for fixed rings, once the rings are full size, or when they are already big enough.

        Layer by layer, each old ring is freed once its copy is made and MLX's buffer cache is
        emptied (`mx.clear_cache`) before the next layer's ring is allocated: the cache cannot
        reuse a smaller ring's buffers for a larger one, so it would otherwise keep every old ring
        on the device next to the new ones. A ring grows a few times per conversation at most."""
        if self.context is None or not self.rings:
            return
        cap = self.rings[0].capacity
        if cap >= self.context or written <= cap:
            return
        want = ring_capacity(written, self.context, self.floor)
        old, self.rings = self.rings[::-1], []
        while old:
            self.rings.append(old.pop().grow(want))  # the old ring is freed here (the cache held it)
            mx.clear_cache()

    @property
    def positions(self) -> np.ndarray:
        """[B] positions each conversation has consumed (its batch-1 offset)."""
        b = self.rings[0].keys.shape[0] if self.rings else 1
        start = np.zeros(b, np.int64) if self.start is None else np.asarray(self.start, np.int64)
        return self.offset - start

    def snapshot(self) -> dict[str, mx.array]:
        out: dict[str, mx.array] = {"offset": mx.array(self.offset, dtype=mx.int32)}
        out["start"] = mx.array(self.offset - self.positions, dtype=mx.int32)  # [B]
        for i, ring in enumerate(self.rings):
            out[f"layers.{i}.keys"] = _copy(ring.keys)
            out[f"layers.{i}.values"] = _copy(ring.values)
        mx.eval(*out.values())  # copied now, before a later step writes the rings in place
        return out

    def restore(self, state: dict[str, mx.array]) -> None:
        n = len(self.rings)
        self.rings = [
            RingKV(_copy(state[f"layers.{i}.keys"]), _copy(state[f"layers.{i}.values"])) for i in range(n)
        ]
        self.offset = int(state["offset"].item())
        start = np.array(state["start"]).astype(np.int64) if "start" in state else None
        self.start = start if start is not None and start.any() else None

    def arrays(self) -> list[mx.array]:
        """Keys and values of every layer: [K0, V0, K1, V1, ...], each [B, H, C, Dh]."""
        return [a for r in self.rings for a in (r.keys, r.values)]

    def start_array(self) -> mx.array:
        """[B] int32 left padding on the device (zeros without padding)."""
        if self.start is None:
            return mx.zeros((self.rings[0].keys.shape[0] if self.rings else 1,), mx.int32)
        return mx.array(np.asarray(self.start, np.int32))

    def release(self) -> list[mx.array]:
        """`arrays()` for one step function, which returns them updated to `adopt`: the cache
        lets go of them meanwhile, so that the step's ring writes can update the buffers in place
        (MLX copies a buffer that something else still holds)."""
        out = self.arrays()
        self.rings = []
        return out

    def adopt(self, arrays: list[mx.array], steps: int = 1) -> None:
        """Take a step function's updated rings ([K0, V0, K1, V1, ...] as from `release`; the
        CUDA temporal kernel's rings are its inputs, written in place) and advance `offset`."""
        self.rings = [RingKV(k, v) for k, v in zip(arrays[0::2], arrays[1::2], strict=True)]
        self.offset += steps


def _copy(a: mx.array) -> mx.array:
    """A new buffer with a's values (an elementwise op: a stays referenced, so nothing is donated)."""
    return a + mx.zeros((), dtype=a.dtype)


def unpad_row(state: dict[str, mx.array], row: int) -> dict[str, mx.array]:
    """Row `row` of a cache snapshot as its batch-1 state: ring slots at own position % C, offset =
    own positions, slots the row never wrote zeroed (they hold padding or nothing)."""
    offset = int(state["offset"].item())
    start = int(state["start"][row].item()) if "start" in state else 0
    own = offset - start
    out: dict[str, mx.array] = {"offset": mx.array(own, dtype=mx.int32)}
    out["start"] = mx.zeros((1,), dtype=mx.int32)
    for k, v in state.items():
        if not k.startswith("layers."):
            continue
        ring = RingKV(v[row : row + 1], v[row : row + 1]).roll(np.array([-start]))
        cap = ring.capacity
        valid = mx.array(ring_positions(own, cap) >= 0)[None, None, :, None]  # [1, 1, C, 1]
        out[k] = mx.where(valid, ring.keys, mx.zeros((1,), dtype=v.dtype))
    return out


def pad_rows(rows: list[dict[str, mx.array]]) -> dict[str, mx.array]:
    """Batch cache snapshot from batch-1 states of different lengths: left-pad the shorter ones."""
    own = np.array([int(r["offset"].item()) for r in rows], np.int64)
    offset = int(own.max())
    start = offset - own  # [B]
    out: dict[str, mx.array] = {"offset": mx.array(offset, dtype=mx.int32)}
    out["start"] = mx.array(start.astype(np.int32))
    for k in rows[0]:
        if not k.startswith("layers."):
            continue
        cap = max(r[k].shape[2] for r in rows)  # rings below full size never wrapped: grow to one size
        v = mx.concatenate([grow_slots(r[k], cap) for r in rows], axis=0)  # [B, H, C, Dh]
        out[k] = RingKV(v, v).roll(start).keys if start.any() else v
    return out


class TemporalLayer(nn.Module):
    """norm1 -> in_proj -> attention -> out_proj + residual -> norm2 -> gated MLP + residual.

    The block products go through `nn.fused` (one CUDA kernel each where `view.fused`, else
    exactly the MLX ops), so one step and a whole sequence run this same code."""

    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.context, cfg.max_period)
        self.norm2 = RMSNorm(cfg.dim, cfg.norm_eps)
        self.gating = GatedMLP(cfg.dim, cfg.hidden)

    def __call__(
        self,
        x: mx.array,
        ring: RingKV,
        at: StepView | int,
        start: np.ndarray | None = None,
        blocks: Blocks = Blocks.NONE,
    ) -> tuple[mx.array, RingKV]:
        """x [B, T, D] -> (x [B, T, D], ring with these positions written); `at` and `start` as
        `Attention.__call__` (a `StepView` for one step, else the first position and padding).
        `blocks`: what a whole sequence's block products take (`Kernels.prompt_blocks`); a step
        takes its view's."""
        fk = at.fused if isinstance(at, StepView) else blocks
        attn = self.self_attn
        qkv = fused.norm_linear(x, self.norm1, attn.in_proj, use_kernel=fk)  # [B, T, 3D]
        y, ring = attn(qkv, ring, at, start)  # [B, T, D]
        x = fused.linear_residual(y, attn.out_proj, x, use_kernel=fk)
        gated = fused.norm_gated(x, self.norm2, self.gating.linear_in, use_kernel=fk)
        return fused.linear_residual(gated, self.gating.linear_out, x, use_kernel=fk), ring


class Transformer(nn.Module):
    """Stack of temporal layers: `step` is one position at a device position (traceable),
    `__call__` any T with a host `LmCache` (whole sequence, or one step through `step`)."""

    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.layers = [TemporalLayer(cfg) for _ in range(cfg.num_layers)]

    def step(self, x: mx.array, rings: list[RingKV], view: StepView) -> mx.array:
        """x [B, 1, D] at `view.pos` -> [B, 1, D]; each ring gets this position's keys and values."""
        for layer, ring in zip(self.layers, rings, strict=True):
            x, _ = layer(x, ring, view)
        return x

    def __call__(self, x: mx.array, cache: LmCache, blocks: Blocks = Blocks.NONE) -> mx.array:
        """x [B, T, D] -> [B, T, D]; advances cache.offset by T. `blocks`: the block products of
        a sequence (T > 1; `Kernels.prompt_blocks`)."""
        offset = cache.offset
        cache.reserve(offset + x.shape[1])
        if x.shape[1] == 1 and self.layers:  # one step: one view (and at most one mask) for all layers
            cap = cache.rings[0].capacity
            context = self.layers[0].self_attn.context
            length, masked = attended(offset, cap, context, cache.start)
            pos = mx.array(offset, dtype=mx.int32)
            view = step_view(pos, cache.start_array(), cap, context, length, masked)
            rings = cache.rings
            x = self.step(x, rings, view)
        else:
            rings = []
            for layer, ring in zip(self.layers, cache.rings, strict=True):
                x, ring = layer(x, ring, offset, cache.start, blocks)
                rings.append(ring)
        cache.rings = rings
        cache.offset = offset + x.shape[1]
        return x
