"""Mimi's encoder / decoder transformer (MLX): pre-norm LayerNorm (eps 1e-5, bias), fused qkv,
interleaved RoPE, causal attention limited to `context` keys, layer scale, exact-GELU MLP.

Two call modes, matching the two modes of Kyutai's `StreamingTransformer`:
- whole clip (`cache=None`): query p sees keys p - context < k <= p;
- streaming (`cache` given, `T` steps per call, Mimi uses T = 2): keys live in a ring of
  `context` slots, so after a call only the last `context` positions survive. A query that is
  not the last of its chunk therefore sees fewer keys than in whole-clip mode once the stream is
  longer than `context` (Kyutai's RingKVCache; moshi.md P4). We reproduce exactly that.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from rolekit.codec.config import MimiConfig
from rolekit.nn import fused
from rolekit.nn.attention import heads_first, merge_heads

_BLOCK = 256  # query block of the whole-clip attention (bounds the mask to [256, 256 + context])


def rope_tables(
    offset: int | mx.array, steps: int, head_dim: int, max_period: float
) -> tuple[mx.array, mx.array]:
    """cos, sin [steps, head_dim / 2] in fp32, computed the way Kyutai's `apply_rope` does.

    `offset` may be a scalar device array (the compiled step), with the same fp32 result."""
    ds = mx.arange(head_dim // 2, dtype=mx.float32)
    freqs = mx.exp(ds * mx.array(-math.log(max_period) * 2 / head_dim, dtype=mx.float32))
    off = offset.astype(mx.float32) if isinstance(offset, mx.array) else mx.array(float(offset), mx.float32)
    ts = mx.arange(steps, dtype=mx.float32) + off
    angles = ts[:, None] * freqs[None, :]
    return mx.cos(angles), mx.sin(angles)


def apply_rope(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    # x: [B, H, T, D], pairs (x[2i], x[2i+1]) rotate together (interleaved RoPE)
    b, h, t, d = x.shape
    xp = x.reshape(b, h, t, d // 2, 2)
    xr, xi = xp[..., 0], xp[..., 1]
    out = mx.stack([xr * cos - xi * sin, xr * sin + xi * cos], axis=-1)
    return out.reshape(b, h, t, d)


class LinearT(nn.Module):
    """Bias-free linear whose weight is stored transposed, [in, out]: `x @ w` runs as a plain GEMM
    (no transposed operand for the few-row steps on CPU BLAS). weights.py transposes on load.

    `to_rows()` stores it [out, in] instead (layout "rows"), the layout `nn.fused`'s CUDA kernels
    read: the same products, one orientation at a time (no second copy)."""

    def __init__(self, in_dims: int, out_dims: int) -> None:
        super().__init__()
        self.weight = mx.zeros((in_dims, out_dims))
        self.layout = "cols"

    def __call__(self, x: mx.array) -> mx.array:
        return x @ (self.weight.T if self.layout == "rows" else self.weight)

    def to_rows(self) -> None:
        if self.layout != "rows":
            self.weight = mx.contiguous(self.weight.T)
            self.layout = "rows"


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = mx.ones((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        return x * self.scale


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.in_proj = LinearT(dim, 3 * dim)
        self.out_proj = LinearT(dim, dim)
        self.num_heads = num_heads

    def qkv(self, x: mx.array, cos: mx.array, sin: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        # x: [B, T, D] -> q, k, v [B, H, T, hd]
        return self.split(self.in_proj(x), cos, sin)

    def split(self, p: mx.array, cos: mx.array, sin: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        # p: in_proj output [B, T, 3D], rows ordered (q|k|v, head, hd) -> q, k, v [B, H, T, hd]
        b, t, three_d = p.shape
        h = self.num_heads
        d = three_d // 3
        # slices, not integer indexing (a gather kernel each in MLX); q and k rotated in one pass
        p = p.reshape(b, t, 3, h, d // h)
        qk = apply_rope(heads_first(p[:, :, :2].reshape(b, t, 2 * h, d // h)), cos, sin)
        return qk[:, :h], qk[:, h:], heads_first(p[:, :, 2])

    def out(self, y: mx.array) -> mx.array:
        # y: [B, H, T, hd] -> [B, T, D]
        return self.out_proj(merge_heads(y))


def _mask(q_pos: mx.array, k_pos: mx.array, context: int) -> mx.array:
    delta = q_pos[:, None] - k_pos[None, :]  # [Tq, Tk]
    return (delta >= 0) & (delta < context)


def attend(q: mx.array, k: mx.array, v: mx.array, mask: mx.array | str) -> mx.array:
    scale = 1.0 / math.sqrt(q.shape[-1])
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


class TransformerLayer(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.self_attn = Attention(d, cfg.num_heads)
        self.linear1 = LinearT(d, cfg.dim_feedforward)
        self.linear2 = LinearT(cfg.dim_feedforward, d)
        self.layer_scale_1 = LayerScale(d)
        self.layer_scale_2 = LayerScale(d)

    def mlp(self, x: mx.array) -> mx.array:
        return x + self.layer_scale_2(self.linear2(nn.gelu(self.linear1(self.norm2(x)))))  # exact GELU

    def qkv(
        self, x: mx.array, cos: mx.array, sin: mx.array, use_kernel: bool = False
    ) -> tuple[mx.array, mx.array, mx.array]:
        """Streaming steps: norm1 + in_proj through `nn.fused` (`use_kernel`, `Kernels.fused`: one
        CUDA kernel for <= 4 rows; the same MLX ops otherwise), then the head split and RoPE."""
        p = fused.norm_linear(x, self.norm1, self.self_attn.in_proj, use_kernel=use_kernel)
        return self.self_attn.split(p, cos, sin)

    def finish(self, x: mx.array, y: mx.array, use_kernel: bool = False) -> mx.array:
        """Streaming steps: x + ls1 * out_proj(y), then the MLP block; y [B, H, T, hd]. Through
        `nn.fused` (`use_kernel`): out_proj + layer scale + residual, norm2 + linear1 + GELU,
        linear2 + layer scale + residual are a kernel each (13 launches become 3)."""
        fk = use_kernel
        x = fused.linear_residual(
            merge_heads(y), self.self_attn.out_proj, x, scale=self.layer_scale_1.scale, use_kernel=fk
        )
        h = fused.norm_linear(x, self.norm2, self.linear1, gelu=True, use_kernel=fk)
        return fused.linear_residual(h, self.linear2, x, scale=self.layer_scale_2.scale, use_kernel=fk)


class MimiTransformer(nn.Module):
    """`ProjectedTransformer` with `conv_layout`: [B, T, dimension] in and out (channels-last here)."""

    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.d_model != cfg.dimension:
            self.input_proj = LinearT(cfg.dimension, cfg.d_model)
            self.output_proj = LinearT(cfg.d_model, cfg.dimension)
        self.layers = [TransformerLayer(cfg) for _ in range(cfg.num_layers)]

    def _project_in(self, x: mx.array) -> mx.array:
        return self.input_proj(x) if "input_proj" in self else x

    def _project_out(self, x: mx.array) -> mx.array:
        return self.output_proj(x) if "output_proj" in self else x

    def __call__(self, x: mx.array) -> mx.array:
        """Whole clip from position 0: x [B, T, dimension] -> [B, T, dimension]."""
        cfg = self.cfg
        x = self._project_in(x)
        t = x.shape[1]
        cos, sin = rope_tables(0, t, cfg.d_model // cfg.num_heads, cfg.max_period)
        for layer in self.layers:
            q, k, v = layer.self_attn.qkv(layer.norm1(x), cos, sin)
            parts = []
            for s in range(0, t, _BLOCK):
                e = min(t, s + _BLOCK)
                ks = max(0, s - cfg.context + 1)  # earliest key any query of the block may see
                mask = _mask(mx.arange(s, e), mx.arange(ks, e), cfg.context)
                parts.append(attend(q[:, :, s:e], k[:, :, ks:e], v[:, :, ks:e], mask))
            y = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=2)
            x = x + layer.layer_scale_1(layer.self_attn.out(y))
            x = layer.mlp(x)
        return self._project_out(x)

    def step(
        self,
        x: mx.array,
        cache: dict[str, mx.array | None],
        offset: int,
        prefix: str,
        fused_kernel: bool = False,
    ) -> mx.array:
        """Streaming call at absolute position `offset`: x [B, T, dimension] -> [B, T, dimension].

        `cache[f"{prefix}.{i}.k|v"]` hold the keys / values [B, H, <= context, hd] of the last
        positions before `offset` (None when empty); they are replaced in place.
        `fused_kernel`: `Kernels.fused` for the layers' blocks.
        """
        cfg = self.cfg
        x = self._project_in(x)
        t = x.shape[1]
        cos, sin = rope_tables(offset, t, cfg.d_model // cfg.num_heads, cfg.max_period)
        for i, layer in enumerate(self.layers):
            q, k, v = layer.qkv(x, cos, sin, fused_kernel)
            kk, vk = f"{prefix}.{i}.k", f"{prefix}.{i}.v"
            old_k, old_v = cache.get(kk), cache.get(vk)
            if old_k is not None and old_k.shape[2] > offset:  # a fixed-size cache (compiled
                # step): slots before position 0 are empty
                old_k, old_v = old_k[:, :, old_k.shape[2] - offset :], old_v[:, :, old_v.shape[2] - offset :]
            if old_k is not None and old_k.shape[2] > 0:
                k = mx.concatenate([old_k, k], axis=2)
                v = mx.concatenate([old_v, v], axis=2)
            if k.shape[2] > cfg.context:  # the ring holds `context` slots: oldest keys are gone
                k, v = k[:, :, -cfg.context :], v[:, :, -cfg.context :]
            cache[kk], cache[vk] = k, v
            n = k.shape[2]
            k_pos = mx.arange(offset + t - n, offset + t)
            mask = _mask(mx.arange(offset, offset + t), k_pos, cfg.context)
            x = layer.finish(x, attend(q, k, v, mask), fused_kernel)
        return self._project_out(x)

    def step_fixed(
        self,
        x: mx.array,
        cache: dict[str, mx.array],
        offset: mx.array,
        prefix: str,
        full: bool = False,
        fused_kernel: bool = False,
    ) -> mx.array:
        """`step` with fixed shapes for `mx.compile`: x [B, T, dimension] -> [B, T, dimension].

        `offset` is a scalar int32 device array; every `cache[f"{prefix}.{i}.k|v"]` is always
        [B, H, context, hd] (positions offset - context .. offset - 1 in order, the oldest first;
        slots of negative positions are zeros and masked). Same keys, same order as `step`.
        `full`: every slot holds a real position (offset + T >= context): the mask is then exactly
        the bottom-right causal one, which the fused attention kernels apply without a mask array.
        `fused_kernel`: `Kernels.fused` for the layers' blocks.
        """
        cfg = self.cfg
        x = self._project_in(x)
        t = x.shape[1]
        n = cfg.context
        cos, sin = rope_tables(offset, t, cfg.d_model // cfg.num_heads, cfg.max_period)
        k_pos = mx.arange(n) + (offset + t - n)  # [n] positions of the slots after the write
        q_pos = mx.arange(t) + offset  # [t]
        mask: mx.array | str = "causal"
        if not full:
            mask = _mask(q_pos, k_pos, cfg.context) & (k_pos >= 0)[None, :]  # [t, n]
        for i, layer in enumerate(self.layers):
            q, k, v = layer.qkv(x, cos, sin, fused_kernel)
            kk, vk = f"{prefix}.{i}.k", f"{prefix}.{i}.v"
            k = mx.concatenate([cache[kk][:, :, t:], k], axis=2)  # [B, H, n, hd]
            v = mx.concatenate([cache[vk][:, :, t:], v], axis=2)
            cache[kk], cache[vk] = k, v
            x = layer.finish(x, attend(q, k, v, mask), fused_kernel)
        return self._project_out(x)


def rows_layout(transformer: MimiTransformer) -> None:
    """Store every LinearT of the transformer [out, in] (what `nn.fused`'s kernels read); call
    where they run (CUDA), outside a compiled trace."""
    for _, m in transformer.named_modules():
        if isinstance(m, LinearT):
            m.to_rows()
    mx.eval(transformer.parameters())
