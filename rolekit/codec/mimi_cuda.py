"""Mimi's streaming encode step and decode step as ONE CUDA kernel each.

Why: on an H100 a Mimi frame is bound by the host, not the GPU. After the fused and conv kernels
an encode step still launched ~262 kernels and a decode step ~251, ~3.1 ms of wall time each
for ~0.75 ms of GPU work (bench/RESULTS.md): MLX spends several microseconds of host time on
every launch. Here each direction is one launch: 0.68 ms of GPU time, ~1.2 ms of wall time per
step on an H100 (lease P).

How: a persistent kernel, one block per SM, runs the step as a list of stages separated by grid
barriers (a sense-reversing barrier on a small counter array that the kernel keeps across calls).
The stages are generated from the `Mimi` modules (`encoder_program`, `decoder_program`):

- every product (convolution windows, transposed convolution, transformer linear, RVQ projection)
  is one matrix product `out[m, n] (+)= sum_r x(m, r) w(r, n)` (`mm_staged`): a block takes a few
  rows and a slice of r, stages x into shared memory with the reader's carry / window / ELU /
  GELU / LayerNorm applied once per element, and its warps take the columns; the sums go into
  zeroed fp32 scratch with atomics (a residual is added in place into the stream it belongs to).
  A stage's work is latency-bound (a grid barrier plus a few dependent loads, ~6 us at least), so
  loads are issued in batches ahead of their use;
- attention: the stage before moves the caches' kept slots (every block, `Shift`); then one block
  per (batch row, head) applies RoPE, writes the new keys and values and attends over the visible
  slots (the compiled step's masking rule, from the device offset), a key per lane;
- RVQ encode: every block searches its share of the codebook, the block minima go through a
  barrier, and every block then reduces them to the same code (ties: lowest index), so the
  residual update needs no further barrier.

The carries keep `CompiledMimi`'s fixed shapes and meaning (the same `MimiState` dicts), so eager,
compiled and kernel steps may follow each other on one stream, and snapshots restore into any.
Results equal the MLX ops up to fp32 summation order (atomics make that order vary from run to
run by rounding only); codes may differ where two centroids are at near-equal distance.
`reference_step` runs the same stage list with numpy: the tests check the program against the
MLX ops on the CPU; the `gpu`-marked tests of tests/codec/test_mimi_cuda.py check the CUDA kernel.
`CompiledMimi` runs it where `Kernels.mimi` asks for it (else its compiled MLX graphs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.codec.conv import ELU, CausalConv1d, CausalConvTranspose1d
from rolekit.codec.seanet import ResnetBlock
from rolekit.codec.transformer import LinearT
from rolekit.nn.cuda import sm_count, source_tag

THREADS = 256
MAX_BATCH = 16  # shared-memory bounds of the RVQ stages
MAX_BLOCKS = 1024  # blocks the RVQ search's minima have room for
XS_FLOATS = 8192  # shared memory for a product's staged input (32 KB, dynamic)


def supported(mimi: Any, batch: int) -> bool:
    """The program covers this Mimi at this batch (fp32 weights, no transformer projections)."""
    cfg = mimi.cfg
    if not 1 <= batch <= MAX_BATCH or cfg.d_model != cfg.dimension or cfg.channels != 1:
        return False
    if "input_proj" in mimi.encoder_transformer or cfg.d_model % cfg.num_heads:
        return False
    from mlx.utils import tree_flatten

    return all(v.dtype == mx.float32 for _, v in tree_flatten(mimi.parameters()))


def applies(mimi: Any, batch: int) -> bool:
    """The kernels can serve this Mimi and batch here (the caller's `Kernels.mimi` chose them): a
    CUDA device, supported."""
    return sm_count() is not None and supported(mimi, batch)


# ---- program: buffers and jobs -------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """An activation [B, rows, c] (rows allocated per batch row, t of them valid): in the scratch
    (`off` floats into the zeroed or the plain region) or a kernel input / output by name."""

    where: str  # "zero", "plain", "in", "out"
    off: int | str  # scratch offset, or the array's name
    rows: int
    c: int
    t: int

    def ptr(self) -> str:
        if self.where == "zero":
            return f"(S + {self.off})"
        if self.where == "plain":
            return f"(S + ZS + {self.off})"
        return str(self.off)


@dataclass
class XSpec:
    """How a product reads x(m, r), m = b * to + t, r = k * cin + ci: window tap k of output step t
    over [carry ; f(src)] (f: ELU / GELU / LayerNorm of the source row), or a shared vector."""

    src: View
    to: int
    k: int = 1
    stride: int = 1
    dil: int = 1
    pad: int = 0
    carry: str | None = None  # input name [B, pad, cin]
    replicate: bool = False  # a fresh stream (offset 0) repeats the first source row instead
    f: str = "none"  # "none", "elu", "gelu", "ln"
    ln: tuple[str, str, float] | None = None  # (weight, bias, eps) names of a LayerNorm
    smem: str | None = None  # read x from this block's shared vector [B, r] instead


@dataclass
class OSpec:
    dst: View
    mode: str = "add"  # "add": atomics into zeroed scratch / a residual stream; "store"
    bias: str | None = None
    scale: str | None = None  # layer scale per output column
    tr_stride: int = 0  # transposed conv: column n = j * cout + co lands on row t * stride + j
    cout: int = 0


@dataclass
class Mat:
    """out = x @ w, w read [R, N] ("cols") or [N, R] ("rows"), or two row blocks ("rows2")."""

    x: XSpec
    w: str
    layout: str
    r: int
    n: int
    out: OSpec
    w2: str | None = None  # "rows2": r < r // 2 from w, the rest from w2 (both [N, R / 2])


@dataclass
class Carry:
    """carry_out[b, p] = [carry ; f(src)][b, L - pad + p] for a conv reading `x`."""

    x: XSpec
    out: str


@dataclass
class TrSide:
    """A transposed conv's bias and previous partial, added into rows t < tr rows of its output."""

    dst: View  # [B, T * stride + overlap, cout]
    bias: str | None
    partial: str | None  # input [B, overlap, cout]
    overlap: int


@dataclass
class Copy:
    """out[b, i, c] = src[b, row0 + i, c] for i < n (a transposed conv's next partial)."""

    src: View
    row0: int
    n: int
    out: str


@dataclass
class Upsample:
    """Depthwise transposed conv of one latent (T = 1): rows < stride to `dst`, the rest the next
    partial; the previous partial added to the first `overlap` rows."""

    src: View
    w: str  # [K, C]
    stride: int
    partial: str
    dst: View
    partial_out: str


@dataclass
class Attention:
    qkv: View  # [B, T, 3D]
    cache_in: tuple[str, str]
    cache_out: tuple[str, str]
    dst: View  # [B, T, D]
    heads: int
    context: int
    max_period: float


@dataclass
class Shift:
    """The transformer caches' kept slots moved T places toward the front (the stage before the
    attention, which then writes the new keys and values into the last T slots)."""

    cache_in: tuple[str, str]
    cache_out: tuple[str, str]
    batch: int
    heads: int
    t: int
    context: int
    head_dim: int


@dataclass
class Search:
    """RVQ encode stage s: first reduce stage s - 1's block minima to codes (kind 0, the first
    RVQ, searched at stage 0 only -> code slot 0; kind 1, the rest, searched its table s - 1 ->
    slot s) and subtract the chosen centroid from the rest residual; then search: kind 0 if s == 0,
    kind 1 (table s) if s < K - 1. The program's last stage only reduces."""

    index: int


@dataclass
class Zero:
    """Zero the scratch's accumulation region (first stage; nothing in it adds to that region)."""


@dataclass
class Stage:
    jobs: list[Any] = field(default_factory=list)


class Program:
    """A step's stages, its kernel inputs (arrays by name) and outputs, and its scratch layout."""

    def __init__(self, batch: int) -> None:
        self.b = batch
        self.inputs: dict[str, mx.array] = {}
        self._ids: dict[int, str] = {}
        self.outputs: dict[str, tuple[tuple[int, ...], mx.Dtype]] = {}
        self.zero = 0
        self.plain = 0
        self.stages: list[Stage] = []
        self.search: dict[str, Any] = {}
        self.stamps = 0
        self.carries_in: dict[str, str] = {}  # input name -> carry key
        self.carries_out: dict[str, str] = {}  # output name -> carry key

    def arr(self, a: mx.array, prefix: str = "w") -> str:
        name = self._ids.get(id(a))
        if name is None:
            name = f"{prefix}{len(self._ids)}"
            self._ids[id(a)] = name
            self.inputs[name] = a
        return name

    def carry_in(self, key: str, carries: dict[str, mx.array]) -> str:
        """The input name of carry `key` (its array changes every step: `inputs_for` fills it)."""
        name = f"ci_{key.replace('.', '_')}"
        self.inputs[name] = carries[key]
        self.carries_in[name] = key
        return name

    def carry_out(self, key: str, shape: tuple[int, ...]) -> str:
        name = f"co_{key.replace('.', '_')}"
        self.outputs[name] = (shape, mx.float32)
        self.carries_out[name] = key
        return name

    def alloc(self, rows: int, c: int, t: int | None = None, zero: bool = True) -> View:
        size = self.b * rows * c
        if zero:
            off, self.zero = self.zero, self.zero + size
        else:
            off, self.plain = self.plain, self.plain + size
        return View("zero" if zero else "plain", off, rows, c, rows if t is None else t)

    def stage(self, *jobs: Any) -> None:
        self.stages.append(Stage(list(jobs)))

    def finish(self) -> Program:
        """Place the stage timestamps (one 64-bit global-timer value per stage boundary, written
        by block 0) after everything else in the plain region."""
        self.zero += -self.zero % 4
        self.plain += -self.plain % 2
        self.stamps = self.plain
        self.plain += 2 * (len(self.stages) + 1)
        return self


# ---- building the programs from the modules -------------------------------------------------------


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


# ---- the program run with numpy (the contract the CUDA kernel implements) -------------------------


class _Env:
    def __init__(self, p: Program, inputs: dict[str, np.ndarray], offset: int) -> None:
        self.p = p
        self.inputs = inputs
        self.offset = offset
        self.zero = np.full(p.zero, np.nan, dtype=np.float32)  # unzeroed reads show up as NaN
        self.plain = np.full(p.plain, np.nan, dtype=np.float32)
        self.outputs = {
            n: np.full(
                shape, -1 if dt == mx.int32 else np.nan, dtype=np.int32 if dt == mx.int32 else np.float32
            )
            for n, (shape, dt) in p.outputs.items()
        }
        self.vq: np.ndarray | None = None

    def view(self, v: View) -> np.ndarray:
        b = self.p.b
        if v.where in ("zero", "plain"):
            buf = self.zero if v.where == "zero" else self.plain
            assert isinstance(v.off, int)
            return buf[v.off : v.off + b * v.rows * v.c].reshape(b, v.rows, v.c)
        arr = self.inputs[str(v.off)] if v.where == "in" else self.outputs[str(v.off)]
        return arr.reshape(b, v.rows, v.c)


def _f(x: np.ndarray, f: str, env: _Env, ln: tuple[str, str, float] | None) -> np.ndarray:
    if f == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(np.float32)
    if f == "gelu":
        from math import erf

        return (0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))).astype(np.float32)
    if f == "ln":
        assert ln is not None
        g, beta, eps = env.inputs[ln[0]], env.inputs[ln[1]], ln[2]
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return ((x - mean) / np.sqrt(var + eps) * g + beta).astype(np.float32)
    return x


def _concat(env: _Env, xs: XSpec) -> np.ndarray:
    """[carry ; f(src)] along time, [B, pad + t, cin]."""
    src = _f(env.view(xs.src)[:, : xs.src.t], xs.f, env, xs.ln)
    if not xs.pad:
        return src
    if xs.replicate and env.offset == 0:
        raw = env.view(xs.src)[:, :1]
        carry = np.repeat(raw, xs.pad, axis=1)
    else:
        assert xs.carry is not None
        carry = env.inputs[xs.carry]
    return np.concatenate([carry, src], axis=1)


def _x_matrix(env: _Env, xs: XSpec, r: int) -> np.ndarray:
    b = env.p.b
    if xs.smem == "vq":
        assert env.vq is not None
        return env.vq
    cat = _concat(env, xs)
    cols = [cat[:, t * xs.stride + k * xs.dil] for t in range(xs.to) for k in range(xs.k)]
    return np.stack(cols, axis=1).reshape(b * xs.to, r)


def _w_matrix(env: _Env, m: Mat) -> np.ndarray:
    w = env.inputs[m.w]
    if m.layout == "cols":
        return w.reshape(m.r, m.n)
    if m.layout == "rows":
        return w.reshape(m.n, m.r).T
    assert m.w2 is not None
    return np.concatenate([w.reshape(m.n, m.r // 2).T, env.inputs[m.w2].reshape(m.n, m.r // 2).T])


def _run_mat(env: _Env, m: Mat) -> None:
    if m.x.smem == "vq":
        _fill_vq(env)
    y = (_x_matrix(env, m.x, m.r).astype(np.float64) @ _w_matrix(env, m).astype(np.float64)).astype(
        np.float32
    )
    o = m.out
    b, to = env.p.b, m.x.to
    dst = env.view(o.dst)
    y = y.reshape(b, to, m.n)
    if o.tr_stride:
        k = m.n // o.cout
        for t in range(to):
            for j in range(k):
                dst[:, t * o.tr_stride + j] += y[:, t, j * o.cout : (j + 1) * o.cout]
        return
    if o.scale:
        y = y * env.inputs[o.scale]
    if o.bias:
        y = y + env.inputs[o.bias]
    if o.mode == "add":
        dst[:, :to] += y
    else:
        dst[:, :to] = y


def _fill_vq(env: _Env) -> None:
    s = env.p.search
    codes = env.inputs["codes"].reshape(env.p.b, -1)
    first = env.inputs[s["first"]][codes[:, 0]]
    rest = np.zeros_like(first)
    for k, name in enumerate(s["rest"]):
        rest = rest + env.inputs[name][codes[:, k + 1]]
    env.vq = np.concatenate([first, rest], axis=1)


def _run_search(env: _Env, job: Search) -> None:
    if job.index:
        return  # the numpy run decides every code at stage 0
    s = env.p.search
    b, k = env.p.b, s["k"]
    codes = env.outputs["codes"].reshape(b, k)
    tabs = [(env.inputs[e], env.inputs[n2]) for e, n2 in s["tables"]]
    rf = env.view(s["rf"])[:, 0]
    res = env.view(s["rr"])[:, 0].copy()
    emb, norms = tabs[0]
    codes[:, 0] = np.argmin(norms[None] - 2.0 * (rf @ emb.T), axis=-1)
    for j in range(1, k):
        emb, norms = tabs[j]
        c = np.argmin(norms[None] - 2.0 * (res @ emb.T), axis=-1)
        codes[:, j] = c
        res = res - emb[c]


def _rope(x: np.ndarray, positions: np.ndarray, max_period: float) -> np.ndarray:
    hd = x.shape[-1]
    c = np.float32(-math.log(max_period) * 2 / hd)
    freqs = np.exp(np.arange(hd // 2, dtype=np.float32) * c)
    ang = positions.astype(np.float32)[:, None] * freqs[None]
    cos, sin = np.cos(ang), np.sin(ang)
    xr, xi = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = xr * cos - xi * sin
    out[..., 1::2] = xr * sin + xi * cos
    return out


def _run_attention(env: _Env, a: Attention) -> None:
    b, t = env.p.b, a.qkv.t
    qkv = env.view(a.qkv)[:, :t]
    d = qkv.shape[-1] // 3
    h, n = a.heads, a.context
    hd = d // h
    pos = np.arange(t) + env.offset
    q = _rope(qkv[..., :d].reshape(b, t, h, hd).transpose(0, 2, 1, 3), pos, a.max_period)
    k = _rope(qkv[..., d : 2 * d].reshape(b, t, h, hd).transpose(0, 2, 1, 3), pos, a.max_period)
    v = qkv[..., 2 * d :].reshape(b, t, h, hd).transpose(0, 2, 1, 3)
    kc = np.concatenate([env.inputs[a.cache_in[0]][:, :, t:], k], axis=2)
    vc = np.concatenate([env.inputs[a.cache_in[1]][:, :, t:], v], axis=2)
    env.outputs[a.cache_out[0]][:, :, n - t :] = kc[:, :, n - t :]
    env.outputs[a.cache_out[1]][:, :, n - t :] = vc[:, :, n - t :]
    lo = max(0, n - env.offset - t)
    out = env.view(a.dst)
    for i in range(t):
        hi = n - t + i
        s = np.einsum("bhd,bhjd->bhj", q[:, :, i], kc[:, :, lo : hi + 1]) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        o = np.einsum("bhj,bhjd->bhd", s, vc[:, :, lo : hi + 1])
        out[:, i] = o.reshape(b, d)


def _run(env: _Env, job: Any) -> None:
    if isinstance(job, Zero):
        env.zero[:] = 0.0
    elif isinstance(job, Mat):
        _run_mat(env, job)
    elif isinstance(job, Carry):
        xs = job.x
        cat = _concat(env, xs)
        env.outputs[job.out][...] = cat[:, cat.shape[1] - xs.pad :]
    elif isinstance(job, TrSide):
        dst = env.view(job.dst)
        rows = job.dst.t
        add = np.zeros((env.p.b, rows, dst.shape[2]), dtype=np.float32)
        if job.bias:
            add += env.inputs[job.bias]
        if job.partial:
            add[:, : job.overlap] += env.inputs[job.partial]
        dst[:, :rows] += add
    elif isinstance(job, Copy):
        env.outputs[job.out][...] = env.view(job.src)[:, job.row0 : job.row0 + job.n]
    elif isinstance(job, Upsample):
        x = env.view(job.src)[:, 0]  # [B, C]
        w = env.inputs[job.w]  # [K, C]
        y = x[:, None, :] * w[None]
        ov = y.shape[1] - job.stride
        y[:, :ov] += env.inputs[job.partial]
        env.view(job.dst)[:, : job.stride] = y[:, : job.stride]
        env.outputs[job.partial_out][...] = y[:, job.stride :]
    elif isinstance(job, Shift):
        for src, dst in zip(job.cache_in, job.cache_out, strict=True):
            env.outputs[dst][:, :, : job.context - job.t] = env.inputs[src][:, :, job.t :]
    elif isinstance(job, Attention):
        _run_attention(env, job)
    elif isinstance(job, Search):
        _run_search(env, job)
    else:
        raise TypeError(type(job).__name__)


def reference_step(p: Program, inputs: dict[str, mx.array], offset: int) -> dict[str, np.ndarray]:
    """Run the program's stages in order with numpy (float64 products): every output by name."""
    env = _Env(p, {k: np.array(v) for k, v in inputs.items()}, offset)
    for stage in p.stages:
        for job in stage.jobs:
            _run(env, job)
    return env.outputs


# ---- the CUDA source ------------------------------------------------------------------------------

_HEADER = r"""
__device__ inline void grid_sync(unsigned int* bar) {
  // Sense-reversing grid barrier; bar = [arrived, generation, timed out], kept across launches
  // (the last block to arrive resets the count, then advances the generation). All blocks are
  // resident (one per SM). A waiter that sees no progress for ~2 s sets the flag and stops waiting.
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned int* vb = bar;
    const unsigned int gen = vb[1];
    __threadfence();
    if (atomicAdd(bar, 1u) == gridDim.x - 1u) {
      atomicExch(bar, 0u);
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else if (vb[2] == 0u) {
      const long long t0 = clock64();
      while (vb[1] == gen) {
        if (clock64() - t0 > 4000000000LL) { atomicExch(bar + 2, 1u); break; }
      }
    }
    __threadfence();
  }
  __syncthreads();
}

__device__ inline float warp_sum1(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int MT, int RSMAX, bool COLS, bool STORE, typename XF, typename WF, typename OF>
__device__ inline void mm_staged(int M, int R, int N, XF xf, WF wf, OF of, float* xs) {
  // out[m, n] (+)= sum_r x(m, r) w(r, n). Block tasks = (MT rows, an r-slice, a group of columns):
  // the block first stages x of its rows and slice into shared memory (the reader's carry /
  // window / ELU / GELU / LayerNorm applied once per element), then its warps take the columns:
  // COLS (w [R, N]): a warp = 32 columns (a lane each) x a part of the slice, float4 reads of x;
  // rows (w [N, R]): a warp = one column, lanes over the slice, warp sum. STORE: one writer per
  // output (no slices). Splits and groups give the grid about two block tasks a block.
  constexpr int NT = 256, NW = NT / 32;
  constexpr int RSP = RSMAX + 4;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nb = gridDim.x;
  const int mt = (M + MT - 1) / MT;
  int splits = (R + RSMAX - 1) / RSMAX;
  if (!STORE) {
    int want = (2 * nb + mt - 1) / mt;
    const int cap = R / 64 > 1 ? R / 64 : 1;
    if (want > cap) want = cap;
    if (want > splits) splits = want;
  }
  const int units = COLS ? (N + 31) / 32 : N;
  int groups = (nb + mt * splits - 1) / (mt * splits);
  if (groups > units) groups = units;
  if (groups < 1) groups = 1;
  const int total = mt * splits * groups;
  for (int bt = blockIdx.x; bt < total; bt += nb) {
    const int g = bt % groups;
    const int rest = bt / groups;
    const int sp = rest % splits;
    const int m0 = (rest / splits) * MT;
    const int r0 = (int)((long long)R * sp / splits);
    const int r1 = (int)((long long)R * (sp + 1) / splits);
    const int rs = r1 - r0;
    const int rs4 = (rs + 3) & ~3;
    const int u0 = (int)((long long)units * g / groups), u1 = (int)((long long)units * (g + 1) / groups);
    __syncthreads();
    for (int e = threadIdx.x; e < MT * rs4; e += NT) {
      const int i = e / rs4, rr = e - i * rs4;
      xs[i * RSP + rr] = (m0 + i < M && rr < rs) ? xf(m0 + i, r0 + rr) : 0.f;
    }
    __syncthreads();
    if constexpr (COLS) {
      const int tiles = u1 - u0;
      int parts = STORE ? 1 : NW / (tiles > 0 ? tiles : 1);
      if (parts < 1) parts = 1;
      for (int wt = warp; wt < tiles * parts; wt += NW) {
        const int n = (u0 + wt % tiles) * 32 + lane;
        const int part = wt / tiles;
        const int q0 = ((rs4 / 4) * part / parts) * 4, q1 = ((rs4 / 4) * (part + 1) / parts) * 4;
        const int nn = n < N ? n : N - 1;
        float acc[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = 0.f;
#pragma unroll 4
        for (int q = q0; q < q1; q += 4) {
          float w[4];
#pragma unroll
          for (int u = 0; u < 4; ++u) w[u] = q + u < rs ? wf(r0 + q + u, nn) : 0.f;
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            const float4 xv = *reinterpret_cast<const float4*>(xs + i * RSP + q);
            acc[i] = fmaf(xv.x, w[0], fmaf(xv.y, w[1], fmaf(xv.z, w[2], fmaf(xv.w, w[3], acc[i]))));
          }
        }
        if (n < N) {
#pragma unroll
          for (int i = 0; i < MT; ++i)
            if (m0 + i < M) of(m0 + i, n, acc[i], sp + part);
        }
      }
    } else {
      constexpr int CN = 4;  // columns a warp computes together (their loads in flight at once)
      for (int n0 = u0 + warp * CN; n0 < u1; n0 += NW * CN) {
        float acc[CN][MT];
#pragma unroll
        for (int c = 0; c < CN; ++c)
#pragma unroll
          for (int i = 0; i < MT; ++i) acc[c][i] = 0.f;
#pragma unroll 2
        for (int q = lane; q < rs; q += 32) {
          float w[CN];
#pragma unroll
          for (int c = 0; c < CN; ++c) w[c] = n0 + c < u1 ? wf(r0 + q, n0 + c) : 0.f;
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            const float xv = xs[i * RSP + q];
#pragma unroll
            for (int c = 0; c < CN; ++c) acc[c][i] = fmaf(xv, w[c], acc[c][i]);
          }
        }
#pragma unroll
        for (int c = 0; c < CN; ++c)
#pragma unroll
          for (int i = 0; i < MT; ++i) acc[c][i] = warp_sum1(acc[c][i]);
        if (lane == 0) {
#pragma unroll
          for (int c = 0; c < CN; ++c)
#pragma unroll
            for (int i = 0; i < MT; ++i)
              if (m0 + i < M && n0 + c < u1) of(m0 + i, n0 + c, acc[c][i], sp);
        }
      }
    }
  }
}

template <int B, int H, int T, int NC, int HD, int NT>
__device__ inline void shift_caches(const float* kin, const float* vin, float* kout, float* vout) {
  // the slots that stay, moved T places toward the front (every block, float4 copies)
  constexpr int KEEP4 = (NC - T) * HD / 4;
  const float4* ki = reinterpret_cast<const float4*>(kin);
  const float4* vi = reinterpret_cast<const float4*>(vin);
  float4* ko = reinterpret_cast<float4*>(kout);
  float4* vo = reinterpret_cast<float4*>(vout);
  for (int i = blockIdx.x * NT + threadIdx.x; i < B * H * KEEP4; i += gridDim.x * NT) {
    const int bh = i / KEEP4, e = i - bh * KEEP4;
    const size_t src = (size_t)bh * (NC * HD / 4) + T * HD / 4 + e;
    const size_t dst = (size_t)bh * (NC * HD / 4) + e;
    const float4 kv = ki[src], vv = vi[src];
    ko[dst] = kv;
    vo[dst] = vv;
  }
}

template <int B, int T, int H, int HD, int NC, int NT>
__device__ inline void attention_stage(const float* qkv, const float* kin, const float* vin, float* kout,
                                       float* vout, float* dst, int offset, float lfreq, float scale) {
  // one block per (batch row, head): RoPE on the new q, k (written to the new cache's last T
  // slots; `shift_caches` moved the others in the stage before); query t sees slots
  // lo .. NC - T + t (lo skips slots of negative positions). Old slot j is kin's slot j + T.
  // Warps take keys in turn, lanes the head dims; partial outputs meet in shared memory.
  constexpr int D = H * HD;
  constexpr int NW = NT / 32;
  constexpr int PL = (HD + 31) / 32;  // dims a lane (lane + 32 p < HD)
  __shared__ __align__(16) float qs[T][HD];
  __shared__ __align__(16) float ks[T][HD];
  __shared__ float vs[T][HD];
  __shared__ float sc[T][NC];
  __shared__ float part[NW][T][HD];
  __shared__ float wmax[NW][T], wsum[NW][T];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int lo = NC - offset - T > 0 ? NC - offset - T : 0;
  for (int task = blockIdx.x; task < B * H; task += gridDim.x) {
    const int b = task / H, h = task % H;
    __syncthreads();
    for (int i = threadIdx.x; i < T * (HD / 2); i += NT) {
      const int t = i / (HD / 2), pr = i % (HD / 2);
      const float* row = qkv + ((size_t)b * T + t) * 3 * D + h * HD + 2 * pr;
      const float freq = expf(static_cast<float>(pr) * lfreq);
      const float ang = static_cast<float>(offset + t) * freq;
      const float c = cosf(ang), s = sinf(ang);
      const float qr = __ldcg(row), qi = __ldcg(row + 1);
      const float kr = __ldcg(row + D), ki = __ldcg(row + D + 1);
      const float v0 = __ldcg(row + 2 * D), v1 = __ldcg(row + 2 * D + 1);
      qs[t][2 * pr] = qr * c - qi * s;
      qs[t][2 * pr + 1] = qr * s + qi * c;
      ks[t][2 * pr] = kr * c - ki * s;
      ks[t][2 * pr + 1] = kr * s + ki * c;
      vs[t][2 * pr] = v0;
      vs[t][2 * pr + 1] = v1;
    }
    __syncthreads();
    const size_t base = ((size_t)b * H + h) * NC * HD;
    for (int i = threadIdx.x; i < T * HD; i += NT) {
      const int t = i / HD, d = i % HD;
      kout[base + (size_t)(NC - T + t) * HD + d] = ks[t][d];
      vout[base + (size_t)(NC - T + t) * HD + d] = vs[t][d];
    }
    // scores: warp w takes keys lo + 32 w .. (a lane each: the key row's loads all in flight)
    float m[T];
#pragma unroll
    for (int t = 0; t < T; ++t) m[t] = -INFINITY;
    for (int j0 = lo + warp * 32; j0 <= NC - 1; j0 += NW * 32) {
      const int j = j0 + lane;
      const bool valid = j <= NC - 1;
      const float* kr = !valid ? &ks[0][0] : (j < NC - T ? kin + base + (size_t)(j + T) * HD : &ks[j - (NC - T)][0]);
      float a[T];
#pragma unroll
      for (int t = 0; t < T; ++t) a[t] = 0.f;
      if constexpr (HD % 4 == 0) {
#pragma unroll
        for (int d = 0; d < HD; d += 4) {
          const float4 kv = *reinterpret_cast<const float4*>(kr + d);
#pragma unroll
          for (int t = 0; t < T; ++t)
            a[t] = fmaf(qs[t][d], kv.x, fmaf(qs[t][d + 1], kv.y, fmaf(qs[t][d + 2], kv.z, fmaf(qs[t][d + 3], kv.w, a[t]))));
        }
      } else {
#pragma unroll
        for (int d = 0; d < HD; ++d) {
          const float kv = kr[d];
#pragma unroll
          for (int t = 0; t < T; ++t) a[t] = fmaf(qs[t][d], kv, a[t]);
        }
      }
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const float sv = valid && j <= NC - T + t ? a[t] * scale : -INFINITY;
        if (valid) sc[t][j] = sv;
        m[t] = fmaxf(m[t], sv);
      }
    }
#pragma unroll
    for (int t = 0; t < T; ++t)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) m[t] = fmaxf(m[t], __shfl_xor_sync(0xffffffffu, m[t], o));
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < T; ++t) wmax[warp][t] = m[t];
    }
    __syncthreads();
    // softmax numerators and this warp's share of the output
    float o[T][PL];
    float l[T];
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float mm = -INFINITY;
      for (int w = 0; w < NW; ++w) mm = fmaxf(mm, wmax[w][t]);
      m[t] = mm;
      l[t] = 0.f;
#pragma unroll
      for (int p = 0; p < PL; ++p) o[t][p] = 0.f;
    }
    for (int j0 = lo + warp * 32; j0 <= NC - 1; j0 += NW * 32) {
      for (int jj = 0; jj < 32; jj += 8) {
        float vv[8][PL];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int j = j0 + jj + u;
#pragma unroll
          for (int p = 0; p < PL; ++p) {
            const int d = lane + 32 * p < HD ? lane + 32 * p : HD - 1;
            vv[u][p] = j > NC - 1 || lane + 32 * p >= HD ? 0.f : (j < NC - T ? vin[base + (size_t)(j + T) * HD + d] : vs[j - (NC - T)][d]);
          }
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int j = j0 + jj + u;
          if (j > NC - 1) break;
#pragma unroll
          for (int t = 0; t < T; ++t) {
            const float e = j <= NC - T + t ? expf(sc[t][j] - m[t]) : 0.f;
            l[t] += e;
#pragma unroll
            for (int p = 0; p < PL; ++p) o[t][p] = fmaf(e, vv[u][p], o[t][p]);
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < T; ++t) {
#pragma unroll
      for (int p = 0; p < PL; ++p)
        if (lane + 32 * p < HD) part[warp][t][lane + 32 * p] = o[t][p];
      if (lane == 0) wsum[warp][t] = l[t];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < T * HD; i += NT) {
      const int t = i / HD, d = i % HD;
      float acc = 0.f, sum = 0.f;
      for (int w = 0; w < NW; ++w) {
        acc += part[w][t][d];
        sum += wsum[w][t];
      }
      dst[((size_t)b * T + t) * D + h * HD + d] = acc / sum;
    }
  }
}

template <int C, int NT>
__device__ inline void ln_stats(const float* src, int rows_alloc, int to, int nrows, float eps, float* lnm, float* lnr) {
  // LayerNorm statistics (mean, 1 / sqrt(biased var + eps)) of nrows rows of C values, four
  // rows at a time, every thread of the block on every row (loads in flight together, two passes)
  constexpr int PER = (C + NT - 1) / NT;
  constexpr int NW = NT / 32;
  __shared__ float red[2][4][NW];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int i0 = 0; i0 < nrows; i0 += 4) {
    float v[4][PER];
    float mean[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int i = i0 + k;
      const int b = i / to, t = i - b * to;
      const float* xr = src + ((size_t)b * rows_alloc + t) * C;
      float sum = 0.f;
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const int c = threadIdx.x + e * NT;
        v[k][e] = (i < nrows && c < C) ? __ldcg(xr + c) : 0.f;
        sum += v[k][e];
      }
      sum = warp_sum1(sum);
      if (lane == 0) red[0][k][warp] = sum;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float sum = 0.f;
      for (int w = 0; w < NW; ++w) sum += red[0][k][w];
      mean[k] = sum / static_cast<float>(C);
      float q = 0.f;
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const float d = threadIdx.x + e * NT < C ? v[k][e] - mean[k] : 0.f;
        q = fmaf(d, d, q);
      }
      q = warp_sum1(q);
      if (lane == 0) red[1][k][warp] = q;
    }
    __syncthreads();
    if (threadIdx.x < 4 && i0 + threadIdx.x < nrows) {
      float q = 0.f;
      for (int w = 0; w < NW; ++w) q += red[1][threadIdx.x][w];
      const int k = threadIdx.x;  // (mean[] is in registers: select, do not index)
      lnm[i0 + k] = k == 0 ? mean[0] : k == 1 ? mean[1] : k == 2 ? mean[2] : mean[3];
      lnr[i0 + threadIdx.x] = rsqrtf(q / static_cast<float>(C) + eps);
    }
    __syncthreads();
  }
}

__device__ inline void stamp(float* at) {
  // the global timer (ns) at a stage boundary, by block 0 (stage timings for the checks)
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    *reinterpret_cast<unsigned long long*>(at) = t;
  }
}

__device__ inline bool better(float d, int c, float bd, int bc) {
  return d < bd || (d == bd && c < bc);
}
"""


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _lit(v: float) -> str:
    return f"{np.float32(v).item()!r}f"


class _Emit:
    def __init__(self, p: Program) -> None:
        self.p = p

    # -- readers --------------------------------------------------------------------------------
    def _src(self, v: View, b: str, row: str, c: str, cin: int) -> str:
        return f"__ldcg({v.ptr()} + ((size_t)({b}) * {v.rows} + ({row})) * {cin} + ({c}))"

    def _carry(self, xs: XSpec, b: str, u: str, c: str, cin: int) -> str:
        stored = f"{xs.carry}[((size_t)({b}) * {xs.pad} + ({u})) * {cin} + ({c})]"
        if xs.replicate:
            return f"(offset == 0 ? {self._src(xs.src, b, '0', c, cin)} : {stored})"
        return stored

    def _transform(self, xs: XSpec, row: str | None, c: str) -> str:
        """The reader's f applied to v; a LayerNorm needs the statistics' row (plain linears only)."""
        if xs.f == "elu":
            return "v = v > 0.f ? v : expm1f(v);"
        if xs.f == "gelu":
            return "v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));"
        if xs.f == "ln":
            assert xs.ln is not None and row is not None, "a LayerNorm reads whole rows, not windows"
            g, beta, _ = xs.ln
            return f"v = (v - lnm[{row}]) * lnr[{row}] * {g}[{c}] + {beta}[{c}];"
        return ""

    def concat_read(self, xs: XSpec, b: str, u: str, c: str, cin: int) -> str:
        """float v = [carry ; f(src)][b, u, c]."""
        body = (
            f"float v = {self._src(xs.src, b, f'({u}) - {xs.pad}', c, cin)}; {self._transform(xs, None, c)}"
        )
        if not xs.pad:
            return body
        return (
            f"float v; if (({u}) < {xs.pad}) v = {self._carry(xs, b, u, c, cin)}; "
            f"else {{ v = {self._src(xs.src, b, f'({u}) - {xs.pad}', c, cin)}; {self._transform(xs, None, c)} }}"
        )

    def xf(self, m: Mat) -> str:
        xs = m.x
        if xs.smem == "vq":
            return f"auto xf = [&](int m, int r) -> float {{ return vq[m * {m.r} + r]; }};\n"
        cin = m.r // xs.k
        if xs.k == 1 and not xs.pad:
            return (
                f"auto xf = [&](int m, int r) -> float {{ const int b = m / {xs.to}; const int t = m - b * {xs.to}; "
                f"float v = {self._src(xs.src, 'b', 't', 'r', cin)}; {self._transform(xs, 'm', 'r')} return v; }};\n"
            )
        return (
            f"auto xf = [&](int m, int r) -> float {{ const int b = m / {xs.to}; const int t = m - b * {xs.to}; "
            f"const int k = r / {cin}; const int c = r - k * {cin}; const int u = t * {xs.stride} + k * {xs.dil}; "
            f"{self.concat_read(xs, 'b', 'u', 'c', cin)} return v; }};\n"
        )

    def wf(self, m: Mat) -> str:
        if m.layout == "cols":
            return f"auto wf = [&](int r, int n) -> float {{ return {m.w}[(size_t)r * {m.n} + n]; }};\n"
        if m.layout == "rows":
            return f"auto wf = [&](int r, int n) -> float {{ return {m.w}[(size_t)n * {m.r} + r]; }};\n"
        h = m.r // 2
        return (
            f"auto wf = [&](int r, int n) -> float {{ return r < {h} ? {m.w}[(size_t)n * {h} + r] : "
            f"{m.w2}[(size_t)n * {h} + r - {h}]; }};\n"
        )

    def of(self, m: Mat) -> str:
        o = m.out
        lines = [
            f"auto of = [&](int m, int n, float v, int sp) {{ const int b = m / {m.x.to}; const int t = m - b * {m.x.to};"
        ]
        if o.tr_stride:
            lines.append(
                f"const int j = n / {o.cout}; const int col = n - j * {o.cout}; const int row = t * {o.tr_stride} + j;"
            )
        else:
            lines.append("const int col = n; const int row = t;")
        if o.scale:
            lines.append(f"v *= {o.scale}[col];")
        if o.bias:
            lines.append(f"if (sp == 0) v += {o.bias}[col];")
        c = o.dst.c
        lines.append(f"float* dst = {o.dst.ptr()} + ((size_t)b * {o.dst.rows} + row) * {c} + col;")
        lines.append("atomicAdd(dst, v); };" if o.mode == "add" else "*dst = v; };")
        return " ".join(lines) + "\n"

    # -- jobs -----------------------------------------------------------------------------------
    def mat(self, m: Mat) -> str:
        b = self.p.b
        rows = b * m.x.to
        out = ["{\n"]
        if m.x.f == "ln":
            assert m.x.ln is not None and not m.x.pad
            src = m.x.src
            out.append(
                f"  ln_stats<{m.r}, NT>({src.ptr()}, {src.rows}, {m.x.to}, {rows}, {_lit(m.x.ln[2])}, lnm, lnr);\n"
            )
        if m.x.smem == "vq":
            out.append(self.vq_fill())
        out.append("  " + self.xf(m))
        out.append("  " + self.wf(m))
        out.append("  " + self.of(m))
        mt = _pow2_at_least(min(rows, 8 if m.layout == "cols" else 4))
        rsmax = (XS_FLOATS // mt - 4) // 4 * 4
        store = m.out.mode == "store"
        if store and m.r > rsmax:
            raise ValueError(f"a stored product needs r <= {rsmax}, got {m.r}")
        cols = "true" if m.layout == "cols" else "false"
        out.append(
            f"  mm_staged<{mt}, {rsmax}, {cols}, {'true' if store else 'false'}>"
            f"({rows}, {m.r}, {m.n}, xf, wf, of, xs);\n}}\n"
        )
        return "".join(out)

    def _each(self, rows: int, c: int, body: str) -> str:
        """A grid-stride loop over the elements i of [B, rows, c] as (b, r, c), running `body`."""
        n = self.p.b * rows * c
        return (
            f"for (int i = blockIdx.x * NT + threadIdx.x; i < {n}; i += gridDim.x * NT) {{\n"
            f"  const int c = i % {c}; const int r = (i / {c}) % {rows}; const int b = i / {c * rows};\n"
            f"  {body}\n}}\n"
        )

    def carry(self, job: Carry) -> str:
        xs = job.x
        cin = xs.src.c
        ell = xs.pad + xs.src.t
        read = self.concat_read(xs, "b", "u", "c", cin)
        return self._each(
            xs.pad,
            cin,
            f"const int u = {ell - xs.pad} + r; {read} {job.out}[i] = v;",
        )

    def trside(self, job: TrSide) -> str:
        d = job.dst
        bias = f"{job.bias}[c]" if job.bias else "0.f"
        part = (
            f"if (r < {job.overlap}) v += {job.partial}[((size_t)b * {job.overlap} + r) * {d.c} + c];"
            if job.partial
            else ""
        )
        add = f"atomicAdd({d.ptr()} + ((size_t)b * {d.rows} + r) * {d.c} + c, v);"
        return self._each(d.t, d.c, f"float v = {bias}; {part} {add}")

    def copy(self, job: Copy) -> str:
        s = job.src
        read = f"__ldcg({s.ptr()} + ((size_t)b * {s.rows} + {job.row0} + r) * {s.c} + c)"
        return self._each(job.n, s.c, f"{job.out}[i] = {read};")

    def upsample(self, job: Upsample) -> str:
        s, d = job.src, job.dst
        c = s.c
        k = int(self.p.inputs[job.w].shape[0])
        ov = k - job.stride
        return self._each(
            k,
            c,
            f"float v = __ldcg({s.ptr()} + (size_t)b * {s.rows} * {c} + c) * {job.w}[r * {c} + c];\n"
            f"  if (r < {ov}) v += {job.partial}[((size_t)b * {ov} + r) * {c} + c];\n"
            f"  if (r < {job.stride}) {d.ptr()}[((size_t)b * {d.rows} + r) * {c} + c] = v;\n"
            f"  else {job.partial_out}[((size_t)b * {ov} + r - {job.stride}) * {c} + c] = v;",
        )

    def attention(self, a: Attention) -> str:
        t = a.qkv.t
        d = a.qkv.c // 3
        hd = d // a.heads
        lfreq = _lit(-math.log(a.max_period) * 2 / hd)
        return (
            f"attention_stage<{self.p.b}, {t}, {a.heads}, {hd}, {a.context}, NT>({a.qkv.ptr()}, {a.cache_in[0]}, "
            f"{a.cache_in[1]}, {a.cache_out[0]}, {a.cache_out[1]}, {a.dst.ptr()}, offset, {lfreq}, "
            f"{_lit(1.0 / math.sqrt(hd))});\n"
        )

    def shift(self, job: Shift) -> str:
        if (job.context - job.t) * job.head_dim % 4:
            raise ValueError("cache rows must move in float4 steps")
        return (
            f"shift_caches<{job.batch}, {job.heads}, {job.t}, {job.context}, {job.head_dim}, NT>("
            f"{job.cache_in[0]}, {job.cache_in[1]}, {job.cache_out[0]}, {job.cache_out[1]});\n"
        )

    def vq_fill(self) -> str:
        s = self.p.search
        b, qd, k = self.p.b, s["qd"], s["k"]
        bins = int(self.p.inputs[s["first"]].shape[0])
        rest = "".join(
            f" acc += {name}[(size_t)min(max(codes[b * {k} + {j + 1}], 0), {bins - 1}) * {qd} + d];"
            for j, name in enumerate(s["rest"])
        )
        return (
            f"  for (int i = threadIdx.x; i < {b * qd}; i += NT) {{ const int b = i / {qd}; const int d = i - b * {qd};\n"
            f"    vq[b * {2 * qd} + d] = {s['first']}[(size_t)min(max(codes[b * {k}], 0), {bins - 1}) * {qd} + d];\n"
            f"    float acc = 0.f;{rest}\n"
            f"    vq[b * {2 * qd} + {qd} + d] = acc; }}\n"
            "  __syncthreads();\n"
        )

    def search(self, job: Search) -> str:
        s = self.p.search
        b, qd, k, n_search = self.p.b, s["qd"], s["k"], s["n"]
        idx = job.index
        part = f"(S + ZS + {s['partials']})"
        out = ["{\n"]
        if idx == 0:
            out.append(
                f"  for (int i = threadIdx.x; i < {b * qd}; i += NT) {{ const int b = i / {qd}; const int d = i - b * {qd};\n"
                f"    rsf[b][d] = __ldcg({s['rf'].ptr()} + (size_t)b * {qd} + d);\n"
                f"    res[b][d] = __ldcg({s['rr'].ptr()} + (size_t)b * {qd} + d); }}\n"
                "  __syncthreads();\n"
            )
        else:
            kinds = [
                kind for kind in (0, 1) if (kind == 0 and idx - 1 == 0) or (kind == 1 and idx - 1 < k - 1)
            ]
            for kind in kinds:
                slot = 0 if kind == 0 else idx
                out.append(
                    f"  for (int b = warp; b < {b}; b += NW) {{ float bd = INFINITY; int bc = 0x7fffffff;\n"
                    f"    for (int g = lane; g < (int)gridDim.x; g += 32) {{\n"
                    f"      const float* e = {part} + ((((size_t){idx - 1} * {MAX_BLOCKS} + g) * 2 + {kind}) * {b} + b) * 2;\n"
                    f"      const float dd = __ldcg(e); const int cc = __float_as_int(__ldcg(e + 1));\n"
                    f"      if (better(dd, cc, bd, bc)) {{ bd = dd; bc = cc; }} }}\n"
                    f"#pragma unroll\n"
                    f"    for (int o = 16; o > 0; o >>= 1) {{ const float od = __shfl_xor_sync(0xffffffffu, bd, o);\n"
                    f"      const int oc = __shfl_xor_sync(0xffffffffu, bc, o); if (better(od, oc, bd, bc)) {{ bd = od; bc = oc; }} }}\n"
                    f"    if (lane == 0) {{ sel[{kind}][b] = bc; if (blockIdx.x == 0) codes[b * {k} + {slot}] = bc; }} }}\n"
                    "  __syncthreads();\n"
                )
                if kind == 1 and idx < n_search:  # the rest residual for the next table
                    emb = s["tables"][idx][0]
                    out.append(
                        f"  for (int i = threadIdx.x; i < {b * qd}; i += NT) {{ const int b = i / {qd}; const int d = i - b * {qd};\n"
                        f"    res[b][d] -= {emb}[(size_t)sel[1][b] * {qd} + d]; }}\n"
                        "  __syncthreads();\n"
                    )
        if idx < n_search:
            searched = []
            if idx == 0:
                searched.append((0, s["tables"][0], "rsf"))
            if idx < k - 1:
                searched.append((1, s["tables"][idx + 1], "res"))
            out.append(
                f"  for (int i = threadIdx.x; i < NW * 2 * {b}; i += NT) {{ (&wbd[0][0][0])[i] = INFINITY; (&wbc[0][0][0])[i] = 0x7fffffff; }}\n"
                "  __syncthreads();\n"
            )
            bins = s["bins"]
            for kind, (emb, norms), vec in searched:
                out.append(
                    f"  for (int task = blockIdx.x * NW + warp; task < {b * bins}; task += gridDim.x * NW) {{\n"
                    f"    const int b = task / {bins}; const int c = task - b * {bins};\n"
                    f"    const float* e = {emb} + (size_t)c * {qd}; float acc = 0.f;\n"
                    f"    for (int d = lane; d < {qd}; d += 32) acc = fmaf({vec}[b][d], e[d], acc);\n"
                    f"    const float dist = {norms}[c] - 2.f * warp_sum1(acc);\n"
                    f"    if (lane == 0 && better(dist, c, wbd[warp][{kind}][b], wbc[warp][{kind}][b])) {{\n"
                    f"      wbd[warp][{kind}][b] = dist; wbc[warp][{kind}][b] = c; }} }}\n"
                )
            out.append(
                "  __syncthreads();\n"
                f"  if (threadIdx.x < 2 * {b}) {{ const int kind = threadIdx.x / {b}; const int b = threadIdx.x % {b};\n"
                "    float bd = INFINITY; int bc = 0x7fffffff;\n"
                "    for (int w = 0; w < NW; ++w) if (better(wbd[w][kind][b], wbc[w][kind][b], bd, bc)) { bd = wbd[w][kind][b]; bc = wbc[w][kind][b]; }\n"
                f"    float* e = {part} + ((((size_t){idx} * {MAX_BLOCKS} + blockIdx.x) * 2 + kind) * {b} + b) * 2;\n"
                "    e[0] = bd; e[1] = __int_as_float(bc); }\n"
            )
        out.append("}\n")
        return "".join(out)

    def zero(self, job: Zero) -> str:
        return "for (size_t i = (size_t)blockIdx.x * NT + threadIdx.x; i < ZS; i += (size_t)gridDim.x * NT) S[i] = 0.f;\n"

    def job(self, job: Any) -> str:
        """The code of one job: the method named after its class (Mat -> mat, TrSide -> trside)."""
        return getattr(self, type(job).__name__.lower())(job)

    def source(self) -> str:
        p = self.p
        ln_rows = max(
            [p.b * j.x.to for st in p.stages for j in st.jobs if isinstance(j, Mat) and j.x.f == "ln"] or [1]
        )
        head = [
            f"  constexpr int NT = {THREADS};\n  constexpr int NW = NT / 32;\n  constexpr size_t ZS = {p.zero};\n",
            "  const int lane = threadIdx.x & 31; const int warp = threadIdx.x >> 5;\n",
            "  unsigned int* barp = const_cast<unsigned int*>(reinterpret_cast<const unsigned int*>(bar));\n",
            "  const int offset = off[0];\n",
            "  extern __shared__ float xs[];  // a product's staged input (XS_FLOATS)\n",
            f"  __shared__ float lnm[{ln_rows}], lnr[{ln_rows}];\n",
            "  (void)lane; (void)warp; (void)offset; (void)lnm; (void)lnr;\n",
        ]
        s = p.search
        if "rf" in s:
            head.append(
                f"  __shared__ float res[{p.b}][{s['qd']}], rsf[{p.b}][{s['qd']}];\n"
                f"  __shared__ float wbd[NW][2][{p.b}]; __shared__ int wbc[NW][2][{p.b}]; __shared__ int sel[2][{p.b}];\n"
            )
        elif "first" in s:
            head.append(f"  __shared__ float vq[{p.b * 2 * s['qd']}];\n")
        body = [f"  stamp(S + ZS + {p.stamps});\n"]
        for i, st in enumerate(p.stages):
            body.append(f"  // stage {i}\n")
            body += ["  " + self.job(j).replace("\n", "\n  ").rstrip(" ") for j in st.jobs]
            if i < len(p.stages) - 1:
                body.append("  grid_sync(barp);\n")
            body.append(f"  stamp(S + ZS + {p.stamps + 2 * (i + 1)});\n")
        return "".join(head + body)


# ---- the call -------------------------------------------------------------------------------------


class _Launch:
    """A program's kernel and its call layout, fixed once: where each input comes from ("weight":
    the array; "carry": the carry key; "io" / "off" / "bar": the step's own), output shapes and types."""

    def __init__(self, prog: Program, kind: str) -> None:
        self.prog, self.kind = prog, kind
        self.kernel = make_kernel(prog, kind)
        self.inputs: list[tuple[str, Any]] = []
        for name in _input_names(prog, kind):
            if name in prog.carries_in:
                self.inputs.append(("carry", prog.carries_in[name]))
            elif name in ("pcm", "codes"):
                self.inputs.append(("io", None))
            elif name in ("off", "bar"):
                self.inputs.append((name, None))
            else:
                self.inputs.append(("weight", prog.inputs[name]))
        self.outputs = _output_names(prog)
        self.shapes = [prog.outputs[n][0] if n != "S" else (prog.zero + prog.plain,) for n in self.outputs]
        self.dtypes = [prog.outputs[n][1] if n != "S" else mx.float32 for n in self.outputs]


class MimiKernels:
    """The two kernels of one Mimi: `encode` / `decode` a step from fixed-shape carries."""

    def __init__(self, mimi: Any) -> None:
        self.mimi = mimi
        self._programs: dict[tuple, _Launch] = {}
        self.bars = {"enc": mx.zeros((4,), dtype=mx.uint32), "dec": mx.zeros((4,), dtype=mx.uint32)}
        self.last: dict[str, tuple[Program, mx.array]] = {}  # kind -> (program, scratch) of the last call
        mx.eval(list(self.bars.values()))

    def _get(self, key: tuple, build: Any) -> _Launch:
        found = self._programs.get(key)
        if found is None:
            prog = build()
            for name in prog.carries_in:  # each call passes its own carries: keep no old ones
                prog.inputs[name] = mx.zeros((0,), dtype=mx.float32)
            found = self._programs[key] = _Launch(prog, key[0])
        return found

    def _call(
        self, launch: _Launch, io: mx.array, carries: dict[str, mx.array], offset: int
    ) -> tuple[mx.array, dict[str, mx.array]]:
        kind, prog = launch.kind, launch.prog
        special = {"io": io, "off": mx.array([offset], dtype=mx.int32), "bar": self.bars[kind]}
        inputs = [carries[ref] if how == "carry" else special.get(how, ref) for how, ref in launch.inputs]
        results = launch.kernel(
            inputs=inputs,
            grid=(min(sm_count() or 1, MAX_BLOCKS) * THREADS, 1, 1),
            threadgroup=(THREADS, 1, 1),
            output_shapes=launch.shapes,
            output_dtypes=launch.dtypes,
        )
        by_name = dict(zip(launch.outputs, results, strict=True))
        self.last[kind] = (prog, by_name["S"])
        new = {key: by_name[name] for name, key in prog.carries_out.items()}
        return by_name["codes" if kind == "enc" else "pcm"], new

    def encode(
        self, pcm: mx.array, carries: dict[str, mx.array], offset: int
    ) -> tuple[mx.array, dict[str, mx.array]]:
        """pcm [B, frame, 1] fp32, carries of CompiledMimi's shapes -> codes [B, K, 1], new carries."""
        b = pcm.shape[0]
        launch = self._get(("enc", b), lambda: encoder_program(self.mimi, b, carries))
        return self._call(launch, pcm, carries, offset)

    def decode(
        self, codes: mx.array, carries: dict[str, mx.array], offset: int
    ) -> tuple[mx.array, dict[str, mx.array]]:
        """codes [B, K, 1] int32 -> pcm [B, frame, 1], new carries."""
        b, k = codes.shape[:2]
        launch = self._get(("dec", b, k), lambda: decoder_program(self.mimi, b, carries, k))
        return self._call(launch, codes, carries, offset)

    def stage_us(self, kind: str) -> list[float]:
        """Microseconds of each stage of the last `kind` ("enc" / "dec") call, barrier included (from
        block 0's global-timer stamps; the last stage's is block 0's own finish)."""
        prog, scratch = self.last[kind]
        start = prog.zero + prog.stamps
        raw = np.array(scratch[start : start + 2 * (len(prog.stages) + 1)]).view(np.uint64).astype(np.int64)
        return [float(v) / 1e3 for v in np.diff(raw)]

    def slowest(self, kind: str, n: int = 8) -> list[tuple[float, int, str]]:
        """The n slowest stages of the last `kind` call: (us, stage index, its jobs)."""
        prog = self.last[kind][0]
        us = self.stage_us(kind)
        order = sorted(range(len(us)), key=lambda i: -us[i])[:n]
        return [(round(us[i], 1), i, describe(prog.stages[i])) for i in order]

    def timed_out(self) -> bool:
        """True when a grid barrier gave up waiting (results void); the counters are then reset."""
        flags = [int(v[2].item()) for v in self.bars.values()]
        if any(flags):
            self.bars = {k: mx.zeros((4,), dtype=mx.uint32) for k in self.bars}
            mx.eval(list(self.bars.values()))
            return True
        return False


def describe(stage: Stage) -> str:
    """A stage's jobs in a few words (products as name:rows x r -> n)."""
    parts = []
    for j in stage.jobs:
        if isinstance(j, Mat):
            parts.append(f"mat:{j.layout}:{j.x.to}x{j.r}->{j.n}{':' + j.x.f if j.x.f != 'none' else ''}")
        else:
            parts.append(type(j).__name__.lower())
    return " ".join(parts)


def make_kernel(prog: Program, kind: str) -> Any:
    """The compiled kernel of a program (cached by source); `kind` "enc" or "dec"."""
    return _kernel(tuple(_input_names(prog, kind)), tuple(_output_names(prog)), _Emit(prog).source())


def _input_names(prog: Program, kind: str) -> list[str]:
    return [*prog.inputs, "pcm" if kind == "enc" else "codes", "off", "bar"]


def _output_names(prog: Program) -> list[str]:
    return [*prog.outputs, "S"]


@cache
def _kernel(inputs: tuple[str, ...], outputs: tuple[str, ...], source: str) -> Any:
    return mx.fast.cuda_kernel(
        name=f"rolekit_mimi_{source_tag(source)}",
        input_names=list(inputs),
        output_names=list(outputs),
        source=source,
        header=_HEADER,
        ensure_row_contiguous=True,
        # XS_FLOATS of staging, raised past 48 KB so that MLX lifts the block's shared-memory limit
        # (the static RVQ / attention buffers come on top)
        shared_memory=max(XS_FLOATS * 4, 48004),
    )
