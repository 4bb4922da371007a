"""A compiled 80 ms LM step (embed + temporal + text sampling + depformer) over an LM's own modules.

Why: the eager step launches ~1000 small kernels and, because the temporal attention takes its
position as a Python int (RoPE offset, ring slot, a numpy-built mask per layer), it cannot be
`mx.compile`d without re-tracing every frame. Here the position is a device scalar: RoPE takes it
as an array, the ring slot is `offset % capacity` and the visibility mask is built on the device,
so one trace serves every step and MLX fuses the elementwise work into few kernels.

It reuses the LM's weights and sub-modules (norms, projections, gated MLPs, embeddings, the
depformer), so bf16, q8 and q4 models all work. `tests/bench/test_fast_step.py` checks that it
produces the same tokens as the eager LM (greedy) across a ring wrap. It stays as the LM-only
probe of bench/RESULTS.md; the engine's own compiled step is `rolekit.engine.compiled`.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from rolekit.lm.model import LM
from rolekit.lm.sampling import SamplingParams, sample
from rolekit.nn.attention import merge_heads, split_qkv
from rolekit.nn.kernels import Kernels


class FastStep:
    """Explicit state (ring K/V per layer, device offset, fed tokens, RNG key) + one compiled step."""

    def __init__(
        self,
        lm: LM,
        batch: int,
        dep_steps: int | None = None,
        params: SamplingParams | None = None,
        seed: int = 0,
        provided: mx.array | None = None,
        compiled: bool = True,
        attention: str = "masked",
        write: str = "scatter",
    ) -> None:
        """`write`: how the new key/value enters the ring: "slice" (mx.slice_update at a device
        index), "scatter" (mx.put_along_axis) or "static" (Python-int slice, compiled=False).
        `attention`: "masked" (exact: ring + visibility mask built on the device), "trim" (exact:
        attend over the written prefix, no mask; the prefix length is a Python int, so only for
        compiled=False), or cost probes that are NOT exact before the ring wraps: "nomask" (the
        whole ring, no mask: what every step costs once the ring is full) and "nowrite" (masked,
        the new key/value not stored) and "bare" (neither stored nor masked)."""
        if attention not in ("masked", "trim", "nomask", "nowrite", "bare"):
            raise ValueError(f"unknown attention mode {attention!r}")
        if attention == "trim" and compiled:
            raise ValueError("attention='trim' changes shapes every step: use compiled=False")
        if write not in ("slice", "scatter", "static"):
            raise ValueError(f"unknown ring write {write!r}")
        if write == "static" and compiled:
            raise ValueError("write='static' indexes with a Python int: use compiled=False")
        cfg = lm.cfg
        self.attention = attention
        self.write = write
        self.pos = 0  # host copy of the offset (only "trim" reads it)
        self.lm = lm
        self.batch = batch
        self.dep_steps = cfg.dep_q if dep_steps is None else dep_steps
        self.params = params or SamplingParams()
        shape = (batch, cfg.num_heads, cfg.context, cfg.head_dim)  # [B, H, C, Dh]
        self.keys = [mx.zeros(shape, dtype=lm.dtype) for _ in range(cfg.num_layers)]
        self.values = [mx.zeros(shape, dtype=lm.dtype) for _ in range(cfg.num_layers)]
        self.offset = mx.array(0, dtype=mx.int32)
        first = [cfg.text_card] + [cfg.card] * cfg.n_q  # Kyutai's initial tokens
        self.tokens = mx.broadcast_to(mx.array(first, dtype=mx.int32)[None, :, None], (batch, 1 + cfg.n_q, 1))
        self.provided = provided if provided is not None else mx.full((batch, cfg.dep_q), -1, dtype=mx.int32)
        self.key = mx.random.key(seed)
        self.kernels = Kernels.for_device()  # as the engine picks them
        self._step = mx.compile(self._impl) if compiled else self._impl

    def _attention(
        self, layer: Any, x: mx.array, k_buf: mx.array, v_buf: mx.array, off: mx.array, mask: mx.array
    ):
        """x [B, 1, D] at position `off` -> (y [B, 1, D], k_buf, v_buf with this position written)."""
        attn = layer.self_attn
        b, t, d = x.shape
        h = attn.num_heads
        hd = d // h
        q, k, v = split_qkv(attn.in_proj(x), h, attn.rope_args(off))  # [B, H, 1, Dh]
        cap = k_buf.shape[2]
        if self.attention not in ("nowrite", "bare"):
            k_buf = self._write(k_buf, k.astype(k_buf.dtype), off)  # [B, H, C, Dh]
            v_buf = self._write(v_buf, v.astype(v_buf.dtype), off)
        keys, values = k_buf, v_buf
        if self.attention == "trim" and self.pos + 1 < cap:  # before the wrap: slots 0..pos are written
            keys, values, mask = k_buf[:, :, : self.pos + 1], v_buf[:, :, : self.pos + 1], None
        elif self.attention in ("trim", "nomask", "bare"):
            mask = None
        out = mx.fast.scaled_dot_product_attention(
            q, keys, values, scale=hd**-0.5, mask=mask
        )  # [B, H, 1, Dh]
        return attn.out_proj(merge_heads(out)), k_buf, v_buf

    def _write(self, buf: mx.array, new: mx.array, off: mx.array) -> mx.array:
        """buf [B, H, C, Dh] with new [B, H, 1, Dh] stored at slot off % C."""
        cap = buf.shape[2]
        if self.write == "static":  # Python-int slice (static SliceUpdate); eager only
            p = self.pos % cap
            buf[:, :, p : p + 1, :] = new
            return buf
        if self.write == "scatter":
            idx = mx.broadcast_to((off % cap).astype(mx.int32).reshape(1, 1, 1, 1), new.shape)
            return mx.put_along_axis(buf, idx, new, axis=2)
        return mx.slice_update(buf, new, (off % cap).reshape(1), axes=(2,))

    def _impl(
        self, tokens: mx.array, off: mx.array, key: mx.array, provided: mx.array, *kv: mx.array
    ) -> tuple[mx.array, ...]:
        """tokens [B, 17, 1] fed at position `off` -> (next tokens [B, 17, 1], off + 1, key, *K, *V)."""
        lm = self.lm
        n = lm.cfg.num_layers
        ks, vs = list(kv[:n]), list(kv[n:])
        cap = ks[0].shape[2]
        # The ring's capacity is the context: after writing `off`, slot i is visible iff written.
        mask = (mx.arange(cap) <= off)[None, None, None, :]  # [1, 1, 1, C] bool
        x = lm.embed(tokens, self.kernels)  # [B, 1, D]
        for i, layer in enumerate(lm.transformer.layers):
            y, ks[i], vs[i] = self._attention(layer, layer.norm1(x), ks[i], vs[i], off, mask)
            x = x + y
            x = x + layer.gating(layer.norm2(x))
        hidden = lm.out_norm(x)[:, 0]  # [B, D]
        logits = lm.text_linear(hidden)  # [B, text_card]
        key, k_text, k_dep = mx.random.split(key, 3)
        p = self.params
        if p.greedy:
            text = mx.argmax(logits, axis=-1).astype(mx.int32)
        else:
            text = sample(logits, p.text_temperature, p.text_top_k, k_text)
        if self.dep_steps:
            audio = lm.depformer(
                hidden, text, provided, p, k_dep, steps=self.dep_steps, kernels=self.kernels
            )  # [B, dep_q]
        else:  # temporal only (to time the two halves of a compiled step)
            audio = mx.maximum(provided, 0)
        nxt = mx.concatenate([text[:, None], audio], axis=1)[:, :, None]  # [B, 17, 1]
        return (nxt, off + 1, key, *ks, *vs)

    def step(self) -> mx.array:
        """Advance one frame; returns the tokens generated (and fed next) [B, 17, 1], not yet evaluated."""
        args = (self.tokens, self.offset, self.key, self.provided, *self.keys, *self.values)
        n = len(self.keys)
        # Drop our references before evaluation so the ring buffers can be updated in place.
        self.keys, self.values = [], []
        out = self._step(*args)
        del args
        self.pos += 1
        self.tokens, self.offset, self.key = out[0], out[1], out[2]
        self.keys, self.values = list(out[3 : 3 + n]), list(out[3 + n :])
        return self.tokens

    def state_arrays(self) -> list[mx.array]:
        return [self.tokens, self.offset, self.key, *self.keys, *self.values]


def agreement(
    lm: LM,
    batch: int = 1,
    steps: int = 20,
    compiled: bool = True,
    attention: str = "masked",
    write: str = "scatter",
) -> dict[str, Any]:
    """Greedy tokens of FastStep vs the eager LM, each fed its own output: equal steps, first divergence."""
    from rolekit.bench.lm import LmStepper

    eager = LmStepper(lm, batch, greedy=True)
    fast = FastStep(
        lm, batch, params=SamplingParams(greedy=True), compiled=compiled, attention=attention, write=write
    )
    equal, first = 0, None
    for i in range(steps):
        a, b = eager.step(), fast.step()
        mx.eval(a, b, *eager.sync_arrays(), *fast.state_arrays())
        if bool(mx.all(a == b).item()):
            equal += 1
        elif first is None:
            first = i
    return {"steps": steps, "equal_steps": equal, "first_divergence": first}


class PretransposedLinear(nn.Module):
    """y = x @ Wt with Wt = W.T stored contiguous [in, out] (nn.Linear computes x @ W.T on [out, in])."""

    def __init__(self, weight: mx.array) -> None:
        super().__init__()
        self.wt = mx.contiguous(weight.T)  # [in, out]

    def __call__(self, x: mx.array) -> mx.array:
        return x @ self.wt


def pretranspose_linears(lm: LM) -> int:
    """Swap the temporal transformer's dense linears (and the text head) for pre-transposed ones.

    A layout probe for GPU matmul kernels; quantized layers are left alone. Returns how many changed.
    """
    changed = 0

    def swap(owner: Any, name: str) -> None:
        nonlocal changed
        layer = getattr(owner, name)
        if type(layer) is nn.Linear:
            setattr(owner, name, PretransposedLinear(layer.weight))
            mx.eval(getattr(owner, name).wt)
            changed += 1

    for layer in lm.transformer.layers:
        swap(layer.self_attn, "in_proj")
        swap(layer.self_attn, "out_proj")
        swap(layer.gating, "linear_in")
        swap(layer.gating, "linear_out")
    swap(lm, "text_linear")
    return changed
