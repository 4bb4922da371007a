"""`rolekit test --cluster`: a real local Ray cluster (127.0.0.1, 2 CPUs, one per module) runs a small
suite on the tiny model; the suite folder must equal a local run's, a killed worker must lose nothing,
Ctrl-C must keep every finished run and --resume must finish the rest.

Equality of two suite folders (`assert_same_suite`): the same run ids; in every run folder the same
file names, byte-equal audio, codes, monologue, events, channels and assertions; meta.json and
metrics.json equal once the timing keys (wall clock, ms per step, real-time factor, late frames,
start time) are dropped; results.jsonl the same rows (any order) under the same rule.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rolekit.cli.app import main
from rolekit.record import is_complete
from rolekit.suite.cluster import ClusterOptions, RayCluster
from rolekit.suite.execute import SuiteListener, SuiteOptions, run_suite
from rolekit.suite.plan import plan_suite

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

TIMING_KEYS = {
    "started_at",
    "wall_s",
    "batch_step_ms_mean",
    "step_ms_mean",
    "step_ms_p90",
    "realtime_factor",
    "late_frames",
}
SAME_BYTES = (
    "conversation.wav",
    "channels.json",
    "monologue.json",
    "events.json",
    "agent_codes.npy",
    "assertions.json",
)
SCENARIO = """persona: shop
lead_in: 0.5
tail: {tail}
seed: {seed}
repeats: {repeats}
matrix: {{company: [Contoso, Fabrikam]}}
user:
  - say: "Hello, I need a refund."
expect:
  - not_says: {{contains: zzzqqq, source: monologue}}
"""


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 (2 CPUs, 200 MB object store, no dashboard) for this module;
    its workers share the tiny model's cache. Stopped with every process it started, also on failure."""
    from rolekit import models
    from rolekit.testing.ray_head import local_ray_head

    cache = tmp_path_factory.getbasetemp() / "rolekit-cache"
    saved = os.environ.get("ROLEKIT_CACHE")
    os.environ["ROLEKIT_CACHE"] = str(cache)
    try:
        models.resolve("tiny")  # built once here, not raced by two workers
        with local_ray_head(num_cpus=2, env={"ROLEKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}) as head:
            yield head
    finally:
        if saved is None:
            os.environ.pop("ROLEKIT_CACHE", None)
        else:
            os.environ["ROLEKIT_CACHE"] = saved


@pytest.fixture
def suite_project(project, ray_cluster, monkeypatch):
    monkeypatch.setenv("ROLEKIT_CACHE", os.environ["ROLEKIT_CACHE"])
    return project


def _write(project, name, tail=1.0, seed=3, repeats=1):
    text = SCENARIO.format(tail=tail, seed=seed, repeats=repeats)
    (project / "scenarios" / f"{name}.yaml").write_text(text)


def _cli(args):
    with pytest.raises(SystemExit) as ex:
        main(args)
    return ex.value.code


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _rows(out: Path):
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def assert_same_suite(a: Path, b: Path) -> None:
    rows_a = sorted((_strip(r) for r in _rows(a)), key=lambda r: (r["scenario"], r["run_id"]))
    rows_b = sorted((_strip(r) for r in _rows(b)), key=lambda r: (r["scenario"], r["run_id"]))
    assert [(r["scenario"], r["run_id"]) for r in rows_a] == [(r["scenario"], r["run_id"]) for r in rows_b]
    assert rows_a == rows_b
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for r in rows_a:
        fa, fb = a / r["run_dir"], b / r["run_dir"]
        assert sorted(p.name for p in fa.iterdir()) == sorted(p.name for p in fb.iterdir())
        for name in SAME_BYTES:
            assert (fa / name).read_bytes() == (fb / name).read_bytes(), f"{r['run_dir']}/{name}"
        for name in ("meta.json", "metrics.json"):
            ja, jb = (json.loads((f / name).read_text()) for f in (fa, fb))
            assert _strip(ja) == _strip(jb), f"{r['run_dir']}/{name}"


def test_cluster_suite_equals_local_run(suite_project, ray_cluster):
    _write(suite_project, "greet", repeats=2)  # 4 runs: 2 batches of 2 per run
    _write(suite_project, "again", seed=5)  # 2 runs: the same persona, served by the prefill cache
    common = ["test", "scenarios", "--model", "tiny", "--no-transcribe", "--jobs", "2"]
    local, remote = suite_project / "local", suite_project / "remote"
    assert _cli([*common, "--out", str(local), "--junit", str(local / "junit.xml")]) == 0
    code = _cli(
        [*common, "--out", str(remote), "--junit", str(remote / "junit.xml")]
        + ["--cluster", ray_cluster.address, "--actors-per-node", "2"]
    )
    assert code == 0
    assert len(_rows(remote)) == 6
    assert_same_suite(local, remote)
    meta = json.loads((remote / "greet" / "company-Contoso-r1" / "meta.json").read_text())
    assert meta["batch"] == 2 and meta["model_id"] == "tiny-v2"
    assert meta["model"]["dtype"] == "fp32" and meta["model"]["compat"] == "kyutai"


def test_cluster_workers_load_with_the_drivers_options(suite_project, ray_cluster):
    """`--dtype bf16 --compat nvidia` reach every worker: the cluster's suite equals a local run's with
    the same options (run folders hold what each worker loaded), and bf16 changes the audio, so a
    worker that loaded the defaults would fail here."""
    _write(suite_project, "greet")  # 2 runs: one batch
    common = ["test", "scenarios", "--model", "tiny", "--no-transcribe", "--jobs", "2"]
    options = ["--dtype", "bf16", "--compat", "nvidia"]
    default, local, remote = (suite_project / name for name in ("default", "local", "remote"))
    assert _cli([*common, "--out", str(default)]) == 0
    assert _cli([*common, *options, "--out", str(local)]) == 0
    code = _cli([*common, *options, "--out", str(remote), "--cluster", ray_cluster.address])
    assert code == 0
    assert_same_suite(local, remote)
    run = Path("greet") / "company-Contoso-r0"
    meta = json.loads((remote / run / "meta.json").read_text())
    assert meta["model"]["dtype"] == "bf16" and meta["model"]["compat"] == "nvidia"
    assert (default / run / "conversation.wav").read_bytes() != (
        local / run / "conversation.wav"
    ).read_bytes()


def test_workers_transcribe_like_a_local_run(suite_project, ray_cluster):
    """Whisper (tiny.en) runs on the workers: the transcripts and the metrics that use them equal
    a local run's."""
    (suite_project / "scenarios" / "one.yaml").write_text(
        SCENARIO.format(tail=1.0, seed=3, repeats=1).replace("matrix: {company: [Contoso, Fabrikam]}\n", "")
    )
    common = ["test", "scenarios", "--model", "tiny"]
    local, remote = suite_project / "local", suite_project / "remote"
    assert _cli([*common, "--out", str(local)]) == 0
    assert _cli([*common, "--out", str(remote), "--cluster", ray_cluster.address]) == 0
    assert_same_suite(local, remote)
    for out in (local, remote):
        assert json.loads((out / "one" / "r0" / "metrics.json").read_text())["transcript"] is True
    assert (local / "one" / "r0" / "transcript.json").read_bytes() == (
        remote / "one" / "r0" / "transcript.json"
    ).read_bytes()


def test_killed_worker_loses_nothing(suite_project, ray_cluster):
    _write(suite_project, "long", tail=10.0)  # batch 0 (jobs 2): ~4x the frames of the others
    _write(suite_project, "short", repeats=2)
    runs = plan_suite([suite_project / "scenarios"])
    assert [r.scenario for r in runs[:2]] == ["long", "long"]
    out = suite_project / "transcripts"
    with RayCluster(ClusterOptions(address=ray_cluster.address, actors_per_node=2), "tiny") as cluster:
        killed: list[int] = []

        def on_run_end(row):
            # the first short batch is back: the long one is still running on the other worker
            if killed or row["scenario"] != "short":
                return
            ((slot, gid),) = [v for v in cluster.inflight.values() if v[1] == 0]
            assert not cluster.ray.wait([k for k, v in cluster.inflight.items() if v[1] == 0], timeout=0)[0]
            killed.append(slot.info["pid"])
            os.kill(slot.info["pid"], signal.SIGKILL)

        options = SuiteOptions(out=out, transcribe=False, batch=2)
        outcome = run_suite(
            runs, cluster.backend, options, SuiteListener(on_run_end=on_run_end), executor=cluster
        )
        assert killed and cluster.lost == 1 and cluster.retried == [0]
    rows = _rows(out)
    assert sorted(f"{r['scenario']}/{r['run_id']}" for r in rows) == sorted(r.key for r in runs)
    assert all(r["status"] == "pass" for r in rows) and len(outcome.rows) == len(runs)
    for r in runs:
        assert is_complete(out / r.scenario / r.run_id)
    assert not list(out.rglob("*.partial"))


def _workers_alive(head) -> list[int]:
    """Rolekit worker processes (`ray::SuiteWorker...`) started by this head that still run."""
    parent, title = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                title[int(d.name)] = (d / "cmdline").read_bytes()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def under_head(pid: int) -> bool:
        while pid > 1:
            if pid == head.pid:
                return True
            pid = parent.get(pid, 0)
        return False

    return [p for p, t in title.items() if t.startswith(b"ray::SuiteWorker") and under_head(p)]


def test_ctrl_c_keeps_finished_runs_and_resume_finishes(suite_project, ray_cluster):
    """A separate driver process connects through Ray Client (ray://) and gets SIGINT."""
    _write(suite_project, "greet", repeats=3)  # 6 runs, one batch each
    out = suite_project / "transcripts"
    args = ["test", "scenarios", "--model", "tiny", "--no-transcribe", "--out", str(out)]
    cmd = [sys.executable, "-m", "rolekit", *args, "--cluster", ray_cluster.client, "--actors-per-node", "2"]
    proc = subprocess.Popen(cmd, cwd=suite_project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        results = out / "results.jsonl"
        deadline = time.monotonic() + 120
        while not (results.is_file() and results.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no run finished"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "rerun with --resume" in err
    deadline = time.monotonic() + 20
    while _workers_alive(ray_cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _workers_alive(ray_cluster), "the interrupted driver's workers still run"
    done = _rows(out)
    assert 1 <= len(done) < 6
    # every row has its run folder; a run saved while SIGINT came may still wait for its evaluation
    finished = {p.parent.name + "/" + p.name for p in out.glob("greet/*") if is_complete(p)}
    assert {f"{r['scenario']}/{r['run_id']}" for r in done} <= finished
    # a record being written when SIGINT came stays a .partial folder: unfinished, rerun below
    partial = {p.parent.name + "/" + p.name.removesuffix(".partial") for p in out.rglob("*.partial")}
    assert not partial & finished

    assert _cli([*args, "--resume", "--cluster", ray_cluster.address]) == 0
    rows = _rows(out)
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in plan_suite([Path("scenarios")]))
    assert len(rows) == 6  # nothing ran twice
    assert not list(out.rglob("*.partial"))
    assert np.all([is_complete(out / "greet" / r["run_id"]) for r in rows])


def test_cluster_usage_errors_name_the_option(project, monkeypatch, capsys):
    from rolekit.testing.ray_head import free_port

    _write(project, "greet")
    base = ["test", "scenarios", "--model", "tiny", "--no-transcribe"]
    assert _cli([*base, "--actors-per-node", "2"]) == 2
    assert "need --cluster" in capsys.readouterr().err
    assert _cli([*base, "--cluster", "nowhere"]) == 2
    assert "--cluster nowhere: expected auto, HOST:PORT or ray://HOST:PORT" in capsys.readouterr().err
    dead = f"127.0.0.1:{free_port()}"
    assert _cli([*base, "--cluster", dead]) == 2
    assert f"--cluster {dead}: no Ray cluster at {dead}" in capsys.readouterr().err
    # --kernels is checked here, but resolved by each worker on its device: qmv=1 is no error on this CPU
    assert _cli([*base, "--cluster", dead, "--kernels", "nope=1"]) == 2
    assert "--kernels: unknown kernel 'nope'" in capsys.readouterr().err
    assert _cli([*base, "--cluster", dead, "--kernels", "qmv=1"]) == 2
    assert f"--cluster {dead}: no Ray cluster at {dead}" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert _cli([*base, "--cluster", dead]) == 2
    assert "--cluster needs Ray: pip install 'rolekit[cluster]'" in capsys.readouterr().err
    assert not (project / "transcripts").exists()  # nothing written
