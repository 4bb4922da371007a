"""The CUDA source of the depformer-frame kernel (`lm.depformer_cuda`), over the shared header set
and `device/depformer_frame.cuh` (step attention, top-k selection, argmax): the constants of a
model shape, the set-up (`device/depformer_setup.cu`), then the step loop generated per weight
layout: the input product, each layer's four stages and the head, with a grid barrier between
stages, then sampling in every block (`device/depformer_sample.cu`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from rolekit.nn.cuda_text import device_code
from rolekit.nn.grid import CONTROL

THREADS = 256  # per block: 8 warps (255 registers a thread still fit one block per SM)

HEADER = device_code("rolekit.lm", "depformer_frame.cuh")  # after the shared header set
_SETUP = device_code("rolekit.lm", "depformer_setup.cu")  # shared memory, scratch layout
_SAMPLE = device_code("rolekit.lm", "depformer_sample.cu")  # every block draws every row's token


@dataclass(frozen=True)
class _Stage:
    """One weighted stage of a step: matrix `name` ([N (x2 gated), K] rows from `row0`), its input
    (`src`, normalized by `norm`) and the epilogue that stores each output."""

    name: str
    n: str
    k: str
    rows: str  # rows of the step's slice: N, or 2 N gated
    gate: bool
    src: str  # "h" or a scratch array
    norm: str  # norm weight input, "" for none
    epi: str
    attention_before: bool = False  # its input is the step attention (computed by every block)


_ADD_X = "[&](int b, int row, float v) { X[b * DD + row] = __ldcg(X + b * DD + row) + v; }"


def _stages(n_layers: int) -> list[_Stage]:
    """Every weighted stage of one depformer step, in order."""
    out = [
        _Stage(
            "win",
            "DD",
            "D",
            "DD",
            False,
            "h",
            "",
            "[&](int b, int row, float v) {\n"
            "      const int t = cur[b];\n"
            "      float e = 0.f;\n"
            "      if (t >= 0) e = static_cast<float>(s == 0 ? emb_t[(size_t)t * DD + row]\n"
            "                      : emb_a[((size_t)(s - 1) * (CARD + 1) + t) * DD + row]);\n"
            "      X[b * DD + row] = v + e; }",
        )
    ]
    for i in range(n_layers):
        out += [
            _Stage(
                f"qkv{i}",
                "3 * DD",
                "DD",
                "3 * DD",
                False,
                "X",
                f"n1_{i}",
                "[&](int b, int row, float v) {\n"
                "        if (row < DD) Q[b * DD + row] = v;\n"
                f"        else KV[(((size_t){i} * B + b) * NS + s) * 2 * DD + (row / DD - 1) * DD + row % DD] = v; }}",
            ),
            _Stage(f"o{i}", "DD", "DD", "DD", False, "A", "", _ADD_X, attention_before=True),
            _Stage(
                f"gi{i}",
                "F",
                "DD",
                "2 * F",
                True,
                "X",
                f"n2_{i}",
                "[&](int b, int row, float v) { G[b * F + row] = v; }",
            ),
            _Stage(f"go{i}", "DD", "F", "DD", False, "G", "", _ADD_X),
        ]
    out.append(
        _Stage(
            "head",
            "CARD",
            "DD",
            "CARD",
            False,
            "X",
            "",
            "[&](int b, int row, float v) { LG[((size_t)b * NS + s) * CARD + row] = v; }",
        )
    )
    return out


def _rows_call(st: _Stage, bits: int, group: int) -> str:
    g = "true" if st.gate else "false"
    row0 = f"(size_t)s * {st.rows}"
    if bits == 0:
        return f"rows_dense<{st.n}, {st.k}, B, {g}, NT>({st.name}, {row0}, xs, {st.epi});\n"
    return (
        f"rows_quant<{st.n}, {st.k}, B, {g}, NT, {bits}, {group}, 8>"
        f"({st.name}, {st.name}_s, {st.name}_b, {row0}, xs, {st.epi});\n"
    )


def _prefetch(st: _Stage, bits: int, group: int, step: str) -> str:
    """L2 prefetch of a stage's rows for step `step` (issued before a barrier, stages ahead)."""
    rows, first = f"(size_t)({st.rows})", f"(size_t)({step}) * ({st.rows})"
    if bits == 0:
        row_bytes = f"(size_t)({st.k}) * sizeof(*{st.name})"
        return f"prefetch_l2<NT>({st.name}, {first} * {row_bytes}, {rows} * {row_bytes});"
    words, groups = f"(size_t)({st.k}) / {32 // bits}", f"(size_t)({st.k}) / {group}"
    out = f"prefetch_l2<NT>({st.name}, {first} * {words} * 4, {rows} * {words} * 4);"
    for part in ("_s", "_b"):
        size = f"{groups} * sizeof(*{st.name}{part})"
        out += f" prefetch_l2<NT>({st.name}{part}, {first} * {size}, {rows} * {size});"
    return out


@cache
def source(
    shape: tuple[int, ...], bits: tuple[tuple[str, int, int], ...], eps: float, nt: int = THREADS
) -> str:
    """The kernel body for `shape` (D, DD, H, F, card, layers), `bits` (family, bits (0: dense),
    group) of each weight family, the norms' `eps` and `nt` threads a block."""
    layout = {n: (b, g) for n, b, g in bits}
    d, dd, h, f, card, n_layers = shape
    hd = dd // h
    out = [
        f"  constexpr int D = {d};\n  constexpr int DD = {dd};\n  constexpr int H = {h};\n",
        f"  constexpr int HD = {hd};\n  constexpr int F = {f};\n  constexpr int CARD = {card};\n",
        f"  constexpr int NT = {nt};\n  constexpr float EPS = {float(eps)!r}f;\n",
        f"  constexpr float SCALE = {hd**-0.5!r}f;\n  constexpr int CONTROL = {CONTROL};\n",
        _SETUP,
        "  for (int s = 0; s < NS; ++s) {\n",
    ]
    order = _stages(n_layers)
    cycle = [(x, "s") for x in order] + [(x, "s + 1") for x in order]
    asked: set[tuple[str, str]] = set()

    def barrier(j: int) -> str:
        """The grid barrier after the step's j-th stage; before it, L2 is asked for the weights of
        the first stage two or three ahead not yet asked for (past the head: the next step's
        first stages), so that they are in flight while the grid waits."""
        for x, step in cycle[j + 2 : j + 4]:
            if (x.name, step) not in asked:
                asked.add((x.name, step))
                b, g = layout[x.name]
                fetch = _prefetch(x, b, g, step)
                if step != "s":
                    fetch = f"if (s + 1 < NS) {{ {fetch} }}"
                return f"    {fetch}\n    grid_sync(bar, epoch);\n"
        return "    grid_sync(bar, epoch);\n"

    for j, st in enumerate(order):
        if st.src == "h":
            out.append(
                "    __syncthreads();\n"
                "    for (int i = threadIdx.x; i < B * D; i += NT) xs[i] = static_cast<float>(h[i]);\n"
                "    __syncthreads();\n"
            )
        elif st.attention_before:
            kv = f"KV + (size_t){int(st.name[1:])} * B * NS * 2 * DD"
            out.append(f"    block_attention<B, H, HD, DD, NS, NT>(Q, {kv}, xs, s, SCALE);\n")
        elif st.norm:
            out.append(f"    stage<{st.k}, B, NT, true>(xs, {st.src}, {st.norm}, EPS);\n")
        else:
            out.append(f"    stage<{st.k}, B, NT, false>(xs, {st.src}, (const float*)nullptr, 0.f);\n")
        b, g = layout[st.name]
        out.append("    " + _rows_call(st, b, g))
        out.append(barrier(j))
    out.append(_SAMPLE)
    out.append("  }\n")
    return "".join(out)
