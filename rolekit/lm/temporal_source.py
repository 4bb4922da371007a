"""The CUDA source of the temporal-step kernel (`lm.temporal_cuda`), over the shared header set
(`nn.cuda_text.shared_header`: ring attention stages, staged products, grid barrier): the constants of
a model shape, weight layout and `TemporalTuning`, the set-up (`device/temporal_setup.cu`), then
the layer loop generated per layout: the five stages (qkv, attention, out, gate, down) with a grid
barrier after each, L2 prefetches of the next product's rows, and block 0's timer stamps."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from rolekit.nn.cuda_text import device_code
from rolekit.nn.grid import CONTROL
from rolekit.nn.kernels import TemporalTuning

Tuning = TemporalTuning
PROBES = (
    6  # attention stamps a layer (Tuning.probe): item start, rope done, synced, slots, warp / block merge
)
_LOG2E = 1.4426950408889634
_SETUP = device_code("rolekit.lm", "temporal_setup.cu")  # shared memory, scratch layout, X
FAMILIES = ("wq", "wo", "wi", "wd")  # in_proj, out_proj, gating linear_in, gating linear_out


@dataclass(frozen=True)
class Pipeline:
    """How the kernel's quantized products read their weights: `stages` slots of each warp's
    cp.async ring (`nn.grid.rows_async`; 0: the register path `rows_quant`), the values of one
    lane's 16 bytes (`lane_values`), the floats of the chunk sums and the words of a ring slot, and the
    dynamic shared memory in all (stage input [B, max(D, F)] fp32, chunk sums, rings)."""

    stages: int
    lane_values: int
    sums: int
    slot_words: int
    smem: int


def _rows_call(
    name: str,
    n: str,
    k: str,
    gate: bool,
    row0: str,
    epi: str,
    bits: int,
    group: int,
    pairs: bool = False,
    stages: int = 0,
) -> str:
    g = "true" if gate else "false"
    if stages and bits:
        return (
            f"    rows_async<{n}, {k}, B, {g}, NT, {bits}, {group}, SLOTS>"
            f"({name}, {name}_s, {name}_b, {row0}, xs, sums, ring, {epi});\n"
        )
    paired = ", true" if pairs and not gate else ""  # two output rows a warp at a time
    if bits == 0:
        return f"    rows_dense<{n}, {k}, B, {g}, NT{paired}>({name}, {row0}, xs, {epi});\n"
    return (
        f"    rows_quant<{n}, {k}, B, {g}, NT, {bits}, {group}, WORDS_IN_FLIGHT{paired}>"
        f"({name}, {name}_s, {name}_b, {row0}, xs, {epi});\n"
    )


def _prefetch(name: str, rows: str, k: str, first: str, bits: int, group: int, pairs: bool = False) -> str:
    """L2 prefetch of the first wave of rows (one per warp of the grid) of a family's slice
    (emitted under `if constexpr (PREFETCH)`); `pairs`: of each half (rows_*_pairs)."""
    if pairs:
        half = f"({rows}) / 2"
        return _prefetch(name, half, k, first, bits, group) + _prefetch(
            name, half, k, f"({first}) + {half}", bits, group
        )
    wave = f"(size_t)min((int)({rows}), (int)(gridDim.x * (NT / 32)))"
    if bits == 0:
        row_bytes = f"(size_t)({k}) * sizeof(*{name})"
        out = f"prefetch_l2<NT>({name}, (size_t)({first}) * {row_bytes}, {wave} * {row_bytes}); "
    else:
        words = f"(size_t)({k}) / {32 // bits}"
        groups = f"(size_t)({k}) / {group}"
        out = f"prefetch_l2<NT>({name}, (size_t)({first}) * {words} * 4, {wave} * {words} * 4); "
        for part in ("_s", "_b"):
            size = f"{groups} * sizeof(*{name}{part})"
            out += f"prefetch_l2<NT>({name}{part}, (size_t)({first}) * {size}, {wave} * {size}); "
    return f"    if constexpr (PREFETCH) {{ {out}}}\n"


def _barrier(k: str) -> str:
    """The grid barrier after stage k: block 0 stamps the time it finished its own share of the
    stage (1 + 2k) and the time every block had (2 + 2k)."""
    return f"    stamp(TM, 1 + 2 * ({k}));\n    grid_sync(bar, epoch);\n    stamp(TM, 2 + 2 * ({k}));\n"


@cache
def source(
    shape: tuple[int, ...],
    bits: tuple[tuple[str, int, int], ...],
    eps: float,
    tune: Tuning = Tuning(),
    plan: Pipeline = Pipeline(0, 0, 0, 0, 0),
) -> str:
    """The kernel body for `shape` (D, H, F, L, ring slots C, context, attended slots, splits, slots
    a split), `bits` (family, bits (0: dense), group) of each of FAMILIES and the norms' `eps`."""
    d, h, f, n_layers, cap, ctx, length, nsplit, chunk = shape
    st = plan.stages
    swz = "true" if st else "false"
    pairs = tune.pairs and not st
    hd = d // h
    kp = ", ".join(f"k{i}" for i in range(n_layers))
    vp = ", ".join(f"v{i}" for i in range(n_layers))
    out = [
        f"  constexpr int D = {d};\n  constexpr int H = {h};\n  constexpr int HD = {hd};\n",
        f"  constexpr int F = {f};\n  constexpr int L = {n_layers};\n  constexpr int C = {cap};\n",
        f"  constexpr int CTX = {ctx};\n  constexpr int LEN = {length};\n",
        f"  constexpr int NSPLIT = {nsplit};\n  constexpr int CHUNK = {chunk};\n",
        f"  constexpr int NT = {tune.threads};\n  constexpr int NW = NT / 32;\n",
        f"  constexpr int WORDS_IN_FLIGHT = {tune.words};\n  constexpr int SLOT_U = {tune.slot_passes};\n",
        f"  constexpr bool PREFETCH = {'true' if tune.prefetch else 'false'};\n",
        f"  constexpr bool PROBE = {'true' if tune.probe else 'false'};\n",
        f"  constexpr float EPS = {float(eps)!r}f;\n  constexpr int CONTROL = {CONTROL};\n",
        f"  const float QSCALE = {hd**-0.5 * _LOG2E!r}f;\n",
        f"  constexpr int SLOTS = {st};\n  constexpr bool SWZ = {swz};\n  constexpr int LANE_VALUES = {plan.lane_values or 32};\n",
        f"  constexpr int SUMS = {plan.sums};  // SLOTS > 0: floats of the chunk sums\n",
        f"  const T* const ring_keys[L] = {{{kp}}};\n  const T* const ring_values[L] = {{{vp}}};\n",
        _SETUP,
        "  for (int l = 0; l < L; ++l) {\n    stage_qkv_input(l);\n",
    ]
    layout = {n: (b, g) for n, b, g in bits}
    b_q, b_o, b_i, b_d = (layout[n] for n in FAMILIES)
    out.append(_rows_call("wq", "3 * D", "D", False, "(size_t)l * 3 * D", "store_qkv", *b_q, pairs, st))
    out.append(_prefetch("wo", "D", "D", "(size_t)l * D", *b_o, pairs))
    out.append(_barrier("5 * l"))
    out.append(
        "    ring_attention_stage<T, B, D, H, HD, C, CTX, LEN, NSPLIT, CHUNK, NT, SLOT_U>(QKV, kp[l], vp[l],\n"
        "        new_kv + (size_t)l * 2 * B * D, PM, PL, PO, p, meta + 1, rope, QSCALE, qs, kn, vn, rm, rl, ro,\n"
        f"        PROBE ? TM + 2 * (10 * L + 2) + {2 * PROBES} * l : nullptr);\n"
        + _barrier("5 * l + 1")
        + "    ring_combine_stage<B, D, H, HD, NSPLIT, NT, SWZ>(PM, PL, PO, xs, cw);\n"
        + "    if constexpr (SLOTS > 0) chunk_sums<B, D, NT, LANE_VALUES>(xs, sums);\n"
    )
    out.append(_rows_call("wo", "D", "D", False, "(size_t)l * D", "add_to_x", *b_o, pairs, st))
    out.append(_prefetch("wi", "F", "D", "(size_t)l * 2 * F", *b_i))
    out.append(_barrier("5 * l + 2"))
    out.append("    stage<D, B, NT, true, SWZ>(xs, X, n2 + (size_t)l * D, EPS);\n")
    out.append("    if constexpr (SLOTS > 0) chunk_sums<B, D, NT, LANE_VALUES>(xs, sums);\n")
    out.append(_rows_call("wi", "F", "D", True, "(size_t)l * 2 * F", "store_gated", *b_i, False, st))
    out.append(_prefetch("wd", "D", "F", "(size_t)l * D", *b_d, pairs))
    out.append(_barrier("5 * l + 3"))
    out.append("    stage<F, B, NT, false, SWZ>(xs, G, (const float*)nullptr, 0.f);\n")
    out.append("    if constexpr (SLOTS > 0) chunk_sums<B, F, NT, LANE_VALUES>(xs, sums);\n")
    out.append(_rows_call("wd", "D", "F", False, "(size_t)l * D", "add_to_x", *b_d, pairs, st))
    out.append(
        "    if (l + 1 < L) {\n"
        + _prefetch("wq", "3 * D", "D", "(size_t)(l + 1) * 3 * D", *b_q, pairs)
        + "    }\n"
    )
    out.append(_barrier("5 * l + 4") + "  }\n")
    out.append(
        "  for (int i = blockIdx.x * NT + threadIdx.x; i < B * D; i += gridDim.x * NT)\n"
        "    hidden[i] = static_cast<T>(__ldcg(X + i));\n"
        "  stamp(TM, 10 * L + 1);\n"
    )
    return "".join(out)
