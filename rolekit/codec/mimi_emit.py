"""The CUDA source of a Mimi `Program`: Mimi's device code after the shared header set
(`device/mimi_step.cuh`: staged products, cache shifts, window attention, LayerNorm statistics;
`device/mimi_rvq.cuh`: the split RVQ search) and one generated kernel body per program, a block of
code per stage with a grid barrier between stages."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rolekit.codec.mimi_program import (
    MAX_BLOCKS,
    THREADS,
    XS_FLOATS,
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
from rolekit.nn.cuda_text import device_code

HEADER = device_code("rolekit.codec", "mimi_step.cuh") + device_code("rolekit.codec", "mimi_rvq.cuh")


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _lit(v: float) -> str:
    return f"{np.float32(v).item()!r}f"


class Emit:
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
            f"window_attention_stage<{self.p.b}, {t}, {a.heads}, {hd}, {a.context}, NT>({a.qkv.ptr()}, {a.cache_in[0]}, "
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
        """Search stage `job.index` of the split RVQ (`rvq_*` of device/mimi_rvq.cuh): pick the codes the
        last stage's candidates give (the first quantizer's after stage 0, the rest's after each),
        update the rest's residual, then scan this stage's tables for new candidates."""
        s = self.p.search
        b, qd, k, n_search = self.p.b, s["qd"], s["k"], s["n"]
        idx = job.index
        part = f"S + ZS + {s['partials']}"  # candidates [search stages, MAX_BLOCKS, 2, B, 2]
        per_stage = MAX_BLOCKS * 2 * b * 2
        out = ["{\n"]
        if idx == 0:
            out.append(
                f"  rvq_start<{b}, {qd}, NT>({s['rf'].ptr()}, {s['rr'].ptr()}, &rsf[0][0], &res[0][0]);\n"
            )
        else:
            kinds = [
                kind for kind in (0, 1) if (kind == 0 and idx - 1 == 0) or (kind == 1 and idx - 1 < k - 1)
            ]
            for kind in kinds:
                slot = 0 if kind == 0 else idx
                out.append(
                    f"  rvq_pick<{b}, NW>({part} + {(idx - 1) * per_stage}, {kind}, sel[{kind}], codes, {k}, {slot});\n"
                )
                if kind == 1 and idx < n_search:  # the rest residual for the next table
                    out.append(f"  rvq_subtract<{b}, {qd}, NT>(&res[0][0], {s['tables'][idx][0]}, sel[1]);\n")
        if idx < n_search:
            searched = []
            if idx == 0:
                searched.append((0, s["tables"][0], "rsf"))
            if idx < k - 1:
                searched.append((1, s["tables"][idx + 1], "res"))
            out.append(f"  rvq_clear<{b}, NW>(&wbd[0][0][0], &wbc[0][0][0]);\n")
            for kind, (emb, norms), vec in searched:
                out.append(
                    f"  rvq_scan<{b}, {qd}, {s['bins']}, NW>(&{vec}[0][0], {emb}, {norms}, {kind}, "
                    "&wbd[0][0][0], &wbc[0][0][0]);\n"
                )
            out.append(
                f"  rvq_block_best<{b}, NW>(&wbd[0][0][0], &wbc[0][0][0], {part} + {idx * per_stage});\n"
            )
        out.append("}\n")
        return "".join(out)

    def zero(self, job: Zero) -> str:
        return "for (size_t i = (size_t)blockIdx.x * NT + threadIdx.x; i < ZS; i += (size_t)gridDim.x * NT) S[i] = 0.f;\n"

    def job(self, job: Any) -> str:
        """The code of one job: the method named after its class (Mat -> mat, TrSide -> trside)."""
        return getattr(self, type(job).__name__.lower())(job)

    def _head(self) -> list[str]:
        """The kernel's opening: constants, thread ids, the grid barrier, the offset, shared memory,
        the first time stamp."""
        p = self.p
        ln_rows = max(
            [p.b * j.x.to for st in p.stages for j in st.jobs if isinstance(j, Mat) and j.x.f == "ln"] or [1]
        )
        head = [
            *self._ids(),
            "  unsigned int* barp = const_cast<unsigned int*>(reinterpret_cast<const unsigned int*>(bar));\n",
            "  unsigned long long epoch = grid_start(barp);\n",
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
        return [*head, f"  stamp(S + ZS + {p.stamps}, 0);\n"]

    def _ids(self) -> list[str]:
        return [
            f"  constexpr int NT = {THREADS};\n  constexpr int NW = NT / 32;\n  constexpr size_t ZS = {self.p.zero};\n",
            "  const int lane = threadIdx.x & 31; const int warp = threadIdx.x >> 5;\n",
        ]

    def _stages(self) -> list[str]:
        """Each stage's code, then the grid barrier (but after the last) and its time stamp."""
        p = self.p
        texts = []
        for i, st in enumerate(p.stages):
            out = [f"  // stage {i}\n"]
            out += ["  " + self.job(j).replace("\n", "\n  ").rstrip(" ") for j in st.jobs]
            if i < len(p.stages) - 1:
                out.append("  grid_sync(barp, epoch);\n")
            out.append(f"  stamp(S + ZS + {p.stamps}, {i + 1});\n")
            texts.append("".join(out))
        return texts

    def source(self) -> str:
        """The kernel's body: every stage inline."""
        return "".join(self._head() + self._stages())

    def part_params(self) -> list[tuple[str, str]]:
        """What a part takes after the kernel's arguments, as (declaration, the kernel's name for
        it): the kernel's own state, its shared arrays as pointers to their rows."""
        p, s = self.p, self.p.search
        out = [
            ("const int offset", "offset"),
            ("unsigned int* barp", "barp"),
            ("unsigned long long& epoch", "epoch"),
            ("float* lnm", "lnm"),
            ("float* lnr", "lnr"),
        ]
        if "rf" in s:
            qd, b = s["qd"], p.b
            out += [(f"float (*res)[{qd}]", "res"), (f"float (*rsf)[{qd}]", "rsf")]
            out += [
                (f"float (*wbd)[2][{b}]", "wbd"),
                (f"int (*wbc)[2][{b}]", "wbc"),
                (f"int (*sel)[{b}]", "sel"),
            ]
        elif "first" in s:
            out.append(("float* vq", "vq"))
        return out

    def split(self, n: int) -> tuple[str, list[str]]:
        """The kernel's body and the bodies of at most `n` parts (`nn.cuda.CudaKernel.parts`): the
        stages in order, cut where the code is about evenly shared; the body calls the parts in
        order. The stages' code is `source()`'s."""
        stages = self._stages()
        total = sum(len(t) for t in stages)
        groups: list[list[str]] = [[]]
        done = 0
        for text in stages:
            if groups[-1] and done >= total * len(groups) / n:
                groups.append([])
            groups[-1].append(text)
            done += len(text)
        opening = [
            *self._ids(),
            "  extern __shared__ float xs[];\n",
            "  (void)lane; (void)warp; (void)offset; (void)lnm; (void)lnr; (void)barp; (void)epoch;\n",
        ]
        parts = ["".join(opening + g) for g in groups]
        args = ", ".join(name for _, name in self.part_params())
        calls = [f"  rolekit_part_{i}(ROLEKIT_KERNEL_ARGS, {args});\n" for i in range(len(parts))]
        return "".join(self._head() + calls), parts
