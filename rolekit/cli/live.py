"""`rolekit live` (talk to a persona through microphone and speaker) and `rolekit devices`."""

from __future__ import annotations

import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from rolekit.cli import options as model_opts
from rolekit.cli.user_input import MAX_SEED, finite, parse_vars
from rolekit.errors import DeviceError
from rolekit.hub import rolekit_cache

DEFAULT_RUNS = Path("transcripts") / "live"  # next to the scripted runs of `rolekit run`
DEFAULT_SEED = 42424242  # NVIDIA's server seed, as in `rolekit respond`


def register(app: typer.Typer) -> None:
    """Add `live` and `devices` to the rolekit app."""
    app.command("devices")(devices)
    app.command("live")(live)


def devices(
    as_json: bool = typer.Option(False, "--json", help="Print the devices as JSON."),
) -> None:
    """List audio devices (> default input, < default output)."""
    import dataclasses
    import json

    from rolekit.audio.devices import list_devices, no_devices_message
    from rolekit.cli.tables import print_table

    found = list_devices()
    if not found:
        raise DeviceError(no_devices_message())
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(d) for d in found], indent=2, ensure_ascii=False))
        return
    rows = [
        [
            (">" if d.default_input else " ") + ("<" if d.default_output else " "),
            str(d.index),
            d.name,
            d.hostapi,
            str(d.max_input_channels),
            str(d.max_output_channels),
            f"{d.default_samplerate:g}",
        ]
        for d in found
    ]
    print_table(["default", "#", "name", "host API", "in", "out", "rate"], rows, full=("name",))
    typer.echo(
        "> default input, < default output; pick with --input-device/--output-device (index or name)",
        err=True,
    )


def live(
    persona: str = typer.Argument(..., help="persona name (personas/NAME.yaml) or path to a persona YAML"),
    var: list[str] = typer.Option([], "--var", help="template variable NAME=VALUE (repeatable)"),
    model: str = model_opts.MODEL,
    dtype: str = model_opts.DTYPE,
    quant: str = model_opts.QUANT,
    compat: str = model_opts.COMPAT,
    kernels: str = model_opts.KERNELS,
    input_device: str | None = typer.Option(
        None, "--input-device", help="microphone: index or name (see `rolekit devices`)"
    ),
    output_device: str | None = typer.Option(None, "--output-device", help="speaker: index or name"),
    record: Path | None = typer.Option(
        None, "--record", help="run folder to save (default transcripts/live/PERSONA-TIME)"
    ),
    transcribe: bool = typer.Option(False, "--transcribe", help="add Whisper transcripts of both channels"),
    whisper: str | None = typer.Option(None, "--whisper", help="mlx-whisper folder or hub id (--transcribe)"),
    seconds: float | None = typer.Option(
        None, "--seconds", callback=finite(0.08, 86_400.0), help="stop after this many seconds"
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", min=0, max=MAX_SEED, help="sampling seed"),
    prebuffer: int = typer.Option(3, "--prebuffer", min=0, max=25, help="playback pre-buffer, 80 ms frames"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse the prefill snapshot of this persona"),
) -> None:
    """Talk to a persona in real time through microphone and speaker (full duplex; use headphones)."""
    from rich.console import Console
    from rich.markup import escape

    from rolekit.audio.stream import DuplexStream
    from rolekit.session.live import HEADPHONES_HINT, LiveOptions, run_live, save_live

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    values = parse_vars(var)
    if record is not None:  # checked before the devices open and the model loads
        from rolekit.outputs import check_output_dir

        check_output_dir(record, "--record")
    console.print(f"[yellow]{HEADPHONES_HINT}[/]")
    load = model_opts.load_options(dtype, quant, compat, kernels=kernels)  # bad options before devices
    # devices next: a missing microphone is reported before the model loads
    stream = DuplexStream(input_device, output_device, prebuffer_frames=prebuffer)
    prepared = _prepare(persona, values, model, seed, cache, load)
    meta = prepared["meta"]
    folder = record or DEFAULT_RUNS / f"{meta['persona']}-{datetime.now():%Y%m%d-%H%M%S}"
    meta["run_id"] = Path(folder).name
    console.print(
        escape(
            f"persona {meta['persona']} · voice {meta['voice']} · model {meta['model_id']} · "
            f"mic {stream.input_device.name!r} → speaker {stream.output_device.name!r} @ {stream.rate} Hz"
        )
    )
    if meta.get("is_random_model"):
        console.print("[yellow]random test model: expect noise, not speech[/]")
    console.print("preparing the persona (prefill) … then speak; Ctrl-C ends the session")
    with _StatusLine(console) as status:
        result = run_live(
            prepared["engine"],
            stream,
            piece=prepared["piece"],
            meta=meta,
            options=LiveOptions(max_seconds=seconds),
            prepare=prepared["prefill"],
            on_status=status.update,
            on_warning=status.warn,
        )
    if result.record.frames == 0:
        console.print("stopped before the conversation started: nothing to save")
        if result.failure is not None:
            raise result.failure
        return
    console.print("saving" + (" and transcribing" if transcribe else "") + " …")
    path = save_live(result, folder, transcribe=transcribe, whisper=whisper)
    m = result.record.meta
    st = m["stream"]
    console.print(
        escape(
            f"saved {path} · {result.record.duration:.1f} s, {m['ms_per_step_mean']:.1f} ms/step "
            f"(RTF {m['rtf']:.2f}), late {m['late_frames']}, underruns {st.get('underruns', 0)}, "
            f"dropped {st.get('dropped_input', 0)} · `rolekit report {path}`"
        )
    )
    if result.failure is not None:
        failure = type(result.failure)(f"{result.error} (the session so far is saved in {path})")
        raise failure


def _prepare(
    persona_name: str, values: dict[str, str], model: str, seed: int, cache: bool, load: Any = None
) -> dict[str, Any]:
    """Persona -> plan, model -> engine, and the prefill (or its cached snapshot) to run before the stream opens."""
    import dataclasses

    from rolekit import __version__, models
    from rolekit.engine.engine import Engine
    from rolekit.engine.snapshot import prefill_cached
    from rolekit.lm.sampling import SamplingParams
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.loader import load_persona
    from rolekit.session.scripted import piece_of

    p = load_persona(persona_name)
    bundle = model_opts.load_model(model, load or model_opts.load_options("auto", "auto", "kyutai"))
    voice = models.load_voice(bundle, p.voice)
    plan = compile_persona(p, values, bundle.tokenizer, voice.frames)
    params = dataclasses.replace(SamplingParams(), **plan.sampling)
    engine = Engine(bundle, batch=1, params=params, seed=seed, kernels=bundle.kernels)
    meta = {
        "scenario": "live",
        "run_id": None,
        "persona": plan.persona or p.name,
        "persona_hash": plan.content_hash,
        "vars": values,
        "model_id": bundle.model_id,
        "is_random_model": bool(bundle.is_random),
        "model": bundle.describe(),
        "seed": seed,
        "voice": plan.voice,
        "sampling": dataclasses.asdict(params),
        "prefill_frames": plan.frames,
        "rolekit_version": __version__,
        "mlx_version": _mlx_version(),
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
    }
    cache_dir = rolekit_cache() / "prefill" if cache else None

    def prefill() -> None:
        meta["prefill_cached"] = prefill_cached(engine, [plan], [voice], cache_dir)
        meta["warmup_s"] = round(model_opts.warm(engine).seconds, 2)  # before the microphone opens

    return {
        "engine": engine,
        "meta": meta,
        "piece": lambda i: piece_of(i, bundle.tokenizer.piece),
        "prefill": prefill,
    }


def _mlx_version() -> str:
    import mlx.core as mx

    return str(getattr(mx, "__version__", "?"))


class _StatusLine:
    """One rich status line, refreshed from the session thread (no refresh thread of its own)."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.console = console
        self._live = Live("", console=console, auto_refresh=False, transient=True)

    def __enter__(self) -> _StatusLine:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, s: Any) -> None:
        line = (
            f"{s.seconds:6.1f} s  {s.ms_per_step:5.1f} ms/step  RTF {s.rtf:4.2f}  late {s.late_frames}  "
            f"underruns {s.underruns}  overruns {s.overruns}  dropped {s.dropped_input}  "
            f"context {s.frames_left / 12.5:5.1f} s  │ {s.text}"
        )
        self._live.update(line, refresh=True)

    def warn(self, message: str) -> None:
        self._live.console.print(f"[yellow]warning:[/] {message}")
