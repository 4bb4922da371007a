"""The `rolekit` command: one typer app; each command group lives in its own module under cli/.

This is the only place that parses arguments, prints, and picks exit codes.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import click
import typer

from rolekit.cli.user_input import print_error
from rolekit.codec.blas import preload_openblas
from rolekit.errors import ConfigError, KernelError, Problem, RolekitError
from rolekit.kernelcache import configure_kernel_caches
from rolekit.nn.mlxcache import MISSING

app = typer.Typer(
    name="rolekit",
    help="Design, rehearse and test full-duplex voice personas on NVIDIA PersonaPlex 7B (MLX).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines `register(app: typer.Typer) -> None`.
_COMMAND_MODULES = (
    "rolekit.cli.persona",
    "rolekit.cli.model",
    "rolekit.cli.respond",
    "rolekit.cli.scenario",
    "rolekit.cli.review",
    "rolekit.cli.live",
    "rolekit.cli.bench",
    "rolekit.cli.warmup",
    "rolekit.cli.demo",
    "rolekit.cli.scaffold",
    "rolekit.cli.compare",
    "rolekit.cli.doctor",
)


@app.callback()
def _root(
    allow_path: list[Path] = typer.Option(
        [],
        "--allow-path",
        help="Also allow files named in personas/scenarios inside DIR (default: only the document's "
        "own folder). Repeatable; also $ROLEKIT_ALLOW_PATH.",
    ),
) -> None:
    """rolekit: personas, scenarios and live rehearsal for PersonaPlex 7B."""
    from rolekit.persona.paths import set_allowed

    set_allowed(allow_path)


@app.command("version")
def version() -> None:
    """Print the rolekit version."""
    from rolekit import __version__

    typer.echo(__version__)


# Before any command module imports mlx: kernel caches under $ROLEKIT_CACHE (read when MLX starts
# CUDA), and on Linux, bind MLX's CPU BLAS to the system OpenBLAS (codec/blas.py says why).
configure_kernel_caches()
preload_openblas()
for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


@functools.cache
def _command() -> click.Command:
    """The click command tree of `app`, built once per process (typer rebuilds it on every call)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: RolekitError becomes one clear message and exit code 2, never a traceback."""
    try:
        _command().main(args=argv, prog_name="rolekit", standalone_mode=True)
    except RolekitError as exc:  # raised outside click's own handling
        print_error(exc)
        sys.exit(exc.exit_code)
    except RuntimeError as exc:  # MLX compiled a kernel's placeholder: the kernel cache moved mid-run
        if MISSING not in str(exc):
            raise
        print_error(KernelError(next(line for line in str(exc).splitlines() if MISSING in line).strip()))
        sys.exit(KernelError.exit_code)
    except OSError as exc:  # a path the system refuses (name too long, permission, ...): the user's input
        if exc.filename is None:
            raise
        print_error(ConfigError(problems=[Problem(exc.strerror or str(exc), str(exc.filename))]))
        sys.exit(ConfigError.exit_code)
