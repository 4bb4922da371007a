"""`rolekit respond`: run a persona against a user WAV offline (NVIDIA offline.py, plus --tail)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from rolekit.atomic import write_text
from rolekit.cli import options as model_opts
from rolekit.cli.user_input import MAX_SEED, finite, is_text, parse_vars, user_errors
from rolekit.errors import ConfigError, ModelError, Problem
from rolekit.hub import rolekit_cache
from rolekit.outputs import check_output_file
from rolekit.persona.voices import is_voice_file, voice_frames

DEFAULT_SEED = 42424242  # NVIDIA's server seed
DEFAULT_TAIL = 4.0  # seconds: room for the agent's answer to the input's last words


def register(app: typer.Typer) -> None:
    """Add this module's commands to the rolekit app."""
    app.command("respond")(respond)


def respond(
    input: Path = typer.Option(..., "--input", "-i", help="User audio (any WAV; resampled to 24 kHz mono)."),
    output: Path = typer.Option(..., "--output", "-o", help="Agent audio out: mono 24 kHz WAV."),
    model: str = model_opts.MODEL,
    dtype: str = model_opts.DTYPE,
    quant: str = model_opts.QUANT,
    compat: str = model_opts.COMPAT,
    kernels: str = model_opts.KERNELS,
    channel: int = typer.Option(
        0,
        "--channel",
        min=0,
        help="Channel of a multi-channel --input to use (0 = the first, as NVIDIA's offline.py).",
    ),
    voice: str | None = typer.Option(
        None, "--voice", help="Preset (NATF0..VARM4) or a .safetensors/.pt/.wav file."
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="System prompt text (wrapped in <system> tags)."
    ),
    persona: str | None = typer.Option(None, "--persona", help="Persona name or YAML file."),
    var: list[str] | None = typer.Option(
        None, "--var", help="Persona template variable NAME=VALUE (repeatable)."
    ),
    text_out: Path | None = typer.Option(
        None, "--text-out", help="JSON list: the text piece of each output frame."
    ),
    tokens_out: Path | None = typer.Option(
        None, "--tokens-out", help='JSON {"text": [...], "audio": [[8 ids], ...]}.'
    ),
    tail: float = typer.Option(
        DEFAULT_TAIL,
        "--tail",
        callback=finite(0.0, 240.0),
        help="Seconds to keep generating after the input, the user silent, so the agent can answer "
        "(0: exactly one output frame per input frame, like NVIDIA's offline.py).",
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", min=0, max=MAX_SEED, help="Random seed."),
    greedy: bool = typer.Option(False, "--greedy", help="Argmax everywhere: the whole run is deterministic."),
    temp_text: float | None = typer.Option(
        None, "--temp-text", callback=finite(0.0, 5.0), help="Text temperature (default 0.7)."
    ),
    temp_audio: float | None = typer.Option(
        None, "--temp-audio", callback=finite(0.0, 5.0), help="Audio temperature (default 0.8)."
    ),
    topk_text: int | None = typer.Option(
        None, "--topk-text", min=1, max=1_000_000, help="Text top-k (default 25)."
    ),
    topk_audio: int | None = typer.Option(
        None, "--topk-audio", min=1, max=1_000_000, help="Audio top-k (default 250)."
    ),
    cache: bool = typer.Option(
        True, "--cache/--no-cache", help="Reuse the prefill snapshot of this persona."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Respond to a user recording: one agent frame per input frame (+ --tail), text and tokens optional."""
    with user_errors():
        summary = run_respond(**locals())
    typer.echo(json.dumps(summary))


def _check_options(opts: dict[str, Any]) -> None:
    if (opts["prompt"] is None) == (opts["persona"] is None):
        raise ConfigError("give exactly one of --prompt TEXT or --persona FILE")
    if opts["prompt"] is not None and not is_text(opts["prompt"]):
        raise ConfigError("--prompt: not valid UTF-8 text")
    if opts["var"] and opts["persona"] is None:
        raise ConfigError("--var needs --persona")
    if opts["tail"] < 0:
        raise ConfigError(f"--tail must be >= 0 seconds, got {opts['tail']}")
    for name in ("temp_text", "temp_audio"):
        if opts[name] is not None and opts[name] < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {opts[name]}")
    for name in ("topk_text", "topk_audio"):
        if opts[name] is not None and opts[name] < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {opts[name]}")
    if not Path(opts["input"]).is_file():
        raise ConfigError(f"--input {opts['input']}: no such file")
    for name in ("output", "text_out", "tokens_out"):
        if opts[name] is not None:
            check_output_file(opts[name], f"--{name.replace('_', '-')}")
    voice = opts["voice"]
    if voice is not None and is_voice_file(voice):
        if not Path(voice).expanduser().is_file():
            raise ConfigError(problems=[Problem("no such voice file", voice, field="--voice")])
        try:
            voice_frames(Path(voice).expanduser())  # reads and checks the file's header and size
        except ModelError as exc:
            raise ConfigError(problems=[Problem(str(exc), voice, field="--voice")]) from None


def _persona_and_plan(opts: dict[str, Any], bundle: Any) -> tuple[Any, Any]:
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.loader import load_persona
    from rolekit.persona.schema import Persona

    if opts["persona"] is not None:
        persona = load_persona(opts["persona"])
    else:
        persona = Persona(name="prompt", prompt=opts["prompt"])
    if opts["voice"] is not None:
        persona = persona.model_copy(update={"voice": opts["voice"]})
    return persona, compile_persona(persona, parse_vars(opts["var"]), bundle.tokenizer)


def _sampling(opts: dict[str, Any], persona_sampling: dict[str, float]) -> Any:
    from rolekit.frames import SAMPLING_DEFAULTS
    from rolekit.lm.sampling import SamplingParams

    values: dict[str, Any] = dict(SAMPLING_DEFAULTS)
    values.update(persona_sampling)
    flags = {
        "text_temperature": opts["temp_text"],
        "text_top_k": opts["topk_text"],
        "audio_temperature": opts["temp_audio"],
        "audio_top_k": opts["topk_audio"],
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    return SamplingParams(greedy=bool(opts["greedy"]), **values)


def run_respond(**opts: Any) -> dict[str, Any]:
    """Everything `respond` does; returns the summary dict (printed as one JSON line)."""
    _check_options(opts)
    from rolekit import models
    from rolekit.audio.wav import read_audio, write_wav
    from rolekit.engine.engine import Engine
    from rolekit.engine.offline import frame_user_audio, run_offline
    from rolekit.engine.snapshot import prefill_cached
    from rolekit.frames import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, TEXT_SPECIAL_NAMES

    user = read_audio(opts["input"], channel=int(opts["channel"]))
    load_opts = model_opts.load_options(
        opts["dtype"], opts["quant"], opts["compat"], kernels=opts.get("kernels") or ""
    )
    t0 = time.perf_counter()
    bundle = model_opts.load_model(opts["model"], load_opts, quiet=bool(opts["quiet"]))
    load_s = time.perf_counter() - t0
    persona, plan = _persona_and_plan(opts, bundle)
    voice = models.load_voice(bundle, plan.voice)
    params = _sampling(opts, dict(plan.sampling))
    engine = Engine(bundle, batch=1, params=params, seed=int(opts["seed"]), kernels=bundle.kernels)
    cache_dir = rolekit_cache() / "prefill" if opts["cache"] else None
    t0 = time.perf_counter()
    cached = prefill_cached(engine, [plan], [voice], cache_dir)
    prefill_ms = (time.perf_counter() - t0) * 1000.0
    tail_frames = int(round(opts["tail"] / FRAME_SECONDS))
    frames = frame_user_audio(user, tail_frames)
    # compile stalls before the first timed step: the first steps' and every later step graph's
    warm = model_opts.warm(engine, bool(opts["quiet"]), frames=frames.shape[1])
    with _progress(frames.shape[1], opts["quiet"]) as on_step:
        result = run_offline(engine, frames, on_step)
    if bundle.is_random and not opts["quiet"]:  # after the run too: the last line before the summary
        print(f"random weights: {bundle.label}", file=sys.stderr, flush=True)
    write_wav(opts["output"], result.pcm[0], SAMPLE_RATE)
    text_ids = [int(t) for t in result.text[0]]
    if opts["text_out"] is not None:
        pieces = [TEXT_SPECIAL_NAMES[t] if t in (0, 3) else bundle.tokenizer.piece(t) for t in text_ids]
        _write_json(opts["text_out"], pieces)
    if opts["tokens_out"] is not None:
        _write_json(opts["tokens_out"], {"text": text_ids, "audio": result.audio[0].tolist()})
    steps = result.step_ms
    ms = sum(steps) / len(steps) if steps else 0.0
    return {
        "output": str(opts["output"]),
        **bundle.describe(),
        "channel": int(opts["channel"]),
        "persona": persona.name,
        "voice": plan.voice,
        "prompt_tokens": len(plan.text_ids),
        "prefill_frames": engine.offset - result.frames,
        "prefill_ms": round(prefill_ms, 1),
        "prefill_cached": cached,
        "load_s": round(load_s, 2),
        "warmup_s": round(warm.seconds, 2),
        "input_frames": frames.shape[1] - tail_frames,
        "tail_frames": tail_frames,
        "frames": result.frames,
        "seconds": round(result.frames * FRAME_SAMPLES / SAMPLE_RATE, 3),
        "ms_per_step": round(ms, 2),
        "rtf": round(ms / (FRAME_SECONDS * 1000.0), 3),
        "max_step_ms": round(max(steps, default=0.0), 2),
        # steps longer than the 80 ms frame: what live mode would have played late
        "late_steps": sum(1 for s in steps if s > FRAME_SECONDS * 1000.0),
        "peak_gb": _peak_gb(),
        "seed": int(opts["seed"]),
        "greedy": bool(opts["greedy"]),
        "text": "".join(p for t in text_ids if t not in (0, 3) for p in [bundle.tokenizer.piece(t)]),
    }


def _peak_gb() -> float:
    """Peak memory of this process: MLX's device peak on a GPU, the resident set on the CPU."""
    import resource

    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return round(mx.get_peak_memory() / 1e9, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)


def _write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False) + "\n")


@contextmanager
def _progress(total: int, quiet: bool) -> Iterator[Any]:
    """A rich progress bar on stderr showing ms/step and the real-time factor."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():  # CI logs, pipes: plain one-line events instead of a frozen bar
        yield _plain_progress(total, sys.stderr)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("respond"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[ms]:.1f} ms/step  RTF {task.fields[rtf]:.2f}"),
        console=console,
        transient=False,
    )
    task = progress.add_task("respond", total=total, ms=0.0, rtf=0.0)
    window: list[float] = []

    def on_step(i: int, ms: float) -> None:
        window.append(ms)
        del window[:-25]
        avg = sum(window) / len(window)
        progress.update(task, completed=i + 1, ms=avg, rtf=avg / 80.0)

    with progress:
        yield on_step


PLAIN_EVENT_S = 10.0  # off a terminal, a progress line at most this often (and at the last frame)


def _plain_progress(total: int, stream: Any) -> Any:
    """`on_step(i, ms)` printing `[t s] respond: frame i/total (ms/step, RTF)` lines to `stream`."""
    import time

    t0 = time.perf_counter()
    last = [t0]
    window: list[float] = []
    print(f"[{0.0:7.1f}s] respond: {total} frames", file=stream, flush=True)

    def on_step(i: int, ms: float) -> None:
        window.append(ms)
        del window[:-25]
        now = time.perf_counter()
        if now - last[0] < PLAIN_EVENT_S and i + 1 < total:
            return
        last[0] = now
        avg = sum(window) / len(window)
        print(
            f"[{now - t0:7.1f}s] respond: frame {i + 1}/{total} ({avg:.1f} ms/step, RTF {avg / 80.0:.2f})",
            file=stream,
            flush=True,
        )

    return on_step
