"""Run several benchmarks in one process on the lent GPU and save every result as JSON.

Usage: python3 bench/gpu_run.py OUT_DIR JOB [JOB ...]; a JOB is `kind:key=value,key=value`, e.g.
`ref:batch=1` (Kyutai PyTorch LMGen), `lm:quant=q4,batch=16,dep_steps=8` (rolekit MLX LM step),
`fast:quant=bf16` (compiled step), `engine:...[,start=N]` (whole `Engine.step`), `phases:` (its wall time per phase), `prof:quant=bf16`
(every CUDA kernel per frame, `rolekit.bench.profile`), `qmv:` (rolekit's q4/q8 kernel: errors and
timings), `fusedcheck:` (rolekit.nn.fused's block kernels against fp32), `ringcheck:` (rolekit.nn.ring_attention), `depcheck:` (rolekit.lm.depformer_cuda), `tempcheck:` (rolekit.lm.temporal_cuda), `embedcheck:` (rolekit.nn.embed_cuda), `mimicheck:` (Mimi's kernels), `mimirows:` (a batch against its rows alone), `mimi:`, `prefill:`, `convert:`,
`attn:`, `mm:`, `bw`; `qmv=1` on a job routes one-row quantized products through rolekit's
kernel, `fused=0` switches rolekit.nn.fused's kernels off (the op-by-op MLX path), `ring=0` the
masked-attention kernels (MLX's masked SDPA), `dep=0` the depformer-frame kernel, `mimi=0` the
one-kernel Mimi steps, `temporal=0` the one-kernel temporal step, `embed=0` the one-kernel step embeddings, `tune=threads=256/stages=0` its shape (`Tuning`), `dep_threads=512` the depformer kernel's block. Prints one line per job and a table at the end.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _parse(job: str) -> tuple[str, dict[str, Any]]:
    kind, _, rest = job.partition(":")
    opts: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        try:
            opts[k] = int(v)
        except ValueError:
            try:
                opts[k] = float(v)
            except ValueError:
                opts[k] = v
    return kind, opts


def _run(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    size = opts.pop("size", "full")
    if "fused" in opts:  # fused=0: the op-by-op MLX path instead of rolekit.nn.fused's kernels
        import os

        os.environ["ROLEKIT_FUSED"] = str(opts.pop("fused"))
    if "ring" in opts:  # ring=0: MLX's masked SDPA instead of rolekit.nn.ring_attention's kernels
        import os

        os.environ["ROLEKIT_RING_ATTN"] = str(opts.pop("ring"))
    if "dep" in opts:  # dep=0: the op-by-op MLX depformer instead of rolekit.lm.depformer_cuda's kernel
        import os

        os.environ["ROLEKIT_DEP_KERNEL"] = str(opts.pop("dep"))
    if "mimi" in opts:  # mimi=0: CompiledMimi's MLX graphs instead of rolekit.codec.mimi_cuda's kernels
        import os

        os.environ["ROLEKIT_MIMI_KERNEL"] = str(opts.pop("mimi"))
    import os

    os.environ.pop("ROLEKIT_EMBED_KERNEL", None)  # per job: embed=0, the LM's MLX embedding ops
    if "embed" in opts:
        os.environ["ROLEKIT_EMBED_KERNEL"] = str(opts.pop("embed"))
    if "temporal" in opts:  # temporal=0: the per-layer fused ops instead of rolekit.lm.temporal_cuda's kernel
        import os

        os.environ["ROLEKIT_TEMPORAL_KERNEL"] = str(opts.pop("temporal"))
    import os

    os.environ.pop("ROLEKIT_DEP_THREADS", None)  # per job: dep_threads=512 (the depformer kernel's block)
    if "dep_threads" in opts:
        os.environ["ROLEKIT_DEP_THREADS"] = str(opts.pop("dep_threads"))
    os.environ.pop("ROLEKIT_TEMPORAL_TUNE", None)  # per job: tune=u=2/prefetch=0 (Tuning fields)
    if "tune" in opts:
        os.environ["ROLEKIT_TEMPORAL_TUNE"] = str(opts.pop("tune")).replace("/", ",")
    if "qmv" in opts:  # qmv=1: rolekit's few-row kernel (rolekit.nn.qmv) instead of MLX's qmv
        import os

        os.environ["ROLEKIT_QMV"] = "1" if opts.pop("qmv") else "0"
    if kind == "ref":
        from rolekit.bench.reference import bench_reference_lm
        from rolekit.lm.config import personaplex_7b, tiny  # no mlx import: runs before mlx is installed

        cfg = personaplex_7b() if size == "full" else tiny()
        return bench_reference_lm(cfg.to_kyutai(), **opts)
    if kind == "lm":
        from rolekit.bench.lm import bench_lm

        return bench_lm(size, **opts)
    if kind == "fast":
        from rolekit.bench.lm import bench_lm

        return bench_lm(size, compiled=True, **opts)
    if kind == "engine":
        from rolekit.bench.engine import bench_engine

        return bench_engine(size, **opts)
    if kind == "phases":
        from rolekit.bench.engine import bench_engine_phases

        res = bench_engine_phases(size, **opts)
        for mode in ("overlapped", "serialized"):
            m = res[mode]
            print(
                f"PHASES {mode:<10} step {m['step']['median']:7.2f} ms  encode {m['encode']:6.2f}  "
                f"lm {m['lm']:6.2f}  decode {m['decode']:6.2f}  wait {m.get('wait', '')}"
            )
        return res
    if kind == "pair":
        from rolekit.bench.engine import bench_engine_pair

        return bench_engine_pair(size, **opts)
    if kind == "prefill":
        from rolekit.bench.engine import bench_prefill

        return bench_prefill(size, **opts)
    if kind == "check":
        from rolekit.bench.fast_step import agreement
        from rolekit.bench.lm import build_lm, lm_config

        quant = opts.pop("quant", "bf16")
        return {"quant": quant, **agreement(build_lm(lm_config(size), quant), **opts)}
    if kind == "mimi":
        from rolekit.bench.mimi import bench_mimi

        return bench_mimi(size=size, backends=("mlx",), **opts)
    if kind == "convert":
        from rolekit.bench.convert import bench_convert

        bits = tuple(int(b) for b in str(opts.pop("bits", "4")).split("+"))
        Path(opts.get("workdir", "/tmp/convert")).mkdir(parents=True, exist_ok=True)
        return bench_convert(size, opts.pop("workdir", "/tmp/convert"), bits=bits)
    if kind == "prof":
        from rolekit.bench.profile import profile_engine

        res = profile_engine(size, **opts)
        for phase in ("step", "encode", "decode"):
            p = res[phase]
            print(
                f"PROF {phase:<7} wall {p['wall_ms']:7.2f} ms  busy {p['gpu_busy_ms']:7.2f} ms  "
                f"kernels {p['kernels_per_step']:7.1f}  {p['categories_ms']}"
            )
            for t in p["top"][:8]:
                print(f"   {t['us_per_step']:8.1f} us  x{t['per_step']:<6} {t['name']}")
            for t in p.get("most_launched", [])[:25] if phase == "step" else []:
                print(f"   x{t['per_step']:<6} {t['name'][:90]}")
        return res
    if kind == "qmv":
        from rolekit.bench.matmul import bench_matmul, check_qmv

        checks = check_qmv()
        for c in checks:
            print(
                f"QMV {c['shape']:<12} q{c['bits']} m={c['m']:<3} err {c['rel_err']:.2e} (mlx {c['mlx_rel_err']:.2e}) ok={c['ok']}"
            )
        res = bench_matmul(kernel=True, **opts)
        for r in res["rows"]:
            print(
                f"MM {r['shape']:<12} m={r['m']:<3} {r['layout']:<6} {r['ms']:8.4f} ms {r['gbps']:8.1f} GB/s"
            )
        res["checks"] = checks
        return res
    if kind in ("fusedcheck", "ringcheck"):
        from rolekit.bench.attention import check_ring_attention
        from rolekit.bench.matmul import check_fused

        fused = kind == "fusedcheck"
        checks = (check_fused if fused else check_ring_attention)(**opts)
        ran = "fused" if fused else "ran"
        for c in checks:
            what = (
                f"{c['shape']:<15} {c['layout']:<4} m={c['m']}"
                if fused
                else f"{c['case']:<40} {c['dtype']:<9}"
            )
            print(
                f"{kind.upper()} {what} ran={c[ran]} err {c['rel_err']:.2e} (mlx {c['mlx_rel_err']:.2e}) ok={c['ok']}"
            )
        return {"checks": checks, "all_ok": all(c["ok"] and c[ran] for c in checks)}
    if kind == "embedcheck":
        from rolekit.bench.embed import check_embed_kernel

        checks = check_embed_kernel(size, **opts)
        for c in checks:
            print(f"EMBEDCHECK {c}")
        return {"checks": checks, "all_ok": all(c["ok"] for c in checks)}
    if kind == "depcheck":
        from rolekit.bench.depformer import check_depformer_kernel

        checks = check_depformer_kernel(size, **opts)
        for c in checks:
            print(
                f"DEPCHECK {c['quant']:<5} b={c['batch']} greedy={c['greedy']!s:<5} ran={c['ran']} "
                f"timeout={c.get('timed_out')} err {c.get('logit_rel_err', float('nan')):.2e} "
                f"exact={c.get('tokens_exact')} agree={c.get('op_agreement', '')} "
                f"kernel {c.get('kernel_ms', float('nan')):.3f} ms ops {c.get('ops_ms', float('nan')):.3f} ms ok={c['ok']}"
            )
        return {"checks": checks, "all_ok": all(c["ok"] for c in checks)}
    if kind == "tempcheck":
        from rolekit.bench.temporal import check_temporal_kernel

        res = check_temporal_kernel(size, **opts)
        print(f"TEMPCHECK {res}")
        return res
    if kind == "mimirows":
        from rolekit.bench.mimi import check_mimi_rows

        res = check_mimi_rows(size=size, **opts)
        print(f"MIMIROWS {res}")
        return res
    if kind == "mimicheck":
        from rolekit.bench.mimi import check_mimi_kernels

        res = check_mimi_kernels(size=size, **opts)
        print(f"MIMICHECK {res}")
        return res
    if kind == "attn":
        from rolekit.bench.attention import bench_attention

        return bench_attention(**opts)
    if kind == "bw":
        return _copy_bandwidth()
    if kind == "mm":
        from rolekit.bench.matmul import bench_matmul

        res = bench_matmul(**opts)
        for r in res["rows"]:
            print(
                f"MM {r['shape']:<12} m={r['m']:<3} {r['layout']:<6} {r['ms']:8.4f} ms {r['gbps']:8.1f} GB/s"
            )
        return res
    raise SystemExit(f"unknown job kind {kind}")


def _copy_bandwidth() -> dict[str, Any]:
    """Device-to-device copy of 2 GiB with torch (bytes read + written per second), median of 20."""
    import torch

    a = torch.randn(2**29, device="cuda")  # 2 GiB fp32
    b = torch.empty_like(a)
    times = []
    for _ in range(25):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times = sorted(times[5:])
    ms = times[len(times) // 2]
    return {"device": torch.cuda.get_device_name(), "copy_gbps": round(2 * a.nbytes / ms / 1e6, 1), "ms": ms}


def _free() -> None:
    gc.collect()
    try:
        import mlx.core as mx

        mx.clear_cache()
    except Exception:  # noqa: BLE001
        pass
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(argv: list[str]) -> None:
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for job in argv[1:]:
        kind, opts = _parse(job)
        t0 = time.perf_counter()
        try:
            res = _run(kind, dict(opts))
        except Exception as exc:  # noqa: BLE001 - keep going: one failing job must not lose the others
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["job"] = job
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        results.append(res)
        print("RESULT", json.dumps(res), flush=True)
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        _free()
    print("\n| job | step ms (p10-p90) | temporal | depformer | peak GB |")
    print("|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['job']} | ERROR {r['error'][:60]} | | | |")
            continue
        s = r.get("step", {})
        t = r.get("temporal", {}).get("median", "")
        d = r.get("depformer", {}).get("median", "")
        print(
            f"| {r['job']} | {s.get('median')} ({s.get('p10')}-{s.get('p90')}) | {t} | {d} | {r.get('peak_gb')} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
