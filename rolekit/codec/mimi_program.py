"""Mimi's one-kernel step as data: a `Program` is a list of stages separated by grid barriers,
each a list of jobs (`Mat`: one matrix product with its input reader `XSpec` and output `OSpec`;
`Carry`, `TrSide`, `Copy`, `Upsample`, `Shift`, `Attention`, `Search`, `Zero`), plus the kernel's
inputs by name (weights, `ci_*` carries) and outputs (`co_*` next carries, `codes` / `pcm`, the
scratch `S`). Built by `codec.mimi_builder`, run with numpy by `codec.mimi_reference` (the
contract), turned into CUDA by `codec.mimi_emit`, launched by `codec.mimi_cuda`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

THREADS = 256
MAX_BATCH = 16  # shared-memory bounds of the RVQ stages
MAX_BLOCKS = 1024  # blocks the RVQ search's minima have room for
XS_FLOATS = 8192  # shared memory for a product's staged input (32 KB, dynamic)


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


def describe(stage: Stage) -> str:
    """A stage's jobs in a few words (products as name:rows x r -> n)."""
    parts = []
    for j in stage.jobs:
        if isinstance(j, Mat):
            parts.append(f"mat:{j.layout}:{j.x.to}x{j.r}->{j.n}{':' + j.x.f if j.x.f != 'none' else ''}")
        else:
            parts.append(type(j).__name__.lower())
    return " ".join(parts)
