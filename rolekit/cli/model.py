"""`rolekit convert`: PyTorch PersonaPlex checkpoint folder -> MLX model folder."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from rolekit.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
    app.command("convert")(convert_command)


def convert_command(
    src: Path = typer.Argument(
        ..., help="PyTorch checkpoint folder (model.safetensors, Mimi, tokenizer, voices)."
    ),
    dst: Path = typer.Argument(..., help="MLX model folder to write (usable as --model)."),
    bits: int = typer.Option(
        4, "--bits", help="4 or 8: quantize the LM linears (group 64); 16: keep 16-bit."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
) -> None:
    """Convert NVIDIA's PyTorch PersonaPlex checkpoint to rolekit's MLX layout (q4/q8/16-bit)."""
    from rolekit.convert import convert

    if bits not in (4, 8, 16):
        raise ConfigError(f"--bits: must be 4, 8 or 16, got {bits}")
    start = time.perf_counter()
    result = convert(src, dst, bits=bits, overwrite=overwrite)
    for name, size in result.files.items():
        typer.echo(f"  {name:<28} {size / 2**20:10.1f} MiB")
    typer.echo(f"  voices: {len(result.voices)} ({', '.join(result.voices) or 'none'})")
    typer.echo(f"wrote {result.dst} ({bits}-bit) in {time.perf_counter() - start:.1f} s")
