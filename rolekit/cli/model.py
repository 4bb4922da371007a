"""`rolekit convert` (PyTorch PersonaPlex checkpoint folder -> MLX model folder) and
`rolekit model random-7b` (write the full-size random model in NVIDIA's layout)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from rolekit.errors import ConfigError

model_app = typer.Typer(help="Model folders rolekit builds itself.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
    app.command("convert")(convert_command)
    app.add_typer(model_app, name="model")


@model_app.command("random-7b")
def random_7b_command(
    out: Path = typer.Option(
        None,
        "--out",
        help="Folder to write (default: $ROLEKIT_CACHE/models/random-7b-v1, what --model random-7b uses).",
    ),
) -> None:
    """Write PersonaPlex 7B at full size with random weights in NVIDIA's layout (~17 GB, streamed).

    bf16 model.safetensors with the real names and shapes, full-size Mimi, a 32000-piece tokenizer
    and 18 voice presets (.pt). It speaks noise: for timing and testing the real path."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from rolekit.hub import rolekit_cache
    from rolekit.randmodel import RANDOM_7B_VERSION, build_random_7b

    folder = out or rolekit_cache() / "models" / RANDOM_7B_VERSION
    if (folder / "config.json").is_file():
        typer.echo(f"{folder} exists")
        return
    if folder.exists():
        raise ConfigError(f"--out {folder}: exists and is not a random-7b folder")
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("writing random-7b: LM", total=None)

        def progress(done: int, total: int) -> None:  # the LM's bytes, then Mimi and the voices
            what = "LM" if done < total else "Mimi and 18 voices (after the LM)"
            bar.update(task, completed=done, total=total, description=f"writing random-7b: {what}")

        build_random_7b(folder, progress)
    typer.echo(f"wrote {folder} in {time.perf_counter() - start:.1f} s")


def convert_command(
    src: Path = typer.Argument(
        ...,
        help="PyTorch checkpoint folder (model.safetensors, Mimi, tokenizer, voices), or random-7b "
        "(the full-size random model, written first if needed).",
    ),
    dst: Path = typer.Argument(..., help="MLX model folder to write (usable as --model)."),
    bits: int = typer.Option(
        4, "--bits", help="4 or 8: quantize the LM linears (group 64); 16: keep 16-bit."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
) -> None:
    """Convert NVIDIA's PyTorch PersonaPlex checkpoint to rolekit's MLX layout (q4/q8/16-bit)."""
    from rolekit.convert import convert
    from rolekit.models import RANDOM_7B

    if bits not in (4, 8, 16):
        raise ConfigError(f"--bits: must be 4, 8 or 16, got {bits}")
    from rolekit.outputs import check_output_dir

    check_output_dir(dst, "DST")
    if str(src) == RANDOM_7B and not src.exists():  # the name, as --model takes it
        from rolekit.cli.options import resolve_model

        src = resolve_model(RANDOM_7B)
    start = time.perf_counter()
    result = convert(src, dst, bits=bits, overwrite=overwrite)
    for name, size in result.files.items():
        typer.echo(f"  {name:<28} {size / 2**20:10.1f} MiB")
    typer.echo(f"  voices: {len(result.voices)} ({', '.join(result.voices) or 'none'})")
    typer.echo(f"wrote {result.dst} ({bits}-bit) in {time.perf_counter() - start:.1f} s")
