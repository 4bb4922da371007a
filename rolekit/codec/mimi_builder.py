"""Mimi's encode and decode steps as `mimi_program.Program`s, built from the `Mimi` modules: the
SEANet convolutions (carries, windows, ELU), the streaming transformers, the down / up sampling and
the split RVQ, each a stage list the numpy reference and the CUDA emitter share."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from rolekit.codec.conv import ELU, CausalConv1d, CausalConvTranspose1d
from rolekit.codec.mimi_program import (
    MAX_BLOCKS,
    Attention,
    Carry,
    Copy,
    Mat,
    OSpec,
    Program,
    Search,
    Shift,
    TrSide,
    Upsample,
    View,
    XSpec,
    Zero,
)
from rolekit.codec.seanet import ResnetBlock
from rolekit.codec.transformer import LinearT


class _Seanet:
    """Emits a SEANet module list (the order and ELU hand-over of `codec.conv.run_layers`)."""

    def __init__(self, p: Program, carries_in: dict[str, mx.array], pending: list[Any]) -> None:
        self.p = p
        self.carries_in = carries_in
        self.pending = pending  # jobs to run in the next stage (copies of finished partials)

    def _stage(self, *jobs: Any) -> None:
        self.p.stage(*self.pending, *jobs)
        self.pending.clear()

    def conv(
        self,
        conv: CausalConv1d,
        key: str,
        x: View,
        elu: bool,
        dst: View | None = None,
        mode: str = "add",
        replicate: bool = False,
    ) -> View:
        p = self.p
        k, cin, cout = conv.weight.shape
        stride, dil, pad = conv._stride, conv._dilation, conv._pad
        to = (pad + x.t - (k - 1) * dil - 1) // stride + 1
        xs = XSpec(x, to, k, stride, dil, pad, f="elu" if elu else "none", replicate=replicate)
        jobs: list[Any] = []
        if pad:
            xs.carry = p.carry_in(key, self.carries_in)
            jobs.append(Carry(xs, p.carry_out(key, (p.b, pad, cin))))
        if dst is None:
            dst = p.alloc(to, cout, zero=mode == "add")
        bias = p.arr(conv.bias) if "bias" in conv else None
        jobs.append(Mat(xs, p.arr(conv.weight), "cols", k * cin, cout, OSpec(dst, mode, bias)))
        self._stage(*jobs)
        return dst

    def convtr(self, conv: CausalConvTranspose1d, key: str, x: View) -> View:
        p = self.p
        cin, k, cout = conv.weight.shape
        s, n_ov = conv._stride, conv._overlap
        dst = p.alloc(x.t * s + n_ov, cout, t=x.t * s)
        xs = XSpec(x, x.t, f="elu")
        bias = p.arr(conv.bias) if "bias" in conv else None
        mat = Mat(xs, p.arr(conv.weight), "cols", cin, k * cout, OSpec(dst, "add", None, None, s, cout))
        partial = p.carry_in(key, self.carries_in)
        self._stage(mat, TrSide(dst, bias, partial, n_ov))
        self.pending.append(Copy(dst, x.t * s, n_ov, p.carry_out(key, (p.b, n_ov, cout))))
        return dst

    def run(
        self, layers: list[Any], x: View, prefix: str, last: View | None = None, first_store: bool = False
    ) -> View:
        """`first_store`: the first conv stores (it runs with the zeroing); `last` receives the
        last conv (stored)."""
        elu = False
        for i, layer in enumerate(layers):
            key = f"{prefix}.{i}"
            if isinstance(layer, ELU):
                elu = True
                continue
            if isinstance(layer, CausalConv1d):
                dst = last if i == len(layers) - 1 else None
                store = dst is not None or (i == 0 and first_store)
                x = self.conv(layer, key, x, elu, dst, "store" if store else "add")
            elif isinstance(layer, CausalConvTranspose1d):
                assert elu, "SEANet's transposed convs follow an ELU"
                x = self.convtr(layer, key, x)
            elif isinstance(layer, ResnetBlock):
                assert not elu
                blk = layer.block
                h = self.conv(blk[1], f"{key}.1", x, True)
                self.conv(blk[3], f"{key}.3", h, True, dst=x)  # + residual, in place
            else:
                raise TypeError(f"no kernel program for {type(layer).__name__}")
            elu = False
        return x


def _transformer(p: Program, tr: Any, x: View, carries_in: dict[str, mx.array], pending: list[Any]) -> None:
    """Every layer of a MimiTransformer in place on x [B, T, D] (5 stages a layer)."""
    cfg = tr.cfg
    d, t = cfg.d_model, x.t
    for i, layer in enumerate(tr.layers):
        attn = layer.self_attn
        ln1 = (p.arr(layer.norm1.weight), p.arr(layer.norm1.bias), float(layer.norm1.eps))
        ln2 = (p.arr(layer.norm2.weight), p.arr(layer.norm2.bias), float(layer.norm2.eps))
        qkv = p.alloc(t, 3 * d)
        kk, vk = f"transformer.{i}.k", f"transformer.{i}.v"
        hd = d // cfg.num_heads
        shape = (p.b, cfg.num_heads, cfg.context, hd)
        caches_in = (p.carry_in(kk, carries_in), p.carry_in(vk, carries_in))
        caches_out = (p.carry_out(kk, shape), p.carry_out(vk, shape))
        shift = Shift(caches_in, caches_out, p.b, cfg.num_heads, t, cfg.context, hd)
        p.stage(*pending, _linear(p, attn.in_proj, XSpec(x, t, f="ln", ln=ln1), OSpec(qkv)), shift)
        pending.clear()
        a = p.alloc(t, d, zero=False)
        p.stage(Attention(qkv, caches_in, caches_out, a, cfg.num_heads, cfg.context, float(cfg.max_period)))
        ls1 = p.arr(layer.layer_scale_1.scale)
        p.stage(_linear(p, attn.out_proj, XSpec(a, t), OSpec(x, "add", scale=ls1)))
        h = p.alloc(t, cfg.dim_feedforward)
        p.stage(_linear(p, layer.linear1, XSpec(x, t, f="ln", ln=ln2), OSpec(h)))
        ls2 = p.arr(layer.layer_scale_2.scale)
        p.stage(_linear(p, layer.linear2, XSpec(h, t, f="gelu"), OSpec(x, "add", scale=ls2)))


def _linear(p: Program, lin: LinearT, x: XSpec, out: OSpec) -> Mat:
    w = lin.weight
    if lin.layout == "rows":
        n, r = w.shape
        return Mat(x, p.arr(w), "rows", r, n, out)
    r, n = w.shape
    return Mat(x, p.arr(w), "cols", r, n, out)


def encoder_program(mimi: Any, batch: int, carries: dict[str, mx.array]) -> Program:
    """The encode step: pcm [B, frame, 1] -> codes [B, K, 1] and the next carries (`co_*`)."""
    cfg = mimi.cfg
    p = Program(batch)
    p.outputs["codes"] = ((batch, cfg.num_codebooks, 1), mx.int32)
    pending: list[Any] = []
    sea = _Seanet(p, carries, pending)
    pcm = View("in", "pcm", cfg.frame_size, 1, cfg.frame_size)
    layers = list(mimi.encoder.model)
    x = sea.run(layers, pcm, "encoder", first_store=True)  # [B, 2, D]
    _transformer(p, mimi.encoder_transformer, x, carries, pending)
    lat = sea.conv(mimi.downsample, "downsample", x, False, replicate=True)  # [B, 1, D]
    q = mimi.quantizer
    qd = cfg.quantizer_dim
    rf, rr = p.alloc(1, qd, zero=False), p.alloc(1, qd, zero=False)
    p.stage(
        *pending,
        Mat(
            XSpec(lat, 1), p.arr(q.rvq_first.input_proj.weight), "rows", cfg.dimension, qd, OSpec(rf, "store")
        ),
        Mat(
            XSpec(lat, 1), p.arr(q.rvq_rest.input_proj.weight), "rows", cfg.dimension, qd, OSpec(rr, "store")
        ),
    )
    pending.clear()
    k = cfg.num_codebooks
    n_search = max(1, k - 1)
    tables = [q.rvq_first.layers[0].table] + [layer.table for layer in q.rvq_rest.layers[: k - 1]]
    p.search = {
        "rf": rf,
        "rr": rr,
        "qd": qd,
        "bins": cfg.bins,
        "k": k,
        "n": n_search,
        "tables": [(p.arr(e, "cb"), p.arr(n2, "cb")) for e, n2 in tables],  # first, rest...
        "partials": p.plain,  # [stage, block < MAX_BLOCKS, kind, B, (distance, code)]
    }
    p.plain += n_search * MAX_BLOCKS * 2 * batch * 2
    for s in range(n_search + 1):
        p.stage(Search(s))
    p.stages[0].jobs.insert(0, Zero())
    return p.finish()


def decoder_program(mimi: Any, batch: int, carries: dict[str, mx.array], n_codes: int) -> Program:
    """The decode step: codes [B, K, 1] -> pcm [B, frame, 1] and the next carries (`co_*`)."""
    cfg = mimi.cfg
    p = Program(batch)
    p.outputs["pcm"] = ((batch, cfg.frame_size, 1), mx.float32)
    d, qd = cfg.dimension, cfg.quantizer_dim
    q = mimi.quantizer
    lat = p.alloc(1, d, zero=False)
    first = q.rvq_first.layers[0].table[0]
    rest = [layer.table[0] for layer in q.rvq_rest.layers[: n_codes - 1]]
    p.search = {"qd": qd, "k": n_codes, "first": p.arr(first, "cb"), "rest": [p.arr(e, "cb") for e in rest]}
    w_first = p.arr(q.rvq_first.output_proj.weight)  # [D, qd]
    w_rest = p.arr(q.rvq_rest.output_proj.weight)
    p.stage(
        Zero(), Mat(XSpec(lat, 1, smem="vq"), w_first, "rows2", 2 * qd, d, OSpec(lat, "store"), w2=w_rest)
    )
    up = mimi.upsample
    s = up._stride
    x = p.alloc(s, d, zero=False)  # [B, 2, D]: the transformer's stream
    partial_out = p.carry_out("upsample", (batch, up._overlap, d))
    p.stage(Upsample(lat, p.arr(up.weight), s, p.carry_in("upsample", carries), x, partial_out))
    pending: list[Any] = []
    _transformer(p, mimi.decoder_transformer, x, carries, pending)
    sea = _Seanet(p, carries, pending)
    out = View("out", "pcm", cfg.frame_size, 1, cfg.frame_size)
    sea.run(list(mimi.decoder.model), x, "decoder", last=out)
    if pending:
        p.stage(*pending)
        pending.clear()
    return p.finish()
