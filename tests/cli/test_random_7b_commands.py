"""Every command that loads a model takes `-m random-7b`: `respond`, `warmup`, `bench engine`,
`test --jobs 2`, `run` and `convert random-7b DST` (`live`: tests/live/test_cli_live.py). The
`random_7b_cache` fixture puts random-7b's NVIDIA layout, written by its own builder at tiny sizes,
where `random-7b` resolves, so each command runs its real path (quantize on first load included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from rolekit.cli.app import app
from rolekit.report.results import read_results

RUNNER = CliRunner()
PERSONA = "name: shop\nvoice: NATF2\nprompt: You work for Northwind and your name is Maya.\n"
SCENARIO = 'persona: shop\nlead_in: 0.5\ntail: 0.5\nseed: 3\nrepeats: 2\nuser:\n  - say: "Hello."\n'


@pytest.fixture
def cache(random_7b_cache, monkeypatch):
    monkeypatch.setenv("ROLEKIT_CACHE", str(random_7b_cache))
    return random_7b_cache


def _invoke(*args: str) -> str:
    res = RUNNER.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _random(summary: dict) -> None:
    assert summary["random_weights"] is True and "noise" in summary["label"]


def test_respond_warmup_and_bench_engine_run_random_7b(cache, tmp_path):
    sf.write(tmp_path / "in.wav", np.zeros(6 * 1920, np.float32), 24000, subtype="FLOAT")
    out = _invoke(
        "respond",
        "-m",
        "random-7b",
        "--prompt",
        "Hi.",
        "--input",
        str(tmp_path / "in.wav"),
        "--output",
        str(tmp_path / "a.wav"),
    )
    summary = _last_json(out)
    _random(summary)
    # --quant auto on the CPU: q4, converted once into the cache
    assert summary["quant"] == "q4" and summary["model"].endswith("-q4")
    assert sf.info(tmp_path / "a.wav").frames > 0
    warm = _last_json(_invoke("warmup", "-m", "random-7b", "-q", "--steps", "1"))
    _random(warm)
    assert warm["model"] == summary["model"]
    args = ["--steps", "2", "--warmup", "3", "--no-reference", "--json-out", str(tmp_path / "bench.json")]
    _invoke("bench", "engine", "-m", "random-7b", *args)
    report = json.loads((tmp_path / "bench.json").read_text())
    (row,) = report["results"]
    _random(row)
    assert row["model"] == summary["model"] and report["options"]["model"] == "random-7b"


def test_test_and_run_take_random_7b(cache, tmp_path, monkeypatch):
    (tmp_path / "personas").mkdir()
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "personas" / "shop.yaml").write_text(PERSONA)
    (tmp_path / "scenarios" / "hello.yaml").write_text(SCENARIO)
    monkeypatch.chdir(tmp_path)
    common = ["-m", "random-7b", "--no-transcribe"]
    _invoke("test", "scenarios", *common, "--jobs", "2", "--out", str(tmp_path / "suite"))
    rows = read_results(tmp_path / "suite" / "results.jsonl")
    assert sorted(r["run_id"] for r in rows) == ["r0", "r1"]
    assert all(r["random_model"] is True and r["model"]["quant"] == "q4" for r in rows)
    _invoke("run", "scenarios/hello.yaml", *common, "--out", str(tmp_path / "one"))
    assert [r["random_model"] for r in read_results(tmp_path / "one" / "results.jsonl")] == [True, True]


def test_convert_takes_random_7b_as_its_source(cache, tmp_path):
    out = _invoke("convert", "random-7b", str(tmp_path / "q8"), "--bits", "8")
    assert f"wrote {tmp_path / 'q8'} (8-bit)" in out.splitlines()[-1]
    config = json.loads((tmp_path / "q8" / "config.json").read_text())
    assert config["random_weights"] is True and config["quantization"]["bits"] == 8


def test_random_7b_is_refused_before_writing_when_the_disk_is_too_small(tmp_path, monkeypatch, capsys):
    import shutil

    from rolekit.errors import ModelError
    from rolekit.randmodel import build_random_7b

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10**9))
    with pytest.raises(ModelError, match=r"needs 17\.\d GB of free disk, 1\.0 GB free there"):
        build_random_7b(tmp_path / "random-7b-v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random-7b-v1.lock"]  # nothing written
    from rolekit.cli.app import main

    with pytest.raises(SystemExit) as ex:
        main(["model", "random-7b", "--out", str(tmp_path / "r7")])
    code, err = ex.value.code, capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'r7'}: needs 17." in err and "Traceback" not in err
    assert not (tmp_path / "r7").exists()


def test_random_7b_is_refused_before_writing_without_torch(tmp_path, monkeypatch):
    import importlib.util

    from rolekit.errors import ModelError
    from rolekit.randmodel import build_random_7b

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find(name, *a)
    )
    with pytest.raises(ModelError, match=r"\.pt files, written with torch: pip install 'rolekit\[convert\]'"):
        build_random_7b(tmp_path / "random-7b-v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random-7b-v1.lock"]
