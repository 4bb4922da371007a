"""The GPU diagnostics (`benchmarks/cold_start.py`, `benchmarks/batch_gap.py`) run end to end on
the tiny model, so a lent GPU's minutes are never spent on a script that no longer runs; their
JSON lines carry what the GPU rows of bench/RESULTS.md need."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cold_start_splits_every_phase_and_counts_the_prepared_graphs(tiny_cache):
    from benchmarks.cold_start import run

    out = tiny_cache / "cold.jsonl"
    run("tiny", "auto", out=str(out))
    rows = {r["what"]: r for r in _rows(out)}
    assert {"load", "step0", "step1", "step2", "step3", "prepare", "total"} <= set(rows)
    for i in range(4):
        step = rows[f"step{i}"]
        assert step["encode_build_ms"] > 0 and step["encode_eval_ms"] > 0
        assert step["lm_build_ms"] > 0 and step["lm_eval_ms"] > 0  # after a prefill every call steps the LM
    assert rows["prepare"]["graphs"] >= 1  # the later ring sizes of a whole conversation
    total = rows["total"]
    first, prepare, real = total["first_steps_ms"], total["prepare_ms"], total["real_step_ms"]
    assert total["prefill_to_real_step_s"] == pytest.approx((first + prepare + real) / 1000.0, abs=0.011)


def test_batch_gap_times_each_engine_and_the_swapped_halves(tiny_cache):
    from benchmarks.batch_gap import run

    out = tiny_cache / "gap.jsonl"
    run("tiny", "auto", batch=2, steps=6, start=40, profile=False, out=str(out))
    rows = {r["what"]: r for r in _rows(out)}
    names = ("product", "fresh", "filled", "harness", "product-lm+harness-mimi", "harness-lm+product-mimi")
    assert set(names) <= set(rows)
    for name in names:
        assert rows[name]["step"]["n"] == 3 and rows[name]["step"]["median"] > 0, name
    assert rows["filled"]["offset"] > rows["fresh"]["offset"]  # the filled context is really there
    assert rows["load"]["random_weights"] is True
