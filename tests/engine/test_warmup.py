"""Warm-up before the first timed step: it leaves the conversation unchanged; `rolekit warmup`;
kernel caches under $ROLEKIT_CACHE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rolekit import models
from rolekit.cli.app import app
from rolekit.engine.engine import Engine
from rolekit.engine.offline import run_offline
from rolekit.engine.warmup import WARMUP_STEPS, warmup
from rolekit.lm.sampling import SamplingParams
from tests.engine.conftest import make_plan, user_frames

RUNNER = CliRunner()


@pytest.mark.parametrize("params", [SamplingParams(greedy=True), SamplingParams()])
def test_warmup_leaves_the_conversation_exactly_as_it_was(tiny_bundle, params):
    plans = [make_plan("NATF1", 9, 1), make_plan("VARM0", 4, 2)]
    voices = [models.load_voice(tiny_bundle, p.voice) for p in plans]
    frames = user_frames(12, 3, batch=2)
    runs = []
    for warm in (False, True):
        engine = Engine(tiny_bundle, 2, params, seed=[5, 6])
        engine.prefill(plans, voices)
        if warm:
            seen: list[int] = []
            result = warmup(engine, on_step=lambda i, ms, seen=seen: seen.append(i))
            assert seen == list(range(WARMUP_STEPS)) and len(result.steps_ms) == WARMUP_STEPS
        res = run_offline(engine, frames)
        runs.append((res.text, res.audio, res.pcm))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_warmup_command_reports_the_path_to_the_first_step(tiny_bundle, tmp_path):
    out = tmp_path / "w.json"
    res = RUNNER.invoke(app, ["warmup", "-m", "tiny", "--steps", "2", "--json-out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())
    assert summary == json.loads(res.output.strip().splitlines()[-1])
    assert len(summary["warmup_steps_ms"]) == WARMUP_STEPS and len(summary["steps_ms"]) == 2
    assert summary["random_weights"] is True and summary["dtype"] == "fp32" and summary["device"] == "cpu"
    assert summary["prefill_to_first_step_s"] >= summary["warmup_s"]
    from_start = summary["prefill_ms"] / 1000.0 + summary["prefill_to_first_step_s"]
    assert abs(summary["prefill_start_to_first_step_s"] - from_start) <= 0.011  # two roundings
    kernels = summary["rolekit_kernels"]  # no CUDA here: nothing launched, nothing linked
    assert kernels["launch"] == "none" and kernels["link"] == "none" and kernels["link_failed"] is False
    bad = RUNNER.invoke(app, ["warmup", "-m", "tiny", "--json-out", str(tmp_path / "no" / "w.json")])
    assert bad.exit_code == 2 and "--json-out" in bad.output


def test_the_kernel_report_says_how_kernels_in_parts_were_linked(monkeypatch):
    from rolekit import notices
    from rolekit.engine.warmup import WarmupResult
    from rolekit.nn import cuda, jitlink

    notices.reset()
    monkeypatch.setattr(cuda, "launch_path", lambda: "mlx-cache")
    monkeypatch.setattr(jitlink, "tag", lambda: "jitlink-13.5")
    report = WarmupResult(kernels={"compiled": 3}).kernel_report()
    assert report["link"] == "jitlink-13.5" and report["link_failed"] is False and report["compiled"] == 3
    notices.set_sink(lambda _text: None)
    try:
        notices.notice("kernel-link", "rolekit_mimi_x compiles as one piece (slower): ...")
    finally:
        notices.set_sink(None)
    assert WarmupResult().kernel_report()["link_failed"] is True
    notices.reset()


def test_kernel_caches_default_under_rolekit_cache_and_user_values_win(tmp_path, monkeypatch):
    from rolekit.kernelcache import configure_kernel_caches

    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "rk"))
    for name in ("MLX_PTX_CACHE_DIR", "CUDA_CACHE_PATH", "CUDA_CACHE_MAXSIZE"):
        monkeypatch.delenv(name, raising=False)
    env = configure_kernel_caches()
    assert env["MLX_PTX_CACHE_DIR"] == str(tmp_path / "rk" / "kernels" / "mlx-ptx")
    assert env["CUDA_CACHE_PATH"] == str(tmp_path / "rk" / "kernels" / "cuda")
    assert (tmp_path / "rk" / "kernels" / "cuda").is_dir() and int(env["CUDA_CACHE_MAXSIZE"]) >= 1 << 30
    monkeypatch.setenv("CUDA_CACHE_PATH", str(tmp_path / "mine"))
    assert configure_kernel_caches()["CUDA_CACHE_PATH"] == str(tmp_path / "mine")


def test_warmup_builds_mimis_full_cache_graphs_ahead(tiny_bundle):
    """Mimi's steps switch to their full-cache graphs once its transformer caches are full (125
    frames for the tiny codec): the warm-up builds those too, so the conversation traces no Mimi
    graph, and its output equals that of an engine that traced them as it went."""
    plans = [make_plan("NATF1", 9, 1)]
    voices = [models.load_voice(tiny_bundle, p.voice) for p in plans]
    mimi_cfg = tiny_bundle.mimi.cfg
    n = mimi_cfg.context // mimi_cfg.downsample_stride + 10  # past the full point
    frames = user_frames(n, 3)
    runs = []
    for warm in (True, False):
        engine = Engine(tiny_bundle, 1, SamplingParams(greedy=True), seed=5)
        engine.prefill(plans, voices)
        if warm:
            assert warmup(engine, frames=n).graphs >= 2  # at least Mimi's two full-cache graphs
            traced = engine.mimi_steps.traces
        res = run_offline(engine, frames)
        if warm:
            assert engine.mimi_steps.traces == traced  # nothing traced mid-conversation
        else:
            assert engine.mimi_steps.traces > 2  # the lazy engine traced the full graphs late
        runs.append((res.text, res.audio, res.pcm))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
