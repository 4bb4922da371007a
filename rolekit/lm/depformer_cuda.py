"""The depformer's whole frame as ONE CUDA kernel: its 8 (or 16) steps, sampling included.

Why: on a CUDA GPU the frame is bound by kernel launches (each costs host time in MLX), and as
MLX ops the depformer launches about 50 per step (6 layers x 6, embedding, head, sampling), 8 or 16
steps a frame, for little GPU work each.

How: a persistent kernel, one block per SM (so every block is resident), runs the frame's stages
in order and waits for all blocks between two stages on a counter in global memory (a grid
barrier). For step s, with x the residual stream [B, Dd] in fp32:

    x = depformer_in[s] h + emb_s(token)                        (token: text, then codebook s-1)
    per layer: q | k | v = in_proj[s] rms1(x); k, v appended to the layer's step cache
               x += out_proj[s] a,  a = attention of q over steps 0..s (every block computes
                                        all of a into its shared memory: no barrier before)
               x += linear_out[s] (silu(u) * w),  u | w = linear_in[s] rms2(x)
    logits = linears[s] x;  token = given >= 0 ? given : sample(logits)

Every block samples every row itself (the same logits and noise give the same token), so the next
step starts without another barrier. Sampling is `lm.sampling.sample`'s rule: logits / T, the k
largest kept (the k-th value by radix select, here on the scaled values, there on the logits:
the same set unless the division rounds two logits to one value at the k-th place; ties kept), plus Gumbel noise that MLX draws from the
same per-row keys as the op path (the same random numbers), argmax (lowest index on ties); rows
with T <= 0 take the argmax of the logits. Inside, activations stay fp32 (the op path rounds them
to the activation dtype between ops), so tokens agree with the op path up to near-ties.

Weights are read where they are: `pack` stacks each weight family of the steps into one array
once and points the modules at views of it (no second copy; the op path reads the same numbers).
Where the kernel does not apply (`Kernels.depformer` off, not CUDA, batch > MAX_ROWS, a global
RNG, an unpacked model), `LM.depformer` runs the MLX ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from rolekit.lm.depformer_source import HEADER, THREADS, source
from rolekit.lm.sampling import SamplingParams, Scalar, split_keys
from rolekit.nn.cuda import sm_count
from rolekit.nn.grid import (
    CONTROL,
    Mat,
    family_inputs,
    mat_ok,
    persistent_kernel,
    shared_memory,
    stack_linears,
)
from rolekit.nn.multilinear import MultiLinear, QuantizedMultiLinear

MAX_ROWS = 4


_STATIC_SMEM = 12 * 1024  # upper bound of the kernel's static shared memory (sampling buffers)


@dataclass(frozen=True)
class Packed:
    dep_in: Mat
    head: Mat
    emb_text: mx.array  # [text_card + 1, Dd]
    emb_audio: mx.array  # [(dep_q - 1) * (card + 1), Dd]
    layers: tuple[tuple[mx.array, Mat, Mat, mx.array, Mat, Mat], ...]  # norm1, qkv, out, norm2, in, out
    eps: float


# ---- packing -------------------------------------------------------------------------------------


def _mat_of_multi(lin: nn.Module) -> Mat | None:
    if isinstance(lin, MultiLinear):
        return Mat(lin.weight, None, None, 0, 0)
    if isinstance(lin, QuantizedMultiLinear):
        return Mat(lin.weight, lin.scales, lin.biases, lin.bits, lin.group_size)
    return None


def _stack_embeddings(embs: list[nn.Embedding]) -> mx.array:
    n = embs[0].weight.shape[0]
    table = mx.concatenate([e.weight for e in embs])
    mx.eval(table)
    for i, e in enumerate(embs):
        e.weight = table[i * n : (i + 1) * n]
    return table


def pack(lm: Any) -> Packed | None:
    """Stack the depformer's per-step weights once and return the kernel's view of them; None
    (nothing changed) where the kernel cannot serve this model.

    Explicit side effect: the modules' weights are re-pointed at views of the stacks (no second
    copy), and the result is kept as `lm._dep_packed`, so packing again returns the same `Packed`.
    Weights assigned to the modules afterwards are not seen by the kernel: pack a fresh LM instead.
    Call outside of mx.compile (it evaluates)."""
    found = getattr(lm, "_dep_packed", None)
    if found is not None:
        return found
    cfg = lm.cfg
    if not _dims_ok(cfg) or any(isinstance(e, nn.QuantizedEmbedding) for e in lm.depformer_emb):
        return None
    if isinstance(lm.depformer_text_emb, nn.QuantizedEmbedding):
        return None
    dep_in = stack_linears(list(lm.depformer_in))
    head = stack_linears(list(lm.linears))
    layers = []
    for layer in lm["depformer"].layers:
        attn = layer.self_attn
        mats = (
            _mat_of_multi(attn.in_proj),
            _mat_of_multi(attn.out_proj),
            stack_linears([g.linear_in for g in layer.gating]),
            stack_linears([g.linear_out for g in layer.gating]),
        )
        if any(m is None for m in mats):
            return None
        layers.append((layer.norm1.weight, mats[0], mats[1], layer.norm2.weight, mats[2], mats[3]))
    if dep_in is None or head is None or not all(mat_ok(m) for m in (dep_in, head)):
        return None
    if not all(mat_ok(m) for lay in layers for m in (lay[1], lay[2], lay[4], lay[5])):
        return None
    packed = Packed(
        dep_in,
        head,
        lm.depformer_text_emb.weight,
        _stack_embeddings(list(lm.depformer_emb)),
        tuple(layers),
        float(lm["depformer"].layers[0].norm1.eps),
    )
    lm._dep_packed = packed
    return packed


def _dims_ok(cfg: Any) -> bool:
    dd, f, d = cfg.depformer_dim, cfg.depformer_hidden, cfg.dim
    hd = dd // cfg.depformer_num_heads
    return dd % cfg.depformer_num_heads == 0 and hd % 32 == 0 and all(k % 64 == 0 for k in (dd, f, d))


# ---- what it covers -----------------------------------------------------------------------------


def covers(lm: Any, hidden: mx.array, params: SamplingParams, key: mx.array | None, steps: int) -> bool:
    """The kernel can serve this call (the caller's `Kernels.depformer` chose it): packed model, a
    CUDA device, 1..MAX_ROWS rows, per-row keys or greedy."""
    if getattr(lm, "_dep_packed", None) is None:
        return False
    b = hidden.shape[0]
    if not 1 <= b <= MAX_ROWS or hidden.dtype not in (mx.bfloat16, mx.float16, mx.float32):
        return False
    if not params.greedy and (key is None or key.ndim != 2):
        return False  # the op path's global RNG / single key draws by categorical, not Gumbel
    return 1 <= steps <= lm.cfg.dep_q and sm_count() is not None


# ---- the call ------------------------------------------------------------------------------------


def launch(
    lm: Any,
    hidden: mx.array,
    text: mx.array,
    given: mx.array,
    params: SamplingParams,
    key: mx.array | None,
    steps: int,
    threads: int = THREADS,
) -> tuple[mx.array, mx.array]:
    """hidden [B, D], text [B], given [B, >= steps] (-1 = sample) -> (tokens [B, steps] int32,
    scratch): the scratch holds every step's logits (`logits_of`) and the barrier's flag.
    `threads`: a block's threads (a multiple of 32, <= 1024, under launch bounds)."""
    packed: Packed = lm._dep_packed
    cfg = lm.cfg
    b = hidden.shape[0]
    greedy = params.greedy
    card = cfg.card
    if greedy:
        noise = mx.zeros((1,), dtype=mx.float32)
    else:
        noise = step_noise(key, steps, card)  # [B, steps, card]
    temp = _rows(params.audio_temperature, b, mx.float32)
    topk = _rows(params.audio_top_k, b, mx.int32)
    names = ["h", "text", "given", "noise", "temp", "topk"]
    inputs = [
        hidden.reshape(b, cfg.dim),
        text.astype(mx.int32).reshape(b),
        mx.contiguous(given[:, :steps].astype(mx.int32)),
        noise,
        temp,
        topk,
    ]
    mats: list[tuple[str, Mat]] = [("win", packed.dep_in)]
    norms: list[tuple[str, mx.array]] = []
    for i, (n1, qkv, out, n2, lin_in, lin_out) in enumerate(packed.layers):
        norms += [(f"n1_{i}", n1), (f"n2_{i}", n2)]
        mats += [(f"qkv{i}", qkv), (f"o{i}", out), (f"gi{i}", lin_in), (f"go{i}", lin_out)]
    mats.append(("head", packed.head))
    names += ["emb_t", "emb_a"]
    inputs += [packed.emb_text, packed.emb_audio]
    for name, arr in norms:
        names.append(name)
        inputs.append(arr)
    weight_names, weights, bits = family_inputs(mats)
    names += weight_names
    inputs += weights
    shape = _shape_key(cfg)
    layout = _Layout(shape, b, steps)
    kmax = max(cfg.dim, cfg.depformer_hidden, cfg.depformer_dim)
    smem = b * kmax * 4  # the stage inputs
    smem = shared_memory(smem, _STATIC_SMEM)
    nt = threads
    kernel = _kernel(tuple(names), shape, bits, packed.eps, smem, nt)
    blocks = sm_count() or 1
    tokens, scratch = kernel(
        inputs=inputs,
        template=[("T", hidden.dtype), ("B", b), ("NS", steps), ("GREEDY", bool(greedy))],
        grid=(blocks * nt, 1, 1),
        threadgroup=(nt, 1, 1),
        output_shapes=[(b, steps), (layout.size,)],
        output_dtypes=[mx.int32, mx.float32],
        init_value=0,
    )
    return tokens, scratch


def _kernel(
    names: tuple[str, ...],
    shape: tuple[int, ...],
    bits: tuple[tuple[str, int, int], ...],
    eps: float,
    smem: int,
    nt: int,
) -> Any:
    """The kernel of these inputs, model shape and weight layout (built once: `persistent_kernel`)."""
    return persistent_kernel(
        "depformer", names, ("tokens", "ws"), source(shape, bits, eps, nt), HEADER, nt, smem
    )


def step_noise(key: mx.array, steps: int, card: int) -> mx.array:
    """[B, steps, card] Gumbel noise: step k of row b from the op path's key for (b, k), so the
    kernel draws the same random numbers as `lm.sampling.sample` does step by step."""
    keys = mx.stack(split_keys(key, steps), axis=1)  # [B, steps, 2]
    draw = mx.vmap(mx.vmap(lambda k: mx.random.gumbel(shape=(card,), key=k)))
    return draw(keys)


def _rows(value: Scalar, b: int, dtype: mx.Dtype) -> mx.array:
    return mx.broadcast_to(mx.array(value).astype(dtype).reshape(-1), (b,))


class _Layout:
    """Offsets (in floats) of the kernel's fp32 scratch: control, x, q, attention, gate, logits
    [B, NS, card], step caches [L, B, NS, 2, Dd]; `shape` as `_shape_key` gives it (the dims the
    kernel source is written for)."""

    def __init__(self, shape: tuple[int, ...], b: int, steps: int) -> None:
        _, dd, _, f, card, n_layers = shape
        self.logits = CONTROL + 3 * b * dd + b * f
        self.kv = self.logits + b * steps * card
        self.size = self.kv + n_layers * b * steps * 2 * dd


def logits_of(lm: Any, scratch: mx.array, b: int, steps: int) -> mx.array:
    """Every step's logits [B, steps, card] fp32 from a `launch` scratch."""
    start = _Layout(_shape_key(lm.cfg), b, steps).logits
    return scratch[start : start + b * steps * lm.cfg.card].reshape(b, steps, lm.cfg.card)


def _shape_key(cfg: Any) -> tuple[int, ...]:
    return (
        cfg.dim,
        cfg.depformer_dim,
        cfg.depformer_num_heads,
        cfg.depformer_hidden,
        cfg.card,
        cfg.depformer_num_layers,
    )
