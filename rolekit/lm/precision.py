"""The load-time precision policy: which activation dtype and which weight format a model runs in.

One place decides, from the device and the user's `--dtype` / `--quant`, so that every command
loads the same way and nothing is cast behind the user's back:

- activations: bf16 on CUDA and Metal, fp32 on the CPU (`--dtype auto`), or what `--dtype` names;
- stored weights are never widened to fp32 on a GPU; on the CPU, 16-bit embeddings and linears
  stay 16-bit (cast at use, so fp32 activations need no fp32 copy of 16 GB of weights), and so
  does the ring KV cache of a quantized checkpoint (`cache_dtype`);
- a quantized checkpoint's embeddings and heads are quantized to 8 bits at load off CUDA
  (`table_bits`);
- quantization scales / biases keep their stored dtype, except that with 16-bit activations of
  the other 16-bit kind they take the activation dtype (bf16 x fp16 would promote every quantized
  product's output to fp32);
- `--quant auto` picks the weight format of NVIDIA's bf16 checkpoint from the device, its memory
  and the batch, and says why (`QuantChoice.reason`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlx.core as mx

from rolekit.errors import ConfigError

DTYPES = {"bf16": mx.bfloat16, "fp16": mx.float16, "fp32": mx.float32}
DTYPE_CHOICES = ("auto", *DTYPES)
QUANT_CHOICES = ("auto", "bf16", "q8", "q4")
QUANT_BITS = {"q4": 4, "q8": 8}
TABLE_BITS = 8  # embeddings and heads of a quantized checkpoint off CUDA (`table_bits`)
GB = 1e9
# Peak memory of PersonaPlex 7B loaded and stepped (weights + a step's temporaries), per format.
NEEDS_GB = {"bf16": 18.0, "q8": 10.5, "q4": 6.0}
# Above this many conversations at once, MLX's quantized GEMM is slower than bf16 (a GEMM, not a
# matrix-vector product): `auto` then prefers bf16 where it fits.
QUANT_MAX_BATCH = 4


def device_kind() -> str:
    """ "cuda", "metal" or "cpu": where MLX runs by default."""
    if mx.default_device() == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    return "cuda"


def dtype_name(dtype: mx.Dtype) -> str:
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))


def activation_dtype(requested: str = "auto", device: str | None = None) -> mx.Dtype:
    """`--dtype auto|bf16|fp16|fp32` -> the activation dtype (auto: bf16 on a GPU, fp32 on the CPU)."""
    if requested not in DTYPE_CHOICES:
        raise ConfigError(f"--dtype: must be one of {', '.join(DTYPE_CHOICES)}, got {requested!r}")
    if requested != "auto":
        return DTYPES[requested]
    return mx.float32 if (device or device_kind()) == "cpu" else mx.bfloat16


def weight_dtype(stored: mx.Dtype, activations: mx.Dtype, *, norm: bool = False) -> mx.Dtype:
    """The dtype a stored float weight is kept in for `activations` (see the module docstring).

    Norm weights (a few KB) take the activation dtype; on the CPU (fp32 activations), 16-bit
    tables and linears stay as stored; with 16-bit activations every float weight takes them."""
    if norm or activations != mx.float32:
        return activations
    return stored if stored in (mx.bfloat16, mx.float16) else activations


def cache_dtype(activations: mx.Dtype, stored: mx.Dtype, quantized: bool) -> mx.Dtype:
    """The temporal ring KV cache: in the activation dtype, except that fp32 activations over a
    quantized checkpoint with 16-bit tables keep it 16-bit (3000 frames x 32 layers of K and V:
    3.1 GB in fp32, 1.6 GB in bf16; attention reads it as fp32). An unquantized checkpoint keeps
    an fp32 cache under fp32 activations, so that it stays token-exact against fp32 references.
    `stored`: the embeddings' stored dtype."""
    if quantized and activations == mx.float32 and stored in (mx.bfloat16, mx.float16):
        return stored
    return activations


def table_bits(quantized: bool, device: str | None = None) -> int | None:
    """Bits the embeddings and output heads of a quantized checkpoint are kept in at load: 8
    (affine, group 64) on the CPU and Metal, where they are a sixth of a q4 7B's memory and the
    text head (32000 x 4096) would otherwise be promoted to fp32 at every step under fp32
    activations; None (as stored, 16-bit) on CUDA, whose embedding and depformer kernels read
    float tables, and for unquantized checkpoints (kept token-exact against their references)."""
    if not quantized or (device or device_kind()) == "cuda":
        return None
    return TABLE_BITS


def scales_dtype(stored: mx.Dtype, activations: mx.Dtype) -> mx.Dtype:
    """Quantization scales / biases: as stored, unless that would promote 16-bit activations."""
    if activations != mx.float32 and stored != activations:
        return activations
    return stored


def memory_gb(device: str | None = None) -> float:
    """Memory a model may use on `device`: the GPU's (CUDA / Metal working set) or available RAM."""
    device = device or device_kind()
    info = mx.device_info() if device != "cpu" else {}
    for key in ("max_recommended_working_set_size", "total_memory", "memory_size"):
        if info.get(key):
            return float(info[key]) / GB
    return _available_ram() / GB


def free_memory_bytes(device: str | None = None) -> float:
    """Bytes this process could still allocate on `device`: on a GPU whose MLX reports the card's
    free memory (`device_info()["free_memory"]`, CUDA: other processes' use included), that plus
    MLX's buffer cache (this process's to reuse); else the GPU's memory (`memory_gb`) less this
    process's active MLX memory; the available RAM on the CPU."""
    device = device or device_kind()
    if device == "cpu":
        return _available_ram()
    info = mx.device_info()
    if "free_memory" in info:
        return float(info["free_memory"]) + mx.get_cache_memory()
    return max(0.0, memory_gb(device) * GB - mx.get_active_memory())


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@dataclass(frozen=True)
class QuantChoice:
    quant: str  # bf16 | q8 | q4
    reason: str


def choose_quant(requested: str, device: str, memory: float, batch: int = 1) -> QuantChoice:
    """`--quant` for NVIDIA's bf16 checkpoint; `auto` decides from the device, memory (GB) and batch."""
    if requested not in QUANT_CHOICES:
        raise ConfigError(f"--quant: must be one of {', '.join(QUANT_CHOICES)}, got {requested!r}")
    if requested != "auto":
        return QuantChoice(requested, "as asked (--quant)")
    where = f"{device}, {memory:.0f} GB"
    if memory < NEEDS_GB["q8"]:
        return QuantChoice("q4", f"{where}: only q4 fits (q8 needs ~{NEEDS_GB['q8']:.0f} GB)")
    if device != "cpu" and batch > QUANT_MAX_BATCH and memory >= NEEDS_GB["bf16"] * 1.25:
        return QuantChoice(
            "bf16", f"{where}, {batch} conversations at once: bf16 products beat quantized ones there"
        )
    return QuantChoice(
        "q4",
        f"{where}, {batch} conversation(s): a step reads every weight once, q4 reads ~3.7x fewer bytes",
    )
