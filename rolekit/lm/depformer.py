"""The depformer: 16 small transformer steps per frame, one weight set per step, no positions.

Step k attends to steps 0..k of the same frame (Kyutai sets the depformer context to None, so the
capacity is dep_q; `depformer_context = 8` in the kwargs is ignored). The KV cache is fresh for
every frame.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from rolekit.lm.config import LmConfig
from rolekit.nn import fused
from rolekit.nn.attention import heads_first, merge_heads
from rolekit.nn.kernels import Blocks
from rolekit.nn.mlp import GatedMLP
from rolekit.nn.multilinear import MultiLinear
from rolekit.nn.norm import RMSNorm

StepKV = list[mx.array]  # per layer: keys and values of the steps so far, [B, 2H, k, Dh] (keys first)


class DepAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, steps: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = MultiLinear(steps, dim, 3 * dim)
        self.out_proj = MultiLinear(steps, dim, dim)

    def __call__(self, x: mx.array, step: int, kv: mx.array | None) -> tuple[mx.array, mx.array]:
        """x [B, 1, D] for depformer step `step`; kv [B, 2H, step, Dh] holds the earlier steps."""
        out, kv = self.attend(self.in_proj(x, step), kv)
        return self.out_proj(out, step), kv

    def attend(self, qkv: mx.array, kv: mx.array | None) -> tuple[mx.array, mx.array]:
        """qkv [B, 1, 3D] (the in_proj output) -> (attention output before out_proj [B, 1, D], kv).

        Keys and values share one cache array (heads 0..H-1 keys, H..2H-1 values), so that each
        step appends both with one concatenation; q, k, v are views of the projection."""
        b, t, three_d = qkv.shape
        h = self.num_heads
        d = three_d // 3
        hd = d // h
        qkv = qkv.reshape(b, t, 3, h, hd)
        q = heads_first(qkv[:, :, 0])  # [B, H, 1, Dh]
        new = heads_first(qkv[:, :, 1:].reshape(b, t, 2 * h, hd))  # [B, 2H, 1, Dh]
        kv = new if kv is None else mx.concatenate([kv, new], axis=2)  # [B, 2H, step + 1, Dh]
        # every key is in the past: no mask
        out = mx.fast.scaled_dot_product_attention(q, kv[:, :h], kv[:, h:], scale=hd**-0.5)
        return merge_heads(out), kv


class DepformerLayer(nn.Module):
    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        dim = cfg.depformer_dim
        self.norm1 = RMSNorm(dim, cfg.norm_eps)
        self.self_attn = DepAttention(dim, cfg.depformer_num_heads, cfg.dep_q)
        self.norm2 = RMSNorm(dim, cfg.norm_eps)
        self.gating = [GatedMLP(dim, cfg.depformer_hidden) for _ in range(cfg.dep_q)]

    def __call__(
        self, x: mx.array, step: int, kv: mx.array | None, use_kernel: Blocks | bool = False
    ) -> tuple[mx.array, mx.array]:
        """Norm, projection, gate and residual go through `nn.fused` (`use_kernel`: one kernel each
        where it covers the layout, `Kernels.blocks`; exactly the MLX ops otherwise)."""
        attn = self.self_attn
        fk = use_kernel
        out, kv = attn.attend(fused.norm_linear(x, self.norm1, attn.in_proj, step, use_kernel=fk), kv)
        x = fused.linear_residual(out, attn.out_proj, x, step, use_kernel=fk)
        mlp = self.gating[step]
        gated = fused.norm_gated(x, self.norm2, mlp.linear_in, use_kernel=fk)
        return fused.linear_residual(gated, mlp.linear_out, x, use_kernel=fk), kv


class Depformer(nn.Module):
    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.layers = [DepformerLayer(cfg) for _ in range(cfg.depformer_num_layers)]

    def step(
        self, x: mx.array, step: int, kv: StepKV | None, use_kernel: Blocks | bool = False
    ) -> tuple[mx.array, StepKV]:
        """x [B, 1, Dd] -> ([B, 1, Dd], kv including this step); `use_kernel`: `Kernels.blocks`."""
        new_kv: StepKV = []
        for i, layer in enumerate(self.layers):
            x, layer_kv = layer(x, step, None if kv is None else kv[i], use_kernel)
            new_kv.append(layer_kv)
        return x, new_kv
