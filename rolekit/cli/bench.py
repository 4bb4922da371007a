"""`rolekit bench`: time the LM step, Mimi, the engine, the prefill and the converter, with
Kyutai's PyTorch reference measured in the same process."""

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
        if r.get("bench") == "phases":
            for mode in ("overlapped", "serialized"):
                m = r[mode]
                parts = f"enc {m['encode']:.2f} / lm {m['lm']:.2f} / dec {m['decode']:.2f}"
                wait = f" / wait {m['wait']:.2f}" if "wait" in m else ""
                rows.append(
                    [
                        "phases",
                        mode,
                        r["size"],
                        r["quant"],
                        str(r["batch"]),
                        _cell(m["step"]),
                        parts + wait,
                        "",
                        "",
                        "",
                    ]
                )
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


def bench_command(
    what: str = typer.Argument(
        "lm", help="lm | mimi | engine (the product path) | phases | prefill | convert | all"
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="engine: tiny | random-7b | FOLDER | HF id, loaded as `respond` loads it "
        "(default: random-7b for --size full, else tiny).",
    ),
    dtype: str = model_opts.DTYPE,
    compat: str = model_opts.COMPAT,
    kernels: str = model_opts.KERNELS,
    json_out: Path = typer.Option(None, "--json-out", help="Also write the report JSON to this file."),
    size: str = typer.Option("tiny", "--size", help="full (PersonaPlex 7B, random weights) or tiny."),
    quant: str = typer.Option(
        None,
        "--quant",
        help="engine: auto | bf16 | q8 | q4 (as `respond --quant`); others: fp32 | bf16 | q8 | q4 "
        "(default: bf16 on GPU, fp32 on CPU).",
    ),
    batch: int = typer.Option(1, "--batch", help="Conversations stepped together."),
    steps: int = typer.Option(50, "--steps", help="Timed steps (frames)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed steps first."),
    dep_steps: int = typer.Option(
        None, "--dep-steps", help="Depformer steps (default all 16; 8 = agent only)."
    ),
    compiled: bool = typer.Option(
        False,
        "--compiled",
        help="lm: the compiled LM step; engine: the engine's whole-step compiled graph (its default; without it: eager).",
    ),
    reference: bool = typer.Option(
        True, "--reference/--no-reference", help="Also time Kyutai's PyTorch moshi."
    ),
    convert_dir: str = typer.Option(
        None, "--dir", help="convert: working folder (needs ~2x 16.7 GB at full size)."
    ),
    start: int = typer.Option(
        0,
        "--start",
        help="engine: frames already in the LM context (e.g. 3000: a conversation past 4 minutes).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Benchmark with random weights: median, p10-p90 (ms per 80 ms frame) and peak memory.

    `engine` times the product path: the model loaded exactly as `respond` loads it, prefilled and
    warmed up, then Kyutai's LMGen with CUDA graphs and with torch.compile, each in its own process."""
    from rolekit.bench.runner import BenchOptions, run_bench

    if json_out is not None and not json_out.expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--json-out {json_out}: the folder does not exist")
    if what == "engine" and not start:  # the product path (--start: the lab timing below)
        with user_errors():
            report = _product(
                model or ("random-7b" if size == "full" else "tiny"),
                dtype,
                quant,
                compat,
                batch,
                steps,
                warmup,
                reference,
                kernels,
            )
        _emit(report, what, as_json, json_out)
        return
    opts = BenchOptions(
        size=size,
        quant=quant,
        batch=batch,
        steps=steps,
        warmup=warmup,
        dep_steps=dep_steps,
        compiled=compiled,
        reference=reference,
        convert_dir=convert_dir,
        start=start,
    )
    report = run_bench(what, opts)
    _emit(report, what, as_json, json_out)


def _product(
    model: str,
    dtype: str,
    quant: str | None,
    compat: str,
    batch: int,
    steps: int,
    warmup: int,
    reference: bool,
    kernels: str = "",
) -> dict[str, Any]:
    from rolekit.bench.product import bench_product_with_reference
    from rolekit.bench.timing import host_info

    if quant == "fp32":
        raise ConfigError("--quant fp32: the product path quantizes auto | bf16 | q8 | q4 (use --dtype fp32)")
    if batch < 1 or steps < 1:
        raise ConfigError(f"--batch and --steps must be >= 1, got {batch} and {steps}")
    load = model_opts.load_options(dtype, quant or "auto", compat, batch, kernels)
    results = bench_product_with_reference(
        model, lambda spec: model_opts.load_model(spec, load), batch, steps, max(warmup, 3), reference
    )
    for r in results:
        r.setdefault("bench", "engine")
    options = {"model": model, "dtype": dtype, "quant": quant or "auto", "compat": compat, "batch": batch}
    options["kernels"] = kernels
    return {"host": host_info(), "what": "engine", "options": {**options, "steps": steps}, "results": results}


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
