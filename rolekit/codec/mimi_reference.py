"""`reference_step`: a Mimi `Program` run with numpy, stage by stage: the contract the generated CUDA
kernel implements (the tests check it against the MLX steps on the CPU)."""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.codec.mimi_program import (
    Attention,
    Carry,
    Copy,
    Mat,
    Program,
    Search,
    Shift,
    TrSide,
    Upsample,
    View,
    XSpec,
    Zero,
)


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
