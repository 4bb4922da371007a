"""`rolekit bench` orchestration: run the chosen benchmarks with the reference in the same process,
and put ratios next to the numbers. Plain data in, plain data out (the CLI prints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rolekit.bench.timing import host_info, speedup
from rolekit.errors import ConfigError

WHATS = ("lm", "mimi", "engine", "phases", "prefill", "convert", "all")
SIZES = ("full", "tiny")


@dataclass(frozen=True)
class BenchOptions:
    size: str = "tiny"
    quant: str | None = None  # None: bf16 on GPU, fp32 on CPU
    batch: int = 1
    steps: int = 50
    warmup: int = 5
    dep_steps: int | None = None  # None: all dep_q codebooks (as the reference does)
    compiled: bool = False
    reference: bool = True
    convert_dir: str | None = None
    start: int = 0  # engine: frames already in the LM context

    def check(self) -> None:
        if self.size not in SIZES:
            raise ConfigError(f"--size: must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.quant is not None and self.quant not in ("fp32", "bf16", "q8", "q4"):
            raise ConfigError(f"--quant: must be fp32, bf16, q8 or q4, got {self.quant!r}")
        for name in ("batch", "steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name}: must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup: must be >= 0, got {self.warmup}")
        if self.start < 0:
            raise ConfigError(f"--start: must be >= 0, got {self.start}")
        if self.dep_steps is not None and not 1 <= self.dep_steps <= 16:
            raise ConfigError(f"--dep-steps: must be 1..16, got {self.dep_steps}")


def run_lm(opts: BenchOptions) -> list[dict[str, Any]]:
    from rolekit.bench.lm import bench_lm, lm_config

    ours = bench_lm(
        opts.size, opts.quant, opts.batch, opts.steps, opts.warmup, opts.dep_steps, compiled=opts.compiled
    )
    out = [ours]
    if opts.reference:
        from rolekit.bench.reference import bench_reference_lm

        try:
            ref = bench_reference_lm(
                lm_config(opts.size).to_kyutai(), batch=opts.batch, steps=opts.steps, warmup=opts.warmup
            )
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unavailable reference is reported, not fatal
            ref = {"runtime": "kyutai-moshi-torch", "error": f"{type(exc).__name__}: {exc}"}
        ours["speedup_vs_reference"] = speedup(ref, ours)
        out.append(ref)
    return out


def run_engine(opts: BenchOptions) -> list[dict[str, Any]]:
    from rolekit.bench.engine import bench_engine

    return [
        bench_engine(
            opts.size,
            opts.quant,
            opts.batch,
            opts.steps,
            opts.warmup,
            compiled=opts.compiled,
            start=opts.start,
        )
    ]


def run_phases(opts: BenchOptions) -> list[dict[str, Any]]:
    from rolekit.bench.engine import bench_engine_phases

    return [bench_engine_phases(opts.size, opts.quant, opts.batch, opts.steps, opts.warmup)]


def run_prefill(opts: BenchOptions) -> list[dict[str, Any]]:
    from rolekit.bench.engine import bench_prefill, bench_prefill_modes

    return [
        bench_prefill(opts.size, opts.quant, opts.batch, steps=max(1, min(opts.steps, 5)), warmup=1),
        bench_prefill_modes(opts.size, opts.quant, opts.batch),
    ]


def run_mimi(opts: BenchOptions) -> list[dict[str, Any]]:
    from rolekit.bench.mimi import BACKENDS, bench_mimi

    backends = BACKENDS if opts.reference else ("mlx", "mlx-compiled")
    res = bench_mimi(
        frames=opts.steps, batch=opts.batch, size=opts.size, warmup=opts.warmup, backends=backends
    )
    res["runtime"] = "mimi"
    return [res]


def run_convert(opts: BenchOptions) -> list[dict[str, Any]]:
    from rolekit.bench.convert import bench_convert

    return [bench_convert(opts.size, opts.convert_dir)]


_RUNNERS = {
    "lm": run_lm,
    "mimi": run_mimi,
    "engine": run_engine,
    "phases": run_phases,
    "prefill": run_prefill,
    "convert": run_convert,
}


def _check_cpu_memory(what: str, opts: BenchOptions) -> None:
    """Full size on a CPU: refuse the combinations that cannot fit in ordinary RAM."""
    if opts.size != "full" or what in ("convert", "mimi"):
        return
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return
    if opts.quant in (None, "fp32", "bf16"):
        raise ConfigError(
            "--size full on a CPU: the 8.4 B-parameter LM needs 34 GB in fp32 (17 GB in bf16, ~10x slower);"
            " use --quant q4 (5.4 GB) or q8, or a GPU"
        )
    if opts.reference and what in ("lm", "all"):
        raise ConfigError("--size full on a CPU: Kyutai's fp32 reference needs 34 GB; add --no-reference")


def run_bench(what: str, opts: BenchOptions) -> dict[str, Any]:
    """Run one benchmark (or `all` but convert) -> {"host", "what", "options", "results": [...]}."""
    if what not in WHATS:
        raise ConfigError(f"bench: unknown benchmark {what!r} (one of {', '.join(WHATS)})")
    opts.check()
    _check_cpu_memory(what, opts)
    names = [w for w in WHATS if w not in ("all", "convert")] if what == "all" else [what]
    results: list[dict[str, Any]] = []
    for name in names:
        for res in _RUNNERS[name](opts):
            res.setdefault("bench", name)
            results.append(res)
    return {"host": host_info(), "what": what, "options": opts.__dict__, "results": results}
