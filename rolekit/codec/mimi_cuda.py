"""Mimi's streaming encode step and decode step as ONE CUDA kernel each.

Why: on a CUDA GPU a Mimi frame is bound by the host, not the GPU: as MLX ops an encode or decode
step is a few hundred small launches, each costing host time. Here each direction is one launch
(`rolekit bench mimi` times both paths).

How: a persistent kernel, one block per SM, runs the step as a list of stages separated by grid
barriers (`nn/device/grid.cuh`'s, on a small counter array that the kernel keeps across calls).
The stages are generated from the `Mimi` modules (`encoder_program`, `decoder_program`):

- every product (convolution windows, transposed convolution, transformer linear, RVQ projection)
  is one matrix product `out[m, n] (+)= sum_r x(m, r) w(r, n)` (`mm_staged`): a block takes a few
  rows and a slice of r, stages x into shared memory with the reader's carry / window / ELU /
  GELU / LayerNorm applied once per element, and its warps take the columns; the sums go into
  zeroed fp32 scratch with atomics (a residual is added in place into the stream it belongs to).
  A stage's work is latency-bound (a grid barrier plus a few dependent loads), so loads are
  issued in batches ahead of their use;
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

from functools import cache
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.codec.mimi_builder import decoder_program, encoder_program
from rolekit.codec.mimi_emit import HEADER, Emit
from rolekit.codec.mimi_program import (
    MAX_BATCH,
    MAX_BLOCKS,
    THREADS,
    XS_FLOATS,
    Mat,
    Program,
    Stage,
    describe,
)
from rolekit.codec.mimi_reference import reference_step
from rolekit.nn import jitlink
from rolekit.nn.cuda import build_kernel, sm_count

__all__ = [
    "MAX_BATCH", "MAX_BLOCKS", "THREADS", "XS_FLOATS", "MimiKernels", "Program", "Stage", "Mat",
    "covers", "decoder_program", "describe", "encoder_program", "make_kernel", "reference_step",
]  # fmt: skip


def covers(mimi: Any, batch: int) -> bool:
    """The programs cover this Mimi at this batch (fp32 weights, no transformer projections); a
    CUDA device is the caller's condition (`Kernels.mimi`, `codec.compiled`)."""
    cfg = mimi.cfg
    if not 1 <= batch <= MAX_BATCH or cfg.d_model != cfg.dimension or cfg.channels != 1:
        return False
    if "input_proj" in mimi.encoder_transformer or cfg.d_model % cfg.num_heads:
        return False
    from mlx.utils import tree_flatten

    return all(v.dtype == mx.float32 for _, v in tree_flatten(mimi.parameters()))


# ---- the call -------------------------------------------------------------------------------------


class _Launch:
    """A program's kernel and its call layout, fixed once: where each input comes from ("weight":
    the array; "carry": the carry key; "io" / "off" / "bar": the step's own), output shapes and types."""

    def __init__(self, prog: Program, kind: str, parts: int = 1) -> None:
        self.prog, self.kind = prog, kind
        self.kernel = make_kernel(prog, kind, parts)
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
    """The two kernels of one Mimi: `encode` / `decode` a step from fixed-shape carries; `parts`:
    how many parts each kernel's stages are compiled in (`make_kernel`)."""

    def __init__(self, mimi: Any, parts: int = 1) -> None:
        self.mimi, self.parts = mimi, parts
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
            found = self._programs[key] = _Launch(prog, key[0], self.parts)
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


def make_kernel(prog: Program, kind: str, parts: int = 1) -> Any:
    """The compiled kernel of a program (cached by source); `kind` "enc" or "dec"; `parts` > 1:
    its stages in that many parts, compiled apart and linked (`nn.jitlink`) where nvJitLink is
    found, else inline."""
    names = (tuple(_input_names(prog, kind)), tuple(_output_names(prog)))
    emit = Emit(prog)
    if parts <= 1 or jitlink.library_path() is None:  # no linker: the one-piece kernel
        return _kernel(*names, emit.source())
    body, bodies = emit.split(parts)
    return _kernel(*names, body, tuple(bodies), tuple(d for d, _ in emit.part_params()))


def _input_names(prog: Program, kind: str) -> list[str]:
    return [*prog.inputs, "pcm" if kind == "enc" else "codes", "off", "bar"]


def _output_names(prog: Program) -> list[str]:
    return [*prog.outputs, "S"]


@cache
def _kernel(
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    source: str,
    parts: tuple[str, ...] = (),
    part_params: tuple[str, ...] = (),
) -> Any:
    # XS_FLOATS of staging, raised past 48 KB so that MLX lifts the block's shared-memory limit (the
    # static RVQ / attention buffers come on top)
    return build_kernel(
        "mimi",
        list(inputs),
        list(outputs),
        source,
        HEADER,
        shared_memory=max(XS_FLOATS * 4, 48004),
        parts=parts,
        part_params=part_params,
    )
