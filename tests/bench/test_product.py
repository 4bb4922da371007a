"""`rolekit bench engine`: the product path (the loader `respond` uses), and the reference runs
whose torch.compile must really compile."""

from __future__ import annotations

import json
import subprocess

from typer.testing import CliRunner

from rolekit.cli.app import app

RUNNER = CliRunner()


def test_bench_engine_times_the_model_as_respond_loads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "engine.json"
    args = [
        "bench",
        "engine",
        "-m",
        "tiny",
        "--quant",
        "q4",
        "--steps",
        "4",
        "--no-reference",
        "--json-out",
        str(out),
    ]
    res = RUNNER.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    (r,) = report["results"]
    assert r["variant"] == "product" and r["model"] == "tiny-v2-q4" and r["quant"] == "q4"
    assert r["random_weights"] is True and r["dtype"] == "fp32" and r["step"]["n"] == 4
    assert len(r["warmup_steps_ms"]) == 4 and r["weights_gb"] > 0 and r["rtf"] > 0
    assert (tmp_path / "cache" / "models" / "tiny-v2-q4" / "config.json").is_file()  # converted on first load
    bad = RUNNER.invoke(app, ["bench", "engine", "-m", "tiny", "--quant", "fp32", "--no-reference"])
    assert bad.exit_code == 2 and "--dtype fp32" in bad.output


def test_reference_child_clears_no_torch_compile_and_rejects_an_uncompiled_run(monkeypatch):
    from rolekit.bench import reference

    seen = {}

    def fake_run(cmd, env, **kw):
        seen[json.loads(cmd[-1])["compile"]] = env.get("NO_TORCH_COMPILE")
        body = {"runtime": "kyutai-moshi-torch", "step": {"median": 2.0}, "compiled_graphs": 0}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(body) + "\n", "")

    monkeypatch.setenv("NO_TORCH_COMPILE", "1")  # as bench/gpu_setup.sh exports it
    monkeypatch.setattr(reference.subprocess, "run", fake_run)
    graphs = reference.reference_in_child({}, 1, 2, 1, torch_compile=False)
    compiled = reference.reference_in_child({}, 1, 2, 1, torch_compile=True)
    assert seen == {False: "1", True: None}
    assert graphs["variant"] == "lmgen" and "error" not in graphs
    assert compiled["variant"] == "lmgen+compile" and "no graph" in compiled["error"]


def test_reference_child_runs_kyutai_lmgen_in_its_own_process():
    from rolekit.bench.reference import reference_in_child
    from rolekit.lm.config import tiny

    r = reference_in_child(tiny().to_kyutai(), batch=1, steps=3, warmup=3, torch_compile=False)
    assert "error" not in r, r
    assert r["variant"] == "lmgen" and r["torch_compile"] is False and r["step"]["n"] == 3
