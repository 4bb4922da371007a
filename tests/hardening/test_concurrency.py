"""Two suites on one output folder, and kill -9 at random points followed by --resume, with the tiny
model in real subprocesses: the second suite is refused, nothing is lost, and results.jsonl ends
with exactly one valid line per run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import rolekit
from rolekit.record import is_complete

RUNS = 8
SCENARIO = f"""persona: refund-desk
lead_in: 0.2
tail: 0.6
repeats: {RUNS}
user:
  - pause: 0.4
"""


def _rolekit(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rolekit", *argv]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(rolekit.__file__).resolve().parents[1])
    return env


def _wait(predicate, proc: subprocess.Popen, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return False


def _lines(out: Path) -> list[str]:
    path = out / "results.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def test_two_suites_and_kill_9_then_resume(tmp_path):
    seed = int(os.environ.get("ROLEKIT_KILL_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    (tmp_path / "scenarios").mkdir()
    scenario = tmp_path / "scenarios" / "c.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "out"
    common = ["--model", "tiny", "--no-transcribe", "--out", str(out)]
    kw = {"cwd": tmp_path, "env": _env(), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}

    first = subprocess.Popen(_rolekit("test", "scenarios", *common), **kw)
    try:
        assert _wait(lambda: (out / "results.jsonl").exists(), first), first.communicate()
        second = subprocess.run(_rolekit("test", "scenarios", *common), timeout=120, **kw)
        running = first.poll() is None
        assert second.returncode == 2, (seed, second.stdout, second.stderr)
        assert "another rolekit suite is writing to this folder" in second.stderr and "--out" in second.stderr
        assert "Traceback" not in second.stderr
        # kill -9 the first suite at a random point: after k finished runs plus a random delay
        k = rng.randint(1, 3)
        _wait(lambda: len(_lines(out)) >= k, first)
        time.sleep(rng.uniform(0.0, 1.5))
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate()
    killed_after = len(_lines(out))

    # `rolekit run --resume`, killed again at a random moment (start-up, a run, a save or an append)
    resumed = subprocess.Popen(_rolekit("run", str(scenario), "--resume", *common), **kw)
    try:
        _wait(lambda: False, resumed, rng.uniform(0.5, 6.0))
        resumed.send_signal(signal.SIGKILL)
    finally:
        resumed.kill()
        resumed.communicate()

    final = subprocess.run(_rolekit("test", "scenarios", "--resume", *common), timeout=300, **kw)
    assert final.returncode == 0, (seed, killed_after, final.stdout, final.stderr)
    assert running, "the first suite ended before the second tried the folder"

    lines = _lines(out)
    rows = [json.loads(line) for line in lines]  # every line is valid JSON
    keys = [f"{r['scenario']}/{r['run_id']}" for r in rows]
    assert sorted(keys) == sorted(f"c/r{i}" for i in range(RUNS)), (seed, keys)
    assert len(lines) == RUNS and all(r["status"] == "pass" for r in rows), (seed, rows)
    for i in range(RUNS):
        assert is_complete(out / "c" / f"r{i}"), (seed, i)
    leftovers = [p.name for p in (out / "c").iterdir() if p.name.endswith((".partial", ".old"))]
    assert not leftovers, (seed, leftovers)
