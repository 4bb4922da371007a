"""`rolekit bench`: time the product path (the engine step and the prompt prefill of the model as
`respond` loads it, against Kyutai's LMGen), Mimi and the converter. The lab benchmarks on their
own random models live in `benchmarks/` at the repository root, outside the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from rolekit.atomic import write_text
from rolekit.cli import options as model_opts
from rolekit.cli.user_input import user_errors
from rolekit.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
    app.command("bench")(bench_command)


def _cell(stats: Any) -> str:
    if not isinstance(stats, dict) or stats.get("median") is None:
        return "-"
    if stats.get("n"):
        return f"{stats['median']:.2f} ({stats['p10']:.2f}-{stats['p90']:.2f})"
    return f"{stats['median']:.2f}"


def _convert_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for run in r["runs"]:
        what = f"{run['seconds']} s, peak RSS {run['peak_rss_gb']} GB, {run['output_gb']} GB out"
        if run.get("error"):
            what = f"exit {run['exit_code']}: {run['error'][0][:50]}"
        rows.append(
            [
                "convert",
                f"{r['checkpoint_gb']} GB ckpt",
                r["size"],
                f"{run['bits']}-bit",
                "",
                what,
                "",
                "",
                "",
                "",
            ]
        )
    return rows


def _rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in report["results"]:
        if r.get("bench") == "mimi":
            for name, b in r.get("backends", {}).items():
                if "error" in b:
                    rows.append(["mimi", name, "", "", "", b["error"][:50], "", "", "", ""])
                    continue
                enc, dec = b["encode_step"], b["decode_step"]
                rows.append(
                    [
                        "mimi",
                        name,
                        r["size"],
                        "",
                        str(r["batch"]),
                        f"enc {enc['median_ms']:.2f} / dec {dec['median_ms']:.2f}",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
            continue
        if "error" in r:
            rows.append(
                [r.get("bench", ""), r.get("runtime", ""), "", "", "", r["error"][:60], "", "", "", ""]
            )
            continue
        if r.get("bench") == "convert":
            rows.extend(_convert_rows(r))
            continue
        if r.get("bench") == "prefill":
            rows.extend(_prefill_rows(r))
            continue
        speed = r.get("speedup_vs_reference")
        rows.append(
            [
                r.get("bench", ""),
                f"{r.get('runtime', '')} {r.get('variant', '')}".strip(),
                str(r.get("size", "")),
                str(r.get("quant", r.get("dtype", ""))),
                str(r.get("batch", "")),
                _cell(r.get("step")),
                _cell(r.get("temporal")),
                _cell(r.get("depformer")),
                str(r.get("peak_gb", "")),
                "-" if speed is None else f"{speed:.2f}x",
            ]
        )
    return rows


def _prefill_rows(r: dict[str, Any]) -> list[list[str]]:
    timings = (
        f"batched {r['batched_ms']:.2f} / stepwise {r['stepwise_ms']:.2f} / "
        f"cached: first {r['first_run_with_save_ms']:.2f}, restored {r['restored_ms']:.2f}"
    )
    return [
        [
            "prefill",
            f"{r['runtime']} {r['variant']}",
            r["size"],
            str(r.get("quant", "")),
            str(r["batch"]),
            f"{r['frames']} frames: {timings}",
            "",
            "",
            str(r.get("peak_gb", "")),
            f"stepwise {r['stepwise_over_batched']:.2f}x",
        ]
    ]


def bench_command(
    what: str = typer.Argument(
        "engine",
        help="engine (the product step) | prefill (the product prefill) | mimi | convert | "
        "all (engine, prefill, mimi). Lab benchmarks: benchmarks/ at the repository root.",
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="engine, prefill: tiny | random-7b | FOLDER | HF id, loaded as `respond` loads it "
        "(default: random-7b for --size full, else tiny).",
    ),
    dtype: str = model_opts.DTYPE,
    compat: str = model_opts.COMPAT,
    kernels: str = model_opts.KERNELS,
    json_out: Path = typer.Option(None, "--json-out", help="Also write the report JSON to this file."),
    size: str = typer.Option(
        "tiny",
        "--size",
        help="mimi, convert: full (PersonaPlex 7B sizes, random weights) or tiny; "
        "engine, prefill: full = --model random-7b when --model is not given.",
    ),
    quant: str = typer.Option(
        None, "--quant", help="engine, prefill: auto | bf16 | q8 | q4 (as `respond --quant`; default auto)."
    ),
    batch: int = typer.Option(1, "--batch", help="Conversations stepped (or prefilled) together."),
    steps: int = typer.Option(50, "--steps", help="engine, mimi: timed steps (frames)."),
    warmup: int = typer.Option(5, "--warmup", help="mimi: untimed steps first; engine: the reference's."),
    reference: bool = typer.Option(
        True, "--reference/--no-reference", help="Also time Kyutai's PyTorch moshi (engine, mimi)."
    ),
    convert_dir: str = typer.Option(
        None, "--dir", help="convert: working folder (needs ~2x 16.7 GB at full size)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Time what users run to choose a runtime: median, p10-p90 (ms per 80 ms frame), peak memory.

    `engine` and `prefill` load the model exactly as `respond` loads it (random weights are
    labelled); `engine` then times Kyutai's LMGen with CUDA graphs and with torch.compile, each in
    its own process. `mimi` times the codec, `convert` the converter, at --size."""
    from rolekit.bench.runner import BenchOptions, check_what, run_bench

    with user_errors():
        if json_out is not None and not json_out.expanduser().resolve().parent.is_dir():
            raise ConfigError(f"--json-out {json_out}: the folder does not exist")
        names = check_what(what)
        if quant == "fp32":
            raise ConfigError(
                "--quant fp32: the product path quantizes auto | bf16 | q8 | q4 (use --dtype fp32)"
            )
        opts = BenchOptions(
            model=model or ("random-7b" if size == "full" else "tiny"),
            dtype=dtype,
            quant=quant or "auto",
            compat=compat,
            kernels=kernels,
            size=size,
            batch=batch,
            steps=steps,
            warmup=warmup,
            reference=reference,
            convert_dir=convert_dir,
        )
        opts.check()
        load = None
        if {"engine", "prefill"} & set(names):  # a bad model option fails before any work
            load = model_opts.load_options(dtype, opts.quant, compat, batch, kernels)

        def loader(spec: str) -> Any:
            return model_opts.load_model(spec, load)

        report = run_bench(what, opts, loader)
    _emit(report, what, as_json, json_out)


def _emit(report: dict[str, Any], what: str, as_json: bool, json_out: Path | None) -> None:
    if json_out is not None:
        write_text(json_out, json.dumps(report, indent=1) + "\n")
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    host = report["host"]
    table = Table(title=f"rolekit bench {what} - {host['date']} - {host['machine']}, {host['cpus']} CPUs")
    for col in (
        "bench",
        "runtime",
        "size",
        "quant",
        "batch",
        "step ms (p10-p90)",
        "temporal",
        "depformer",
        "peak GB",
        "vs ref",
    ):
        table.add_column(col, overflow="fold")
    for row in _rows(report):
        table.add_row(*row)
    Console().print(table)
