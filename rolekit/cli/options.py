"""The model options every command that loads a model shares: `--model`, `--dtype`, `--quant`,
`--compat`, `--kernels`, and `load_model`, which loads through `rolekit.models.load` with a visible progress bar
for first-use builds and conversions and one stderr line per decision (what and why)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from rolekit.errors import ConfigError
from rolekit.hub import DEFAULT_MODEL, MODEL_ENV

DTYPES = ("auto", "bf16", "fp16", "fp32")
QUANTS = ("auto", "bf16", "q8", "q4")
COMPATS = ("kyutai", "nvidia")


def model_option(default: str = DEFAULT_MODEL) -> Any:
    return typer.Option(
        default,
        "--model",
        "-m",
        envvar=MODEL_ENV,
        help="tiny or random-7b (random weights, noise only), a model folder or a HF repo id.",
    )


MODEL = model_option()
DTYPE = typer.Option(
    "auto", "--dtype", help="Activations: auto (bf16 on CUDA / Metal, fp32 on the CPU) | bf16 | fp16 | fp32."
)
QUANT = typer.Option(
    "auto",
    "--quant",
    help="NVIDIA's bf16 checkpoint as: auto (from device, memory, batch) | bf16 | q8 | q4 "
    "(q4 / q8 converted once into $ROLEKIT_CACHE/models/).",
)
COMPAT = typer.Option(
    "kyutai",
    "--compat",
    help="kyutai (default: Kyutai's fixed ring cache) | nvidia (NVIDIA's fork exactly, incl. its "
    "ring-cache off-by-one after the wrap, LM and Mimi).",
)
KERNELS = typer.Option(
    "",
    "--kernels",
    help="Override which of rolekit's CUDA kernels run, NAME=0|1,... (fused, ring_attention, temporal, "
    "depformer, embed, conv, mimi, token_ring, qmv, qmm; depformer_threads=N; temporal_tuning=threads=N/stages=N; "
    "mimi_parts=N; qmm_split=0|1; dense_prompt=0|1). "
    "Default: all but qmv on a CUDA GPU, none elsewhere.",
)


def load_options(dtype: str, quant: str, compat: str, batch: int = 1, kernels: str = "") -> Any:
    """Checked `models.LoadOptions` (a bad value names its option: exit 2). `kernels` (the
    `--kernels` text) is parsed here, once, into the `Kernels` policy of this device."""
    from rolekit.models import LoadOptions

    for flag, value, allowed in (
        ("--dtype", dtype, DTYPES),
        ("--quant", quant, QUANTS),
        ("--compat", compat, COMPATS),
    ):
        if value not in allowed:
            raise ConfigError(f"{flag}: must be one of {' | '.join(allowed)}, got {value!r}")
    policy = None
    if kernels.strip():
        from rolekit.nn.kernels import Kernels

        policy = Kernels.for_device(None, kernels)
    return LoadOptions(dtype=dtype, quant=quant, compat=compat, batch=max(1, int(batch)), kernels=policy)


def check_kernels(kernels: str) -> str:
    """The `--kernels` text, checked for names and values but not against this device (for workers
    that resolve it on theirs: `Kernels.for_device(None, text)`); a bad one names the option."""
    from rolekit.nn.kernels import Kernels, parse

    Kernels().with_values(parse(kernels))
    return kernels.strip()


def load_model(spec: str, options: Any, quiet: bool = False) -> Any:
    """`models.load(spec, options)` with its decisions on stderr and a progress bar for first-use work."""
    from rich.console import Console

    from rolekit import models

    console = Console(stderr=True, highlight=False)

    def log(line: str) -> None:
        if not quiet:
            console.print(f"[dim]{line}[/]")

    with _bar(console, quiet) as progress:
        bundle = models.load(spec, options, log=log, progress=progress)
    if bundle.is_random and not quiet:
        console.print(f"[yellow]note:[/] {bundle.label}")
    return bundle


def resolve_model(spec: str, quiet: bool = False) -> Any:
    """`models.resolve(spec)` (the folder of tiny / random-7b / a folder / a hub id) with a progress
    bar while a first use builds random-7b."""
    from rich.console import Console

    from rolekit import models

    with _bar(Console(stderr=True, highlight=False), quiet) as progress:
        report = None if progress is None else (lambda d, t: progress(f"building {spec}", d, t))
        return models.resolve(spec, progress=report)


@contextmanager
def _bar(console: Any, quiet: bool) -> Iterator[Any]:
    """progress(task, done, total) for models.load, shown as one rich bar per task."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def progress(task: str, done: int, total: int) -> None:
        if task not in tasks:
            bar.start()
            tasks[task] = bar.add_task(task, total=total)
        bar.update(tasks[task], completed=done, total=total)

    try:
        yield progress
    finally:
        if tasks:
            bar.stop()


def warm(engine: Any, quiet: bool = False, frames: int | None = None) -> Any:
    """Warm `engine` up (`engine.warmup`: its first steps, then the step graphs of the next
    `frames` frames, None = a whole conversation) behind a status line on stderr; state unchanged."""
    from rich.console import Console

    from rolekit.engine.warmup import WARMUP_STEPS, warmup
    from rolekit.kernelcache import kernels_root

    console = Console(stderr=True, highlight=False)
    if quiet:
        return warmup(engine, frames=frames)
    where = kernels_root()
    with console.status(
        f"warming up: compiling graphs and kernels ({WARMUP_STEPS} silent steps, then the step graphs "
        f"of a longer conversation; kernels cached in {where})"
    ):
        result = warmup(engine, frames=frames)
    steps = ", ".join(f"{ms:.0f}" for ms in result.steps_ms)
    k = result.kernels
    built = (
        f"; rolekit kernels: {k['compiled']:.0f} compiled in {k['compile_s']:.1f} s, {k['read']:.0f} from the cache"
        if k.get("compiled") or k.get("read")
        else ""
    )
    console.print(
        f"[dim]warm-up: {result.seconds:.1f} s (steps {steps} ms; {result.graphs} more step graphs "
        f"in {result.graphs_ms / 1000.0:.1f} s{built})[/]"
    )
    return result
