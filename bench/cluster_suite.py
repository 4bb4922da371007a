"""Suite wall time, local vs a Ray cluster on this machine, in one run (issue 22). Not a test.

    python bench/cluster_suite.py [--runs 8] [--jobs 1] [--tail 2.0] [--workers 2] [--transcribe] [--json]

Writes a throwaway project (the tiny model, one persona, `--runs` scripted conversations) and runs it:
1. locally, in this process (`run_suite` with the MLX backend, as `rolekit test` does);
2. on a private `ray start --head` (127.0.0.1, CPUs = --workers), with 1 worker and with --workers
   workers (`--actors-per-node`).
For each: the suite's wall time (model loading and, on the cluster, worker start included), the time
after the first run came back (steady state), and the driver's time per run in `finish` (save,
evaluate, reports). The per-run overhead of the cluster path is (1-worker wall - local wall) / runs.
Every configuration's result files are checked equal to the local run's (timings aside).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PERSONA = """name: shop
voice: NATF2
variables:
  company: {default: Northwind}
prompt: You work for {{ company }} and your name is Maya.
"""
SCENARIO = """persona: shop
lead_in: 0.5
tail: {tail}
seed: 3
repeats: {repeats}
matrix: {{company: [Contoso, Fabrikam]}}
user:
  - say: "Hello, I need a refund."
  - after: agent_done
    silence: 0.4
    timeout: 2.0
    say: "Thanks."
expect:
  - not_says: {{contains: zzzqqq, source: monologue}}
"""
TIMING = {"started_at", "wall_s", "batch_step_ms_mean", "step_ms_mean", "step_ms_p90", "realtime_factor"}


def _project(folder: Path, runs: int, tail: float) -> Path:
    (folder / "personas").mkdir(parents=True)
    (folder / "scenarios").mkdir()
    (folder / "personas" / "shop.yaml").write_text(PERSONA)
    text = SCENARIO.format(tail=tail, repeats=max(1, runs // 2))
    (folder / "scenarios" / "bench.yaml").write_text(text)
    return folder / "scenarios"


def _strip(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING and k != "late_frames"}
    return obj


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return sorted((_strip(r) for r in rows), key=lambda r: (r["scenario"], r["run_id"]))


def _suite(scenarios: Path, out: Path, args: argparse.Namespace, executor_of: object = None) -> dict:
    from rolekit.suite.execute import GroupFinisher, SuiteListener, SuiteOptions, run_suite
    from rolekit.suite.plan import plan_suite

    runs = plan_suite([scenarios])
    finish_s: list[float] = []
    first: list[float] = []
    original = GroupFinisher.__call__

    def timed(self: GroupFinisher, group: list, result: object) -> list:  # the driver's share per batch
        t = time.perf_counter()
        rows = original(self, group, result)
        finish_s.append(time.perf_counter() - t)
        return rows

    GroupFinisher.__call__ = timed
    options = SuiteOptions(out=out, transcribe=args.transcribe, batch=args.jobs)
    t0 = time.perf_counter()
    listener = SuiteListener(on_run_end=lambda row: first or first.append(time.perf_counter()))
    try:
        if executor_of is None:
            from rolekit.suite.backend import MlxBackend

            outcome = run_suite(runs, MlxBackend("tiny"), options, listener)
        else:
            with executor_of() as cluster:
                outcome = run_suite(runs, cluster.backend, options, listener, executor=cluster)
    finally:
        GroupFinisher.__call__ = original
    wall = time.perf_counter() - t0
    assert all(r["status"] == "pass" for r in outcome.rows), outcome.rows
    return {
        "runs": len(runs),
        "wall_s": round(wall, 2),
        "after_first_s": round(wall - (first[0] - t0), 2),
        "driver_ms_per_run": round(1000 * sum(finish_s) / len(runs), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--tail", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--transcribe", action="store_true", help="Whisper tiny.en on the workers / locally")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from rolekit import models
    from rolekit.codec.blas import preload_openblas
    from rolekit.suite.cluster import ClusterOptions, RayCluster
    from rolekit.testing.ray_head import local_ray_head

    preload_openblas()
    with tempfile.TemporaryDirectory(prefix="rk-bench-") as tmp:
        tmp_path = Path(tmp)
        os.environ.setdefault("ROLEKIT_CACHE", str(tmp_path / "cache"))
        models.resolve("tiny")  # built before anything is timed
        scenarios = _project(tmp_path / "project", args.runs, args.tail)
        os.chdir(tmp_path / "project")
        table = {"local": _suite(scenarios, tmp_path / "local", args)}
        env = {"ROLEKIT_CACHE": os.environ["ROLEKIT_CACHE"], "PYTHONPATH": str(ROOT)}
        with local_ray_head(num_cpus=args.workers, env=env) as head:
            for n in (1, args.workers):
                opts = ClusterOptions(address=head.address, actors_per_node=n)
                out = tmp_path / f"cluster{n}"
                table[f"ray, {n} worker(s)"] = _suite(
                    scenarios, out, args, lambda o=opts: RayCluster(o, "tiny")
                )
                assert _rows(out) == _rows(tmp_path / "local"), f"{out}: results differ from the local run"
    local = table["local"]["wall_s"]
    one = table["ray, 1 worker(s)"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "args": vars(args),
        "table": table,
        "ratio_local_over_cluster": round(local / table[f"ray, {args.workers} worker(s)"]["wall_s"], 2),
        "overhead_s_per_run": round((one["wall_s"] - local) / one["runs"], 3),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print("| configuration | runs | suite wall s | after the first result s | driver ms / run |")
    print("|---|---|---|---|---|")
    for name, row in table.items():
        print(
            f"| {name} | {row['runs']} | {row['wall_s']} | {row['after_first_s']} | {row['driver_ms_per_run']} |"
        )
    print(
        f"local / {args.workers}-worker cluster wall: {result['ratio_local_over_cluster']}x; "
        f"cluster overhead per run (1 worker vs local): {result['overhead_s_per_run']} s"
    )


if __name__ == "__main__":
    main()
