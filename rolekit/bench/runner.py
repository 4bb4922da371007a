"""`rolekit bench` orchestration: run the chosen benchmarks and put ratios next to the numbers.
Plain data in, plain data out (the CLI prints).

`engine` and `prefill` time the product path: the model comes from `loader(spec)` (the CLI passes
the loader `respond` uses). `mimi` and `convert` time the codec and the converter at `size`. The
lab benchmarks on the old harness's own random model live in `benchmarks/` at the repository root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rolekit.bench.timing import host_info
from rolekit.errors import ConfigError

WHATS = ("engine", "prefill", "mimi", "convert", "all")
ALL = ("engine", "prefill", "mimi")  # what `all` runs (convert writes a checkpoint: on request only)
SIZES = ("full", "tiny")
LAB = ("lm", "phases")  # removed from the installed command: benchmarks/ at the repository root


@dataclass(frozen=True)
class BenchOptions:
    """What one `rolekit bench` run was asked for (plain data; the report repeats it)."""

    model: str = "tiny"  # engine / prefill: what `loader` loads
    dtype: str = "auto"
    quant: str = "auto"
    compat: str = "kyutai"
    kernels: str = ""
    size: str = "tiny"  # mimi / convert
    batch: int = 1
    steps: int = 50
    warmup: int = 5
    reference: bool = True
    convert_dir: str | None = None

    def check(self) -> None:
        """ConfigError naming the option for a value out of range."""
        if self.size not in SIZES:
            raise ConfigError(f"--size: must be one of {', '.join(SIZES)}, got {self.size!r}")
        for name in ("batch", "steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name}: must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup: must be >= 0, got {self.warmup}")


Loader = Callable[[str], Any]


def run_engine(opts: BenchOptions, loader: Loader) -> list[dict[str, Any]]:
    """The product step, then Kyutai's LMGen twice (CUDA graphs, torch.compile) unless no reference."""
    from rolekit.bench.product import bench_product_with_reference

    return bench_product_with_reference(
        opts.model, loader, opts.batch, opts.steps, max(opts.warmup, 3), opts.reference
    )


def run_prefill(opts: BenchOptions, loader: Loader) -> list[dict[str, Any]]:
    """The product prefill: batched, stepwise, and through the prefill cache."""
    from rolekit.bench.product import bench_prefill

    return [bench_prefill(opts.model, loader, opts.batch)]


def run_mimi(opts: BenchOptions, loader: Loader) -> list[dict[str, Any]]:
    """Mimi's streaming encode / decode at `size` (with PyTorch Mimi and rustymimi as references)."""
    from rolekit.bench.mimi import BACKENDS, bench_mimi

    backends = BACKENDS if opts.reference else ("mlx", "mlx-compiled")
    res = bench_mimi(
        frames=opts.steps, batch=opts.batch, size=opts.size, warmup=opts.warmup, backends=backends
    )
    res["runtime"] = "mimi"
    return [res]


def run_convert(opts: BenchOptions, loader: Loader) -> list[dict[str, Any]]:
    """`rolekit convert` of a random checkpoint at `size`, in a child process."""
    from rolekit.bench.convert import bench_convert

    return [bench_convert(opts.size, opts.convert_dir)]


_RUNNERS = {"engine": run_engine, "prefill": run_prefill, "mimi": run_mimi, "convert": run_convert}


def check_what(what: str) -> list[str]:
    """The benchmarks `what` runs, in order; ConfigError listing the valid choices otherwise."""
    if what in WHATS:
        return list(ALL) if what == "all" else [what]
    hint = ""
    if what in LAB:
        hint = f"; `{what}` is a lab benchmark now: benchmarks/ at the repository root (see its README)"
    raise ConfigError(f"bench: unknown benchmark {what!r}: one of {' | '.join(WHATS)}{hint}")


def run_bench(what: str, opts: BenchOptions, loader: Loader) -> dict[str, Any]:
    """Run one benchmark (or `all`: engine, prefill, mimi) -> {"host", "what", "options", "results"}.

    Each result carries its "bench" name. engine and prefill each load the model (and let it go)
    themselves, so that neither runs, nor the reference processes, beside the other's model."""
    names = check_what(what)
    opts.check()
    results: list[dict[str, Any]] = []
    for name in names:
        for res in _RUNNERS[name](opts, loader):
            res.setdefault("bench", name)
            results.append(res)
    return {"host": host_info(), "what": what, "options": asdict(opts), "results": results}
