"""Mimi's streaming steps as two `mx.compile` graphs (one frame each), equal to the eager steps.

A streaming step is ~150 small ops (SEANet convs, two 8-layer transformers, the RVQ): on a GPU
it is launch-bound, on CPU dispatch-bound. `CompiledMimi` traces `encode_step` / `decode_step`
once per batch size with every carry an explicit input and output of fixed shape:
- conv carries always present (zeros = "nothing seen yet"; the downsample's replicate padding of
  a fresh stream is a `where` on `offset == 0`),
- transformer caches always [B, H, context, hd] (`MimiTransformer.step_fixed`), the position a
  scalar int32 device array, so one graph serves every step while the caches fill (empty slots
  masked) and a second one every step after (20 s in): then the mask is exactly the causal one,
  which the fused attention kernel applies without a mask array (on CUDA: one kernel per layer
  instead of the unfused masked path's five).

The state is a plain `MimiState`: eager and compiled steps may follow each other on one stream,
and snapshots of either restore into either (eager trims empty cache slots, compiled pads them).
The weights are captured as constants when a graph is traced: build a new `CompiledMimi` after
loading other weights into the same `Mimi`.

On CUDA each step runs as ONE kernel instead (`codec.mimi_cuda`, from the same carries) where it
applies and `Kernels.mimi` asks for it; the graphs serve everything else (CPU, `mimi` off,
batch > 16), with `Kernels.conv` / `Kernels.fused` choosing the kernels inside them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from rolekit.codec import mimi_cuda
from rolekit.codec.mimi import Mimi, MimiState
from rolekit.codec.transformer import rows_layout
from rolekit.nn.kernels import OPS, Kernels

Shapes = dict[str, tuple[int, ...]]


class CompiledMimi:
    """Drop-in for a `Mimi`'s streaming API: `make_state`, `encode_step`, `decode_step`.

    Traces per batch size: encode and decode, each while filling and once full (four graphs)."""

    def __init__(self, mimi: Mimi, kernels: Kernels = OPS) -> None:
        """`kernels`: which CUDA kernels the steps use (fixed for this object's life)."""
        self.mimi = mimi
        self.policy = kernels
        mimi.prepare()  # codebook tables exist before tracing (else the trace would build them)
        # CUDA: each step as one kernel (`codec.mimi_cuda`) where it applies; else the transformers'
        # linears in the layout of the fused kernels (the one-kernel steps read [in, out] best)
        self.kernels = mimi_cuda.MimiKernels(mimi, kernels.mimi_parts) if kernels.mimi else None
        self._kernel_ok: dict[int, bool] = {}
        if kernels.fused and self.kernels is None:
            rows_layout(mimi.encoder_transformer)
            rows_layout(mimi.decoder_transformer)
        mx.eval([t for cb in _codebooks(mimi) for t in cb.table])
        # per direction two graphs: before the transformer caches are full (masked), and after
        # (causal, no mask array: the fused attention kernel); the second is traced when needed
        self._encode: dict[bool, Callable[..., Any]] = {
            full: mx.compile(partial(self._encode_impl, full=full)) for full in (False, True)
        }
        self._decode: dict[bool, Callable[..., Any]] = {
            full: mx.compile(partial(self._decode_impl, full=full)) for full in (False, True)
        }
        self._shapes: dict[int, tuple[Shapes, Shapes]] = {}  # batch -> (enc, dec) carry shapes
        self.traces = 0  # how many times a graph was traced (the bodies run only when tracing)
        self._prepared: set[int] = set()  # batch sizes whose later graphs `prepare` built

    @property
    def cfg(self) -> Any:
        return self.mimi.cfg

    @property
    def num_codebooks(self) -> int:
        return self.mimi.num_codebooks

    @property
    def frame_size(self) -> int:
        return self.mimi.frame_size

    def make_state(self, batch: int) -> MimiState:
        return MimiState(batch)

    def encode_step(self, pcm: mx.array, state: MimiState) -> mx.array:
        """One frame: pcm [B, 1, 1920] -> codes [B, K, 1]; `state` advances in place."""
        state.check_frame(pcm, self.frame_size)
        b, _, n = pcm.shape
        enc_shapes, _ = self._carry_shapes(b)
        state.enc = _fixed(state.enc, enc_shapes)
        x = pcm.reshape(b, n, 1).astype(mx.float32)
        if self._use_kernels(b):
            codes, state.enc = self.kernels.encode(x, state.enc, state.enc_offset)  # type: ignore[union-attr]
        else:
            off = mx.array(state.enc_offset, dtype=mx.int32)
            codes, state.enc = self._encode[self._full(state.enc_offset)](x, state.enc, off)
        state.enc_offset += self.cfg.downsample_stride
        return codes

    def decode_step(self, codes: mx.array, state: MimiState) -> mx.array:
        """One frame: codes [B, K, 1] -> pcm [B, 1, 1920]; `state` advances in place."""
        state.check_codes(codes)
        b = codes.shape[0]
        _, dec_shapes = self._carry_shapes(b)
        state.dec = _fixed(state.dec, dec_shapes)
        codes = codes.astype(mx.int32)
        if self._use_kernels(b):
            pcm, state.dec = self.kernels.decode(codes, state.dec, state.dec_offset)  # type: ignore[union-attr]
            pcm = pcm.reshape(b, 1, -1)
        else:
            off = mx.array(state.dec_offset, dtype=mx.int32)
            pcm, state.dec = self._decode[self._full(state.dec_offset)](codes, state.dec, off)
        state.dec_offset += self.cfg.downsample_stride
        return pcm

    def prepare(self, batch: int) -> int:
        """Trace and run once the two graphs a stream of `batch` reaches only later (encode and
        decode with full transformer caches, from 20 s in), on scratch carries, so that no step
        waits for their compile. The one-kernel steps need none. Returns the graphs run."""
        if self._use_kernels(batch) or batch in self._prepared:
            return 0
        enc_shapes, dec_shapes = self._carry_shapes(batch)
        off = mx.array(self.cfg.context, dtype=mx.int32)  # a position with every cache slot real
        x, codes = self._scratch_frame(batch, self.num_codebooks)
        mx.eval(
            self._encode[True](x, _scratch(enc_shapes), off),
            self._decode[True](codes, _scratch(dec_shapes), off),
        )
        self._prepared.add(batch)
        return 2

    def build_lazily(self, batch: int, codebooks: int) -> None:
        """Build, never evaluate, every step a stream of `batch` runs (decoding `codebooks`), on
        scratch carries and uncompiled: inside `nn.cuda.compiling_ahead` this compiles the CUDA
        kernels those steps launch. No trace is cached, no state changes."""
        enc_shapes, dec_shapes = self._carry_shapes(batch)
        x, codes = self._scratch_frame(batch, codebooks)
        if self._use_kernels(batch):
            last = dict(self.kernels.last)  # type: ignore[union-attr]
            self.kernels.encode(x, _scratch(enc_shapes), 0)  # type: ignore[union-attr]
            self.kernels.decode(codes, _scratch(dec_shapes), 0)  # type: ignore[union-attr]
            self.kernels.last = last  # type: ignore[union-attr]  # the real steps' stage timers
            return
        traces = self.traces
        for full in (False, True):
            off = mx.array(self.cfg.context if full else 0, dtype=mx.int32)
            self._encode_impl(x, _scratch(enc_shapes), off, full)
            self._decode_impl(codes, _scratch(dec_shapes), off, full)
        self.traces = traces  # built, not traced

    def run_placeholders(self, batch: int, codebooks: int) -> list[mx.array]:
        """The outputs (lazy) of the encode and decode graphs of a stream of `batch` that is
        filling its caches, compiled as the steps compile them but in throwaway `mx.compile`s, on
        scratch carries (`CompiledStep.run_placeholders` says why); [] for the one-kernel steps."""
        if self._use_kernels(batch):
            return []
        enc_shapes, dec_shapes = self._carry_shapes(batch)
        off = mx.array(0, dtype=mx.int32)
        x, codes = self._scratch_frame(batch, codebooks)
        traces = self.traces
        encode = mx.compile(partial(self._encode_impl, full=False))
        decode = mx.compile(partial(self._decode_impl, full=False))
        outs = (encode(x, _scratch(enc_shapes), off), decode(codes, _scratch(dec_shapes), off))
        out = [a for _, a in tree_flatten(outs) if isinstance(a, mx.array)]
        self.traces = traces  # not the engine's traces
        return out

    def _scratch_frame(self, batch: int, codebooks: int) -> tuple[mx.array, mx.array]:
        """(pcm [B, 1920, 1] float32, codes [B, codebooks, 1] int32) of zeros: one frame's step inputs."""
        x = mx.zeros((batch, self.frame_size, 1), dtype=mx.float32)
        return x, mx.zeros((batch, codebooks, 1), dtype=mx.int32)

    def _use_kernels(self, batch: int) -> bool:
        """The one-kernel steps serve this batch (`Kernels.mimi`, CUDA, supported)."""
        if self.kernels is None:
            return False
        ok = self._kernel_ok.get(batch)
        if ok is None:
            ok = self._kernel_ok[batch] = mimi_cuda.sm_count() is not None and mimi_cuda.covers(
                self.mimi, batch
            )
        return ok

    def _full(self, offset: int) -> bool:
        """After this step's write, every cache slot holds a real position."""
        return offset + self.cfg.downsample_stride >= self.cfg.context

    # ---- traced bodies -------------------------------------------------------------------
    def _encode_impl(self, x: mx.array, enc: dict[str, mx.array], offset: mx.array, full: bool) -> tuple:
        # x [B, 1920, 1], offset scalar int32 (25 Hz steps seen) -> codes [B, K, 1], new carries
        self.traces += 1
        m = self.mimi
        enc = dict(enc)
        conv, fk = self.policy.conv, self.policy.fused
        emb = m.encoder(x, enc, conv_kernel=conv)  # [B, 2, D]
        emb = m.encoder_transformer.step_fixed(emb, enc, offset, "transformer", full, fk)
        prev = enc["downsample"]  # [B, pad, D]; a fresh stream replicates its first latent
        enc["downsample"] = mx.where(offset == 0, mx.repeat(emb[:, :1], prev.shape[1], axis=1), prev)
        emb = m.downsample(emb, enc, "downsample", conv_kernel=conv)  # [B, 1, D]
        return m.quantizer.encode(emb, m.num_codebooks), enc

    def _decode_impl(self, codes: mx.array, dec: dict[str, mx.array], offset: mx.array, full: bool) -> tuple:
        # codes [B, K, 1] int32 -> pcm [B, 1, 1920], new carries
        self.traces += 1
        m = self.mimi
        dec = dict(dec)
        b = codes.shape[0]
        emb = m.quantizer.decode(codes)  # [B, 1, D]
        emb = m.upsample(emb, dec, "upsample")  # [B, 2, D]
        emb = m.decoder_transformer.step_fixed(emb, dec, offset, "transformer", full, self.policy.fused)
        pcm = m.decoder(emb, dec, conv_kernel=self.policy.conv)  # [B, 1920, 1]
        return pcm.reshape(b, 1, -1), dec

    # ---- fixed-shape carries -------------------------------------------------------------
    def _carry_shapes(self, batch: int) -> tuple[Shapes, Shapes]:
        """Shapes of every carry after one eager step (a lazy graph: nothing is computed), with
        the transformer caches at their full `context` length."""
        if batch not in self._shapes:
            m = self.mimi
            probe = MimiState(batch)
            codes = m.encode_step(mx.zeros((batch, 1, m.frame_size)), probe, self.policy)
            m.decode_step(codes, probe, self.policy)
            ctx = m.cfg.context

            def full(d: dict[str, mx.array | None]) -> Shapes:
                out = {}
                for k, v in d.items():
                    assert v is not None
                    s = tuple(v.shape)
                    out[k] = (*s[:2], ctx, *s[3:]) if k.startswith("transformer.") else s
                return out

            self._shapes[batch] = (full(probe.enc), full(probe.dec))
        return self._shapes[batch]


def _scratch(shapes: Shapes) -> dict[str, mx.array]:
    """Zero fp32 carries of `shapes` (lazy: allocated only if evaluated)."""
    return {k: mx.zeros(s, dtype=mx.float32) for k, s in shapes.items()}


def _fixed(carries: dict[str, mx.array | None], shapes: Shapes) -> dict[str, mx.array]:
    """Carries with exactly `shapes`: missing ones zeros, short caches left-padded with zeros."""
    if carries.keys() == shapes.keys() and all(
        v is not None and tuple(v.shape) == shapes[k] for k, v in carries.items()
    ):
        return carries  # type: ignore[return-value]
    out = {}
    for k, shape in shapes.items():
        v = carries.get(k)
        if v is None:
            out[k] = mx.zeros(shape, dtype=mx.float32)
        elif tuple(v.shape) != shape:  # an eager cache not yet `context` long: [B, H, n, hd]
            pad = mx.zeros((*shape[:2], shape[2] - v.shape[2], *shape[3:]), dtype=v.dtype)
            out[k] = mx.concatenate([pad, v], axis=2)
        else:
            out[k] = v
    return out


def _codebooks(mimi: Mimi) -> list[Any]:
    q = mimi.quantizer
    return [*q.rvq_first.layers, *q.rvq_rest.layers]
