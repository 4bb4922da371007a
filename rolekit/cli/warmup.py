"""`rolekit warmup`: load a model, prefill a short persona, build its graphs and kernels (cached on
disk for the next process), then time the first real steps: the cold-start measurement."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer

from rolekit.atomic import write_text
from rolekit.cli import options as model_opts
from rolekit.cli.user_input import user_errors
from rolekit.errors import ConfigError

PROMPT = "You enjoy having a good conversation."


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
    app.command("warmup")(warmup_command)


def warmup_command(
    model: str = model_opts.MODEL,
    dtype: str = model_opts.DTYPE,
    quant: str = model_opts.QUANT,
    compat: str = model_opts.COMPAT,
    kernels: str = model_opts.KERNELS,
    batch: int = typer.Option(1, "--batch", help="Conversations at once (graphs are built per batch size)."),
    steps: int = typer.Option(3, "--steps", help="Real steps timed after the warm-up."),
    voice: str = typer.Option("NATF2", "--voice", help="Voice preset of the prefill."),
    json_out: Path | None = typer.Option(None, "--json-out", help="Also write the summary JSON here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No status lines."),
) -> None:
    """Build a model's compiled graphs and GPU kernels now (kept in $ROLEKIT_CACHE/kernels) and time
    a fresh process's path to its first real step: load, prefill, warm-up, first steps."""
    with user_errors():
        if batch < 1 or steps < 1:
            raise ConfigError(f"--batch and --steps must be >= 1, got {batch} and {steps}")
        if json_out is not None and not json_out.expanduser().resolve().parent.is_dir():
            raise ConfigError(f"--json-out {json_out}: the folder does not exist")
        summary = run_warmup(
            model, model_opts.load_options(dtype, quant, compat, batch, kernels), batch, steps, voice, quiet
        )
    line = json.dumps(summary)
    if json_out is not None:
        write_text(json_out, line + "\n")
    typer.echo(line)


def run_warmup(model: str, load: Any, batch: int, steps: int, voice: str, quiet: bool) -> dict[str, Any]:
    import mlx.core as mx
    import numpy as np

    from rolekit import models
    from rolekit.engine.engine import Engine
    from rolekit.frames import FRAME_SAMPLES
    from rolekit.kernelcache import cubin_dir
    from rolekit.lm.precision import device_kind
    from rolekit.lm.sampling import SamplingParams
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.schema import Persona

    start = time.perf_counter()
    bundle = model_opts.load_model(model, load, quiet)
    load_s = time.perf_counter() - start
    persona = Persona(name="warmup", prompt=PROMPT, voice=voice)
    plan = compile_persona(persona, {}, bundle.tokenizer)
    prompt = models.load_voice(bundle, plan.voice)
    engine = Engine(bundle, batch=batch, params=SamplingParams(), seed=0, kernels=bundle.kernels)
    t0 = time.perf_counter()
    engine.prefill([plan] * batch, [prompt] * batch)
    mx.eval(*engine.lm_cache.arrays())
    prefill_ms = (time.perf_counter() - t0) * 1000.0
    warm = model_opts.warm(engine, quiet)
    silence = np.zeros((batch, FRAME_SAMPLES), np.float32)
    steps_ms = []
    for _ in range(steps):
        t0 = time.perf_counter()
        engine.step(silence)
        steps_ms.append(round((time.perf_counter() - t0) * 1000.0, 2))
    first_s = warm.seconds + steps_ms[0] / 1000.0  # from the prefill's end to the first real step
    return {
        **bundle.describe(),
        "device": device_kind(),
        "batch": batch,
        "load_s": round(load_s, 2),
        "prefill_ms": round(prefill_ms, 1),
        "warmup_steps_ms": [round(ms, 1) for ms in warm.steps_ms],
        "warmup_graphs": warm.graphs,
        "warmup_graphs_s": round(warm.graphs_ms / 1000.0, 2),
        "warmup_s": round(warm.seconds, 2),
        "steps_ms": steps_ms,
        "prefill_to_first_step_s": round(first_s, 2),
        # the same from the prefill's start (its prompt pass and the compiles it starts included)
        "prefill_start_to_first_step_s": round(prefill_ms / 1000.0 + first_s, 2),
        "rolekit_kernels": warm.kernel_report(),
        "kernel_caches": {
            **{k: os.environ.get(k, "") for k in ("MLX_PTX_CACHE_DIR", "CUDA_CACHE_PATH")},
            "rolekit": str(cubin_dir()),
        },
    }
