"""Mimi codec timing, side by side in one process: our MLX Mimi (eager steps, and the
`mx.compile` steps of `codec.compiled`), Kyutai's PyTorch Mimi (streaming) and rustymimi (Rust,
PyPI), all with the same random weights.

`bench_mimi()` returns plain data; `rolekit bench mimi` (cli/bench.py) prints it and writes it to
bench/RESULTS.md. Times are ms per 80 ms frame (1920 samples) for one `encode_step` and one
`decode_step` of a batch, after warm-up frames. torch and rustymimi are optional: a backend that
cannot be imported is reported with its error instead of numbers.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.frames import FRAME_SAMPLES, SAMPLE_RATE

BACKENDS = ("mlx", "mlx-compiled", "torch", "rustymimi")


def bench_mimi(
    frames: int = 50,
    batch: int = 1,
    size: str = "full",
    warmup: int = 3,
    seed: int = 0,
    backends: tuple[str, ...] = BACKENDS,
    torch_threads: int = 1,
) -> dict[str, Any]:
    """Median / p10 / p90 ms per frame of encode_step and decode_step for each backend."""
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    from rolekit.bench.kyutai_mimi import build_reference, save_reference
    from rolekit.codec.compiled import CompiledMimi
    from rolekit.codec.config import mimi_202407, tiny
    from rolekit.codec.weights import load_mimi
    from rolekit.nn.kernels import Kernels

    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    cfg = mimi_202407() if size == "full" else tiny()
    pcm = _signal(batch, frames + warmup, seed)
    result: dict[str, Any] = {
        "size": size,
        "frames": frames,
        "warmup": warmup,
        "batch": batch,
        "machine": _machine(),
        "backends": {},
    }
    import torch

    torch.set_num_threads(torch_threads)
    ref = build_reference(cfg, seed=seed)  # the random weights every backend shares
    with tempfile.TemporaryDirectory() as tmp:
        path = save_reference(ref, Path(tmp) / "tokenizer-e351c8d8-checkpoint125.safetensors")
        codes: dict[str, np.ndarray] = {}
        loaded: list[Any] = []  # one MLX Mimi shared by the eager and the compiled runs

        def mimi() -> Any:
            if not loaded:
                loaded.append(load_mimi(path, cfg.num_codebooks, cfg=cfg))
            return loaded[0]

        runners: dict[str, Callable[[], tuple[dict, np.ndarray]]] = {
            "mlx": lambda: _run_mlx(mimi(), pcm, warmup),
            "mlx-compiled": lambda: _run_mlx(CompiledMimi(mimi(), Kernels.for_device()), pcm, warmup),
            "torch": lambda: _run_torch(ref, pcm, warmup, torch),
            "rustymimi": lambda: _run_rustymimi(path, cfg.num_codebooks, pcm, warmup),
        }
        for name in backends:
            if name == "rustymimi" and size != "full":
                result["backends"][name] = {"error": "rustymimi only builds the real-size Mimi"}
                continue
            try:
                stats, codes[name] = runners[name]()
            except Exception as exc:  # an optional backend missing or failing is part of the report
                first_line = (str(exc).splitlines() or [""])[0]
                stats = {"error": f"{type(exc).__name__}: {first_line}"}
            result["backends"][name] = stats
    if "torch" in codes:
        result["torch_threads"] = torch_threads
        for name, c in codes.items():
            if name != "torch":
                result["backends"][name]["codes_equal_torch"] = float((c == codes["torch"]).mean())
    return result


def _signal(batch: int, frames: int, seed: int) -> np.ndarray:
    """Speech-band test audio [B, 1, frames * 1920]: three sines plus noise per row."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    rows = []
    for _ in range(batch):
        x = sum(0.2 * np.sin(2 * np.pi * rng.uniform(100, 900) * t) for _ in range(3))
        rows.append(x + 0.05 * rng.standard_normal(t.shape))
    return np.stack(rows)[:, None, :].astype(np.float32)


def _stats(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000.0
    return {
        "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
    }


def _frames(pcm: np.ndarray) -> list[np.ndarray]:
    return [
        pcm[..., i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(pcm.shape[-1] // FRAME_SAMPLES)
    ]


def _summary(enc: list[float], dec: list[float], warmup: int) -> dict[str, Any]:
    return {
        "encode_step": _stats(enc[warmup:]),
        "decode_step": _stats(dec[warmup:]),
        "first_step_ms": {"encode": enc[0] * 1000.0, "decode": dec[0] * 1000.0},  # + trace / JIT
    }


def _run_mlx(mimi: Any, pcm: np.ndarray, warmup: int) -> tuple[dict, np.ndarray]:
    import mlx.core as mx

    state = mimi.make_state(pcm.shape[0])
    enc, dec, codes = [], [], []
    for frame in _frames(pcm):
        x = mx.array(frame)
        mx.eval(x)
        t0 = time.perf_counter()
        c = mimi.encode_step(x, state)
        mx.eval(c, *state.arrays())
        t1 = time.perf_counter()
        out = mimi.decode_step(c, state)
        mx.eval(out, *state.arrays())
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        codes.append(np.array(c))
    return _summary(enc, dec, warmup), np.concatenate(codes, -1)


def _run_torch(ref: Any, pcm: np.ndarray, warmup: int, torch: Any) -> tuple[dict, np.ndarray]:
    enc, dec, codes = [], [], []
    with torch.no_grad(), ref.streaming(pcm.shape[0]):
        for frame in _frames(pcm):
            x = torch.from_numpy(frame)
            t0 = time.perf_counter()
            c = ref.encode(x)
            t1 = time.perf_counter()
            ref.decode(c)
            t2 = time.perf_counter()
            enc.append(t1 - t0)
            dec.append(t2 - t1)
            codes.append(c.numpy())
    return _summary(enc, dec, warmup), np.concatenate(codes, -1)


def _run_rustymimi(path: Path, num_codebooks: int, pcm: np.ndarray, warmup: int) -> tuple[dict, np.ndarray]:
    """rustymimi streams one conversation per Tokenizer: a batch is B tokenizers, timed together."""
    import rustymimi

    toks = [rustymimi.Tokenizer(str(path), num_codebooks=num_codebooks) for _ in range(pcm.shape[0])]
    enc, dec, codes = [], [], []
    for frame in _frames(pcm):
        t0 = time.perf_counter()
        cs = [tok.encode_step(frame[b : b + 1]) for b, tok in enumerate(toks)]
        t1 = time.perf_counter()
        for c, tok in zip(cs, toks, strict=True):
            tok.decode_step(c)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        codes.append(np.concatenate(cs, 0).astype(np.int64))
    return _summary(enc, dec, warmup), np.concatenate(codes, -1)


def _machine() -> dict[str, Any]:
    """Where the numbers come from: CPU, core count, and which BLAS MLX's CPU backend got."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    info["cpus"] = os.cpu_count()
    try:
        import mlx.core as mx

        info["mlx_device"] = str(mx.default_device())
    except Exception:  # mlx missing: the mlx backend reports the error
        pass
    try:
        maps = Path("/proc/self/maps").read_text()
        info["blas"] = "openblas (preloaded)" if "libopenblas" in maps else "mlx bundled"
    except OSError:
        info["blas"] = "unknown"
    return info


def format_markdown(result: dict[str, Any]) -> str:
    """A Markdown table of one `bench_mimi` result (for bench/RESULTS.md)."""
    m = result["machine"]
    lines = [
        f"Mimi {result['size']}, batch {result['batch']}, {result['frames']} frames "
        f"(+{result['warmup']} warm-up); {m.get('processor')}, {m.get('cpus')} CPUs, "
        f"MLX {m.get('mlx_device')}, BLAS {m.get('blas')}, torch threads {result.get('torch_threads', '-')}",
        "",
        "| backend | encode_step ms (median [p10, p90]) | decode_step ms (median [p10, p90]) | codes = torch |",
        "|---|---|---|---|",
    ]
    for name, r in result["backends"].items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | |")
            continue
        cells = [
            f"{r[k]['median_ms']:.1f} [{r[k]['p10_ms']:.1f}, {r[k]['p90_ms']:.1f}]"
            for k in ("encode_step", "decode_step")
        ]
        eq = r.get("codes_equal_torch")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {'-' if eq is None else f'{eq:.1%}'} |")
    return "\n".join(lines) + "\n"


def _random_mimis(size: str, seed: int, count: int) -> tuple[Any, list[Any]]:
    """(cfg, `count` MLX Mimis) of one set of random weights, written in the real format and loaded."""
    from rolekit.bench.kyutai_mimi import build_reference, save_reference
    from rolekit.codec.config import mimi_202407, tiny
    from rolekit.codec.weights import load_mimi

    cfg = mimi_202407() if size == "full" else tiny()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_reference(build_reference(cfg, seed=seed), Path(tmp) / "mimi.safetensors")
        return cfg, [load_mimi(path, cfg.num_codebooks, cfg=cfg) for _ in range(count)]


def bench_mimi_pair(
    frames: int = 150, batch: int = 1, size: str = "full", warmup: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Eager vs compiled MLX Mimi steps, alternating frame by frame on one set of random weights
    (so that drifts of a shared machine hit both alike), split at the transformer ring wrap
    (`context` 25 Hz steps = 125 frames at full size): before it the compiled step attends to (and
    shifts) all `context` cache slots, eager only to the filled ones; after it both do the same."""
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    import mlx.core as mx

    from rolekit.codec.compiled import CompiledMimi
    from rolekit.nn.kernels import Kernels

    cfg, (eager,) = _random_mimis(size, seed, 1)
    pcm = _signal(batch, frames, seed)
    codecs = {"mlx": eager, "mlx-compiled": CompiledMimi(eager, Kernels.for_device())}
    states = {name: c.make_state(batch) for name, c in codecs.items()}
    wrap = -(-cfg.context // cfg.downsample_stride)  # first frame whose step wraps the ring
    times: dict[str, dict[str, list[float]]] = {n: {"enc": [], "dec": []} for n in codecs}
    for frame in _frames(pcm):
        x = mx.array(frame)
        mx.eval(x)
        for name, codec in codecs.items():
            t0 = time.perf_counter()
            c = codec.encode_step(x, states[name])
            mx.eval(c, *states[name].arrays())
            t1 = time.perf_counter()
            out = codec.decode_step(c, states[name])
            mx.eval(out, *states[name].arrays())
            times[name]["enc"].append(t1 - t0)
            times[name]["dec"].append(time.perf_counter() - t1)
    phases = {"before_wrap": slice(warmup, wrap), "after_wrap": slice(wrap, frames)}
    result: dict[str, Any] = {"size": size, "batch": batch, "frames": frames, "wrap_frame": wrap}
    result["machine"] = _machine()
    for phase, sl in phases.items():
        if sl.start >= sl.stop:
            continue
        result[phase] = {name: {k: _stats(v[sl]) for k, v in t.items()} for name, t in times.items()}
    return result


def main(argv: list[str] | None = None) -> None:
    """`python -m rolekit.bench.mimi [BATCH [FRAMES [SIZE]]]`: `bench_mimi_pair` as JSON."""
    import json
    import sys

    from rolekit.codec.blas import preload_openblas

    preload_openblas()  # as the CLI does: before mlx is imported
    args = sys.argv[1:] if argv is None else argv
    batch, frames = (int(a) for a in (args + ["1", "150"])[:2])
    size = args[2] if len(args) > 2 else "full"
    print(json.dumps(bench_mimi_pair(frames=frames, batch=batch, size=size), indent=1))


if __name__ == "__main__":
    main()
