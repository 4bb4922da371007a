"""`rolekit bench` (the installed command): the product prefill through the CLI, the refusal of
the lab benchmarks that moved to benchmarks/, bad options, statistics, the converter benchmark.
No timing assertions: benchmarks are commands, not tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rolekit.bench.timing import summarize
from rolekit.cli.app import app

RUNNER = CliRunner()


def _rolekit(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_TORCH_COMPILE="1", OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "rolekit", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_bench_prefill_times_the_model_as_respond_loads_it(tmp_path, monkeypatch):
    """The tiny model through the product loader, its persona prefilled batched, stepwise and
    through the prefill cache (the second cached run restores); the table prints too."""
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "prefill.json"
    res = RUNNER.invoke(app, ["bench", "prefill", "-m", "tiny", "--batch", "2", "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["what"] == "prefill" and report["options"]["model"] == "tiny"
    assert {"date", "machine", "cpus"} <= set(report["host"])
    (r,) = report["results"]
    assert r["bench"] == "prefill" and r["variant"] == "prefill" and r["batch"] == 2
    assert r["model"] == "tiny-v2" and r["random_weights"] is True and "noise" in r["label"]
    assert r["frames"] > 0 and r["peak_rss_gb"] > 0
    for key in ("batched_ms", "stepwise_ms", "first_run_with_save_ms", "restored_ms"):
        assert r[key] > 0, key
    assert r["first_run_restored"] is False and r["restored"] is True
    assert r["stepwise_over_batched"] == pytest.approx(r["stepwise_ms"] / r["batched_ms"], rel=0.01, abs=0.01)


@pytest.mark.parametrize("lab", ["lm", "phases"])
def test_lab_benchmarks_are_refused_with_the_valid_choices(lab):
    proc = _rolekit("bench", lab)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "engine | prefill | mimi | convert | all" in proc.stderr and "benchmarks/" in proc.stderr


@pytest.mark.parametrize(
    "args, named",
    [
        (["mimi", "--size", "huge"], "--size"),
        (["engine", "--start", "300"], "--start"),  # the lab's options are gone from the command
        (["engine", "-m", "tiny", "--quant", "fp32"], "--dtype fp32"),
        (["prefill", "-m", "tiny", "--dtype", "fp64"], "--dtype"),
    ],
)
def test_bench_bad_option_is_a_clean_error(args, named):
    proc = _rolekit("bench", *args)
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr


def test_summarize_percentiles():
    s = summarize([float(x) for x in range(1, 11)])
    assert s == {"n": 10, "median": 5.5, "p10": 1.9, "p90": 9.1, "min": 1.0}
    assert summarize([])["n"] == 0


def test_random_checkpoint_converts(tmp_path):
    from rolekit.bench.convert import bench_convert

    res = bench_convert("tiny", str(tmp_path), bits=(4,))
    assert res["tensors"] > 100
    (run,) = res["runs"]
    assert run["exit_code"] == 0, run
    assert run["peak_rss_gb"] > 0 and run["seconds"] > 0
    assert not (tmp_path / "src").exists()
