"""`Kernels`: which of rolekit's own CUDA kernels run, chosen once and handed down.

The policy is a frozen value: `Kernels.for_device()` picks it from the device (every default kernel on
a CUDA GPU, none elsewhere) plus explicit overrides (the CLI's `--kernels`, a config, a test). The
engine and the codec step receive it; each kernel's dispatcher takes its field (`use_kernel`) and
decides only on shapes and dtypes. Nothing reads the environment while a graph is traced.

Each field names one kernel family and the module that owns it:
- `fused`: `nn.fused` (norm + product + gate / residual blocks of the temporal, depformer and Mimi
  transformer layers),
- `ring_attention`: `nn.ring_attention` (masked one-position attention over the ring before it wraps),
- `temporal` (+ `temporal_tuning`): `lm.temporal_cuda` (all temporal layers of a step as one kernel),
- `depformer` (+ `depformer_threads`): `lm.depformer_cuda` (a frame's depformer, sampling included),
- `embed`: `nn.embed_cuda` (a step's summed token embeddings),
- `conv`: `codec.conv_cuda` (a streaming conv's carry, ELU and windows),
- `mimi` (+ `mimi_parts`): `codec.mimi_cuda` (Mimi's encode step and decode step as one kernel
  each),
- `token_ring`: `engine.ring_cuda` (a step's token-ring bookkeeping: input side and commit side as
  one kernel each),
- `qmv`: `nn.qmv` (few-row q4 / q8 products; off by default, see that module),
- `qmm`: `nn.qmm` (q4 products of batched rows on tensor cores, in the temporal and depformer
  blocks).

One field picks among MLX's own ops instead: `dense_prompt` (`Kernels.prompt_blocks`, on by default
on CUDA) runs a prompt pass's quantized products as a dequantized weight times the rows.

The block products of the temporal, depformer and Mimi layers take the three product fields
(`fused`, `qmm`, `qmv`) as one `Blocks` value (`Kernels.blocks`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rolekit.errors import ConfigError

OPTION = "--kernels"


class Blocks(enum.IntFlag):
    """Which kernels serve a layer's block products (`nn.fused`): FUSED (`Kernels.fused`, up to
    `nn.fused.MAX_ROWS` rows), QMM (`Kernels.qmm`, q4 weights at `nn.qmm.MIN_ROWS`..`MAX_ROWS`
    rows), QMV (`Kernels.qmv`, q4 / q8 weights at one row where FUSED does not serve);
    QMM_WHOLE: QMM's products each over the whole k range (`Kernels.qmm_split` off: one launch, no
    partial sums for MLX to add). DEQUANT: a quantized product of any row count as MLX's dense
    product with the dequantized weight (`Kernels.dense_prompt`; prompt passes only). True means
    FUSED, False NONE."""

    NONE = 0
    FUSED = 1
    QMM = 2
    QMV = 4
    QMM_WHOLE = 8
    DEQUANT = 16


@dataclass(frozen=True)
class TemporalTuning:
    """Shape of the generated temporal kernel (`lm.temporal_cuda`): threads per block (16 warps
    under launch bounds, so a thread keeps <= 128 registers), `stages` slots of each warp's cp.async
    weight ring in the q4 / q8 products (`nn.grid.rows_async`; 0: the register path `rows_quant`
    with `words` packed words in flight per lane and `pairs`), `slot_passes` in flight per warp in
    the attention, `prefetch` of the next product's first rows into L2 before each barrier, and
    `probe` (block 0 stamps the attention's phases per layer)."""

    threads: int = 512
    words: int = 8
    slot_passes: int = 4
    prefetch: bool = True
    pairs: bool = True  # register path: the non-gated products take two rows per warp at a time
    probe: bool = False
    stages: int = 8


@dataclass(frozen=True)
class Kernels:
    """Which kernels run (all off: the MLX op path everywhere). Build with `for_device`."""

    fused: bool = False
    ring_attention: bool = False
    temporal: bool = False
    depformer: bool = False
    embed: bool = False
    conv: bool = False
    mimi: bool = False
    token_ring: bool = False
    qmv: bool = False
    qmm: bool = False
    temporal_tuning: TemporalTuning = field(default_factory=TemporalTuning)
    depformer_threads: int = 256  # a multiple of 32, up to 1024 (8 warps fit one block per SM)
    # each Mimi step kernel's stages in this many parts, compiled at once and linked (`nn.jitlink`):
    # a fresh machine waits for the largest part, not the whole kernel; 1: one piece, no calls
    mimi_parts: int = 4
    # tuning: `nn.qmm` cuts a product's k range over blocks to fill the GPU (partial sums added by
    # MLX: a second launch); False: one block per 128 columns, one launch (`Blocks.QMM_WHOLE`)
    qmm_split: bool = True
    # MLX ops, not a kernel: a prompt pass's q4 / q8 products dequantize the weight and run MLX's
    # dense product (cuBLAS, built ahead of time) instead of MLX's quantized GEMM, which NVRTC
    # compiles on a machine's first prompt pass; `prompt_blocks`. On by default on CUDA.
    dense_prompt: bool = False

    @classmethod
    def for_device(cls, device: Any = None, overrides: Mapping[str, Any] | str | None = None) -> Kernels:
        """The policy for `device` (default: MLX's default device): on a CUDA GPU every kernel but
        the opt-in ones (`OPT_IN`), elsewhere none; then `overrides` (a mapping of field -> value, or a `--kernels`
        string such as "fused=0,depformer_threads=512,temporal_tuning=threads=256/stages=0").
        Turning a kernel on off CUDA is a `ConfigError`."""
        on = _on_cuda(device)
        base = cls(**{f: on for f in KERNEL_FIELDS if f not in OPT_IN}, dense_prompt=on)
        values = parse(overrides) if isinstance(overrides, str) else dict(overrides or {})
        policy = base.with_values(values)
        if not on:
            wrong = [f for f in KERNEL_FIELDS if getattr(policy, f)]
            if wrong:
                raise ConfigError(f"{OPTION} {', '.join(wrong)}: rolekit's kernels need a CUDA GPU")
        return policy

    def with_values(self, values: Mapping[str, Any]) -> Kernels:
        """A copy with fields replaced (booleans, ints, a `TemporalTuning` or its string form)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{OPTION}: unknown kernel {unknown[0]!r} (one of {', '.join(sorted(known))})")
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name == "temporal_tuning":
                out[name] = value if isinstance(value, TemporalTuning) else _tuning(str(value))
            elif name == "depformer_threads":
                out[name] = _threads(value)
            elif name == "mimi_parts":
                out[name] = _parts(value)
            else:
                out[name] = _flag(name, value)
        return replace(self, **out)

    @property
    def blocks(self) -> Blocks:
        """The block-product kernels as one value (what the layers' `nn.fused` calls take)."""
        out = Blocks.NONE
        for flag, on in ((Blocks.FUSED, self.fused), (Blocks.QMM, self.qmm), (Blocks.QMV, self.qmv)):
            if on:
                out |= flag
        if self.qmm and not self.qmm_split:
            out |= Blocks.QMM_WHOLE
        return out

    @property
    def prompt_blocks(self) -> Blocks:
        """What a prompt pass's block products take (`LM.temporal(..., blocks=)`): DEQUANT or NONE."""
        return Blocks.DEQUANT if self.dense_prompt else Blocks.NONE

    @property
    def any(self) -> bool:
        """Some kernel runs."""
        return any(getattr(self, f) for f in KERNEL_FIELDS)


TUNING_FLAGS = ("qmm_split", "dense_prompt")  # booleans that tune a kernel or pick MLX ops, not kernels
KERNEL_FIELDS = tuple(
    f.name for f in dataclasses.fields(Kernels) if f.type in ("bool", bool) and f.name not in TUNING_FLAGS
)
OPT_IN = ("qmv",)  # off unless asked for (`--kernels qmv=1`)
OPS = Kernels()  # the MLX op path everywhere


def parse(spec: str) -> dict[str, Any]:
    """ "a=1,b=0,temporal_tuning=threads=256/stages=0" -> {"a": "1", ...} (values checked later)."""
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{OPTION}: expected NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"{OPTION} {name}={value!r}: expected 0 or 1")


def _threads(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not (32 <= n <= 1024 and n % 32 == 0):
        raise ConfigError(f"{OPTION} depformer_threads={value!r}: a multiple of 32 from 32 to 1024")
    return n


def _parts(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= 16:
        raise ConfigError(f"{OPTION} mimi_parts={value!r}: an integer from 1 to 16")
    return n


def _tuning(spec: str) -> TemporalTuning:
    """ "threads=256/stages=0/words=16" -> TemporalTuning (unnamed fields keep their defaults)."""
    base = TemporalTuning()
    known = {f.name: f for f in fields(base)}
    values: dict[str, Any] = {}
    for item in filter(None, spec.replace(",", "/").split("/")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ConfigError(
                f"{OPTION} temporal_tuning: unknown field in {item!r} (one of {', '.join(known)})"
            )
        if isinstance(getattr(base, key), bool):
            values[key] = _flag(f"temporal_tuning.{key}", raw)
        else:
            try:
                values[key] = int(raw)
            except ValueError:
                raise ConfigError(f"{OPTION} temporal_tuning.{key}={raw!r}: expected an integer") from None
    return replace(base, **values)


def _on_cuda(device: Any) -> bool:
    import mlx.core as mx

    from rolekit.nn.cuda import cuda_available

    device = mx.default_device() if device is None else device
    return device == mx.gpu and cuda_available()
