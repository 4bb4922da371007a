"""The engine's LM step as ONE compiled MLX graph: token ring in, embeddings, 32 temporal layers,
text sampling, depformer, ring commit, tokens out.

Why: the eager step launches ~1000 small kernels from Python. Compiled, MLX fuses the elementwise
work; for the graph to be traced once and reused every 80 ms, nothing in it may depend on a Python
value that changes per step. So the temporal position goes in as a device scalar: RoPE takes it as
an array (per row: position - start), the ring slot is `offset % C` written with `put_along_axis`
(in place), and the visibility mask is computed on the device from the position and the rows'
left padding. Before the ring wraps, attention reads only a prefix of the ring whose length is a
power of two (>= MIN_PREFIX; masked within): a new trace per length, i.e. a handful per session
(256, 512, 1024, 2048, C), each reused for hundreds of steps, instead of attending to all C
slots through a mask. Once the ring has wrapped and no row's padding is still inside it, every
slot is visible: one more graph without any mask serves from then on.

On CUDA (batch <= 4) the 32 temporal layers in the graph are one kernel (`lm.temporal_cuda`),
which also writes the step's keys into the rings in place; the graph is then the embeddings, that
kernel, the text head, sampling and the depformer (one graph per attended prefix, as above).

Mimi encode/decode stay outside (they have their own streaming state). The token logic before and
after the temporal layers is `engine.step`'s (`model_input`, `sample_and_commit`), traced as it
is, so the eager and compiled paths share it.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.engine.step import model_input, sample_and_commit
from rolekit.lm import temporal_cuda
from rolekit.lm.temporal import LmCache
from rolekit.nn import fused, ring_attention
from rolekit.nn.attention import RingKV, merge_heads, split_qkv


def prefix_length(written: int, capacity: int, floor: int) -> int:
    """Ring slots a step attends before the wrap: the next power of two >= written (>= floor), <= C."""
    n = max(floor, 1 << max(written - 1, 0).bit_length())
    return min(n, capacity)


class CompiledStep:
    """Compiled temporal + sampling + depformer step of an `Engine` (explicit state stays there)."""

    MIN_PREFIX = 256  # shortest attended ring prefix (fewer traces; SDPA cost is flat below it)

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._masked = mx.compile(lambda *a: self._layers_step(True, *a))
        self._full = mx.compile(lambda *a: self._layers_step(False, *a))
        self._start_np: np.ndarray | None = None
        self._start = mx.zeros((engine.batch,), dtype=mx.int32)  # [B]
        # On CUDA the 32 temporal layers are one kernel (`lm.temporal_cuda`): one compiled graph
        # per attended ring prefix, as for the op path.
        self._kernel_steps: dict[int, Any] = {}
        self.launch = temporal_cuda.launch  # the tests put `temporal_cuda.reference` here

    @property
    def _stand_in(self) -> bool:
        """`launch` is not the CUDA kernel (a test's stand-in: any device, no in-place ring write)."""
        return self.launch is not temporal_cuda.launch

    def uses_kernel(self, lm_cache: LmCache) -> bool:
        """The temporal kernel serves the next step (`Kernels.temporal` and it applies)."""
        lm = self.engine.lm
        if not self.engine.kernels.temporal:
            return False
        if self._stand_in:
            return (
                getattr(lm, "_temporal_packed", None) is not None
                and self.engine.batch <= temporal_cuda.MAX_ROWS
            )
        return temporal_cuda.applies(lm, self.engine.batch, lm_cache.rings[0].keys.dtype)

    def _start_array(self, start: np.ndarray | None) -> mx.array:
        """[B] int32 left padding on the device, rebuilt only when the cache's padding changes."""
        if start is not self._start_np:
            b = self.engine.batch
            host = np.zeros(b, np.int32) if start is None else np.asarray(start, np.int32)
            self._start_np, self._start = start, mx.array(host)
        return self._start

    def __call__(
        self,
        ring_cache: mx.array,
        ring_provided: mx.array,
        off: mx.array,
        user: mx.array,
        keys: mx.array,
        lm_cache: LmCache,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        """One frame: -> (ring cache, ring provided, out [B, 9], next RNG keys [B, 2]); lm_cache advanced.

        off [B] LMGen offsets per row, user [B, 8] user codes, keys [B, 2]."""
        pos = lm_cache.offset
        lm_cache.reserve(pos + 1)  # a growing ring gets room for this position before it would wrap
        cap = lm_cache.rings[0].capacity
        context = self.engine.lm.transformer.layers[0].self_attn.context
        start = lm_cache.start
        oldest = pos + 1 - cap  # oldest position in the ring after this step's write
        full = oldest >= 0 and cap <= context and (start is None or oldest >= int(np.max(start)))
        kernel = self.uses_kernel(lm_cache)
        kv = [r.keys for r in lm_cache.rings] + [r.values for r in lm_cache.rings]
        lm_cache.rings = []  # drop our references: the graph may then update the ring in place
        lm_pos = mx.array(pos, dtype=mx.int32)
        start_mx = self._start_array(start)
        if kernel:
            length = cap if full else prefix_length(pos + 1, cap, self.MIN_PREFIX)
            res = self._kernel_step(length)(ring_cache, ring_provided, off, user, keys, lm_pos, start_mx, *kv)
        elif full:
            res = self._full(ring_cache, ring_provided, off, user, keys, lm_pos, start_mx, *kv)
        else:  # one small mask per step, over the attended prefix only
            length = prefix_length(pos + 1, cap, self.MIN_PREFIX)
            mask = self._mask(lm_pos, start_mx, cap, length)  # [B, 1, 1, length]
            res = self._masked(ring_cache, ring_provided, off, user, keys, lm_pos, start_mx, mask, *kv)
        kv = None
        n = len(res[4:]) // 2
        ks, vs = res[4 : 4 + n], res[4 + n :]
        lm_cache.rings = [RingKV(k, v) for k, v in zip(ks, vs, strict=True)]
        lm_cache.offset = pos + 1
        return res[0], res[1], res[2], res[3]

    def _layers_step(
        self,
        masked: bool,
        ring_cache: mx.array,
        ring_provided: mx.array,
        off: mx.array,
        user: mx.array,
        keys: mx.array,
        pos: mx.array,
        start: mx.array,
        *rest: mx.array,
    ) -> tuple[mx.array, ...]:
        """The step with the temporal layers as MLX ops (`nn.fused` blocks, ring attention):
        rest = ([mask [B, 1, 1, L]] if masked), *K, *V; L = attended ring prefix."""
        mask, kv = (rest[0], rest[1:]) if masked else (None, rest)
        eng = self.engine
        lm = eng.lm
        ring_cache, ring_provided, x = model_input(eng.constants, ring_cache, ring_provided, off, user)
        n = len(kv) // 2
        ks, vs = list(kv[:n]), list(kv[n:])
        cap = ks[0].shape[2]
        rope_pos = pos - start  # [B] each row's own position
        slot = mx.broadcast_to((pos % cap).reshape(1, 1, 1, 1), (x.shape[0], 1, 1, 1))  # [B, 1, 1, 1]
        kernels = eng.kernels
        fk = kernels.fused
        for i, layer in enumerate(lm.transformer.layers):
            attn = layer.self_attn
            qkv = fused.norm_linear(x, layer.norm1, attn.in_proj, use_kernel=fk)  # [B, 1, 3D]
            out, ks[i], vs[i] = _attend(
                attn, qkv, ks[i], vs[i], rope_pos, slot, mask, pos, start, kernels.ring_attention
            )
            x = fused.linear_residual(out, attn.out_proj, x, use_kernel=fk)
            gated = fused.norm_gated(x, layer.norm2, layer.gating.linear_in, use_kernel=fk)
            x = fused.linear_residual(gated, layer.gating.linear_out, x, use_kernel=fk)
        return (*self._finish(x, ring_cache, ring_provided, off, keys), *ks, *vs)

    def _finish(
        self, x: mx.array, ring_cache: mx.array, ring_provided: mx.array, off: mx.array, keys: mx.array
    ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        """Final norm, text head, sampling, depformer, ring commit: x [B, 1, D] after the last layer
        -> (ring cache, ring provided, out [B, 9], next keys [B, 2])."""
        lm = self.engine.lm
        hidden = lm.out_norm(x)  # [B, 1, D]
        logits = lm.text_linear(hidden)  # [B, 1, text_card]
        split = mx.vmap(lambda k: mx.random.split(k, 3))(keys)  # [B, 3, 2] per-row key streams
        ring_cache, ring_provided, out = sample_and_commit(
            self.engine.constants,
            hidden[:, 0],
            logits[:, 0],
            ring_cache,
            ring_provided,
            off,
            split[:, 1],
            split[:, 2],
        )
        return ring_cache, ring_provided, out, split[:, 0]

    def _kernel_step(self, length: int) -> Any:
        if length not in self._kernel_steps:
            self._kernel_steps[length] = mx.compile(lambda *a: self._kernel_body(length, *a))
        return self._kernel_steps[length]

    def _kernel_body(
        self,
        length: int,
        ring_cache: mx.array,
        ring_provided: mx.array,
        off: mx.array,
        user: mx.array,
        keys: mx.array,
        pos: mx.array,
        start: mx.array,
        *kv: mx.array,
    ) -> tuple[mx.array, ...]:
        """kv = *K, *V. The temporal kernel writes this position's keys and values into the rings
        in place and returns them; the CPU tests' stand-in (`temporal_cuda.reference`) cannot, so
        its keys are written here with `put_along_axis`."""
        eng = self.engine
        ring_cache, ring_provided, x = model_input(eng.constants, ring_cache, ring_provided, off, user)
        n = len(kv) // 2
        ks, vs = list(kv[:n]), list(kv[n:])
        context = eng.lm.transformer.layers[0].self_attn.context
        tune = eng.kernels.temporal_tuning
        hidden, new_kv, _ = self.launch(eng.lm, x[:, 0], pos, start, ks, vs, length, context, tune)
        if self._stand_in:
            b, h, cap, hd = ks[0].shape
            idx = mx.broadcast_to((pos % cap).reshape(1, 1, 1, 1), (b, h, 1, hd))
            for i in range(n):
                ks[i] = mx.put_along_axis(ks[i], idx, new_kv[i, 0].reshape(b, h, 1, hd), axis=2)
                vs[i] = mx.put_along_axis(vs[i], idx, new_kv[i, 1].reshape(b, h, 1, hd), axis=2)
        tail = self._finish(hidden[:, None], ring_cache, ring_provided, off, keys)
        return (*tail, *ks, *vs)

    def _mask(self, pos: mx.array, start: mx.array, cap: int, length: int) -> mx.array:
        """[B, 1, 1, length] bool: ring slot visible after writing `pos` (rule of `padded_mask`)."""
        context = self.engine.lm.transformer.layers[0].self_attn.context
        return ring_attention.step_mask(pos, start, cap, context, length)


def _attend(
    attn: Any,
    qkv: mx.array,
    k_buf: mx.array,
    v_buf: mx.array,
    rope_pos: mx.array,
    slot: mx.array,
    mask: Any,
    pos: mx.array,
    start: mx.array,
    ring_kernel: bool,
) -> tuple[mx.array, mx.array, mx.array]:
    """qkv [B, 1, 3D] (in_proj output) -> (attention output before out_proj [B, 1, D], k_buf, v_buf
    [B, H, C, Dh] with this position written).

    Masked steps (before the wrap) run `ring_attention`'s two CUDA kernels where `ring_kernel`
    (`Kernels.ring_attention`) and they cover the shapes: they evaluate the mask's rule themselves,
    so the mask array is then never computed."""
    b, t, three_d = qkv.shape
    d = three_d // 3
    h = attn.num_heads
    hd = d // h
    q, k, v = split_qkv(qkv, h, attn.rope_args(rope_pos))  # [B, H, 1, Dh]
    idx = mx.broadcast_to(slot, k.shape)  # [B, H, 1, Dh]
    k_buf = mx.put_along_axis(k_buf, idx, k.astype(k_buf.dtype), axis=2)
    v_buf = mx.put_along_axis(v_buf, idx, v.astype(v_buf.dtype), axis=2)
    length = None if mask is None else mask.shape[-1]
    if length is not None and ring_kernel and ring_attention.covers(q, k_buf, v_buf, length, attn.context):
        out = ring_attention.masked_step_attention(
            q, k_buf, v_buf, pos, start, attn.context, length, hd**-0.5, use_kernel=True
        )  # [B, H, 1, Dh]
        return merge_heads(out), k_buf, v_buf
    keys, values = k_buf, v_buf  # [B, H, C, Dh]
    if mask is not None and mask.shape[-1] < k_buf.shape[2]:  # before the wrap: a ring prefix
        keys, values = k_buf[:, :, : mask.shape[-1]], v_buf[:, :, : mask.shape[-1]]
    out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=hd**-0.5, mask=mask)  # [B, H, 1, Dh]
    return merge_heads(out), k_buf, v_buf
