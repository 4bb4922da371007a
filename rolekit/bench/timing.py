"""Timing and memory helpers shared by every benchmark: medians with spread, peak memory, host info.

No mlx or torch import here: each benchmark passes its own `sync` callable, so one timing loop
serves MLX (mx.eval) and PyTorch (torch.cuda.synchronize) alike.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """Median, p10, p90, min and count of a list of durations in ms."""
    if not samples_ms:
        return {"n": 0, "median": float("nan"), "p10": float("nan"), "p90": float("nan"), "min": float("nan")}
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "n": int(a.size),
        "median": round(float(np.median(a)), 3),
        "p10": round(float(np.percentile(a, 10)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "min": round(float(a.min()), 3),
    }


def time_calls(fn: Callable[[], Any], steps: int, warmup: int, sync: Callable[[Any], None]) -> list[float]:
    """Call `fn` warmup + steps times; `sync(result)` waits for the device. Returns ms per timed call."""
    for _ in range(warmup):
        sync(fn())
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sync(fn())
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3)


def children_peak_rss_gb() -> float:
    """Largest peak RSS of any waited-for child process, in GB."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9, 3)


def rss_gb() -> float:
    """Current resident set size in GB (from /proc; 0.0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e9, 3)
    except (OSError, ValueError, IndexError):
        return 0.0


def host_info() -> dict[str, Any]:
    """Where a number was measured: machine, CPU count, Python, date (UTC)."""
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def speedup(ref: dict[str, Any], ours: dict[str, Any]) -> float | None:
    """How many times faster ours is than the reference (median step), None when unknown."""
    try:
        a, b = float(ref["step"]["median"]), float(ours["step"]["median"])
    except (KeyError, TypeError, ValueError):
        return None
    return round(a / b, 2) if b > 0 else None
