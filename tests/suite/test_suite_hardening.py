"""Suite hardening with the fake backend: output-folder lock, unique run ids, filtered reruns keep the
suite's history, all bad personas reported at once, damaged results read back as damaged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rolekit.errors import ConfigError, DocumentError
from rolekit.record import RecordError
from rolekit.report.results import read_results
from rolekit.suite.execute import SuiteOptions, run_suite
from rolekit.suite.lock import LOCK_FILE
from rolekit.suite.plan import plan_suite
from tests.hardening.cli import assert_clean, invoke

SCENARIO = """name: {name}
persona: {persona}
lead_in: 0.3
tail: 1.0
{extra}
user:
  - say: "hello there"
expect:
  - agent_says: {{contains: w10, source: monologue}}
"""


def _scenario(project, name, persona="shop", extra=""):
    (project / "scenarios" / f"{name}.yaml").write_text(
        SCENARIO.format(name=name, persona=persona, extra=extra)
    )


def _run(project, fake_tts, backend, pattern=None, **opts):
    runs = plan_suite([project / "scenarios"], pattern)
    options = SuiteOptions(out=project / "transcripts", transcribe=False, **opts)
    return run_suite(runs, backend, options, synth=fake_tts)


def test_a_second_process_on_the_same_folder_is_refused(project, fake_tts, fake_backend):
    _scenario(project, "a")
    out = project / "transcripts"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
            "print('held', flush=True); time.sleep(60)",
            str(out / LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="another rolekit suite is writing to this folder") as err:
            _run(project, fake_tts, fake_backend())
        assert err.value.problems[0].file == str(out) and err.value.problems[0].field == "--out"
        assert not (out / "a").exists()  # refused before any work
    finally:
        holder.kill()
        holder.wait()
    (row,) = _run(project, fake_tts, fake_backend()).rows  # the lock died with its holder
    assert row["status"] == "pass"


def test_run_ids_are_unique_when_values_slug_alike(project, fake_tts, fake_backend):
    _scenario(
        project,
        "m",
        extra='vars: {company: x}\nmatrix: {company: ["Acme Inc", "Acme-Inc", "Zürich", "Zärich", 1, "1"]}',
    )
    (project / "personas" / "shop.yaml").write_text(
        "prompt: 'You work for {{ company }} which is a shop and your name is Maya.'\n"
        "variables: {company: {default: x}}\n"
    )
    outcome = _run(project, fake_tts, fake_backend())
    ids = [r["run_id"] for r in outcome.rows]
    assert len(set(ids)) == 6 and "company-Acme-Inc-r0" in ids, ids
    folders = [p for p in (project / "transcripts" / "m").iterdir() if p.is_dir()]
    assert len(folders) == 6
    assert {json.loads((f / "meta.json").read_text())["vars"]["company"] for f in folders} == {
        "Acme Inc",
        "Acme-Inc",
        "Zürich",
        "Zärich",
        1,
        "1",
    }


def test_a_filtered_rerun_replaces_only_its_runs(project, fake_tts, fake_backend):
    _scenario(project, "a")
    _scenario(project, "b")
    _run(project, fake_tts, fake_backend())
    results = project / "transcripts" / "results.jsonl"
    first = {r["scenario"]: r for r in read_results(results)}
    _run(project, fake_tts, fake_backend(), pattern="b/", fresh_results=False)
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert sorted(r["scenario"] for r in lines) == ["a", "b"]  # one line per run, a's kept
    assert next(r for r in lines if r["scenario"] == "a") == first["a"]


def test_every_bad_persona_is_reported_before_any_run(project, fake_tts, fake_backend):
    (project / "personas" / "pop.yaml").write_text('prompt: "{{ [].pop() }}"\n')
    (project / "personas" / "key.yaml").write_text("prompt: \"{{ {}.pop('x') }}\"\n")
    _scenario(project, "a", persona="pop")
    _scenario(project, "b", persona="key")
    _scenario(project, "c")
    with pytest.raises(DocumentError) as err:
        _run(project, fake_tts, fake_backend())
    text = str(err.value)
    assert "pop.yaml:1: prompt: template failed: IndexError" in text
    assert "key.yaml:1: prompt: template failed: KeyError" in text
    assert not (project / "transcripts" / "c").exists()


def test_unknown_metric_is_refused_before_the_run(project, fake_tts, fake_backend):
    _scenario(project, "a", extra="")
    path = project / "scenarios" / "a.yaml"
    path.write_text(path.read_text() + "  - metric: {name: dead_air_ration, max: 0.5}\n")
    with pytest.raises(
        DocumentError, match=r"a.yaml:\d+: expect\[1\].metric.name: unknown metric 'dead_air_ration'"
    ):
        plan_suite([project / "scenarios"])


def test_a_garbage_line_in_results_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "results.jsonl"
    row = {"scenario": "s", "run_id": "r0", "status": "pass"}
    path.write_text(json.dumps(row) + "\nnot json\n" + json.dumps(row | {"run_id": "r1"}) + "\n")
    with pytest.raises(RecordError) as err:
        read_results(path)
    assert err.value.problems[0].line == 2
    path.write_text(json.dumps(row) + '\n{"scenario": "s", "run_')  # torn last line: a crash mid-append
    assert read_results(path) == [row]


@pytest.fixture
def suite(project, fake_tts, fake_backend):
    _scenario(project, "a")
    _scenario(project, "b")
    _run(project, fake_tts, fake_backend())
    return project / "transcripts"


def test_report_marks_a_deleted_run_folder_as_damaged(suite):
    import shutil

    shutil.rmtree(suite / "a" / "r0")
    result = invoke(["report", str(suite)])
    assert_clean(result)
    assert "damaged" in (suite / "summary.md").read_text() or "damaged" in result.out
    junit = (suite / "junit.xml").read_text()
    assert "run folder" in junit and "missing" in junit


def test_report_refuses_a_truncated_wav_and_keeps_good_metrics(suite):
    run = suite / "a" / "r0"
    metrics = (run / "metrics.json").read_bytes()
    wav = run / "conversation.wav"
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    result = invoke(["report", str(run)])
    assert_clean(result)
    assert result.code == 2 and "conversation.wav: damaged" in result.err
    assert (run / "metrics.json").read_bytes() == metrics
    result = invoke(["report", str(suite)])  # the suite report goes on, the run is marked damaged
    assert_clean(result)
    assert (run / "metrics.json").read_bytes() == metrics
    assert "damaged" in (suite / "junit.xml").read_text()


@pytest.mark.parametrize("events", ['[{"kind": "say"}]', '{"a": 1}', "[1, 2]", '[{"start": 0.1}]'])
def test_malformed_events_json_is_a_clear_error(suite, events):
    run = suite / "b" / "r0"
    (run / "events.json").write_text(events)
    for argv in (["report", str(run)], ["transcribe", str(run)]):
        result = invoke(argv)
        assert_clean(result)
        assert result.code == 2 and "events.json" in result.err


def test_paths_named_by_a_scenario_stay_in_its_folder(project, fake_tts, fake_backend):
    (project / "secret.wav").write_bytes(b"RIFF")
    path = project / "scenarios" / "a.yaml"
    path.write_text("persona: shop\nuser:\n  - audio: ../secret.wav\n")
    with pytest.raises(
        DocumentError, match=r"a.yaml:3: user\[0\].audio: audio '../secret.wav' resolves to .* outside"
    ):
        plan_suite([project / "scenarios"])
    path.write_text("persona: ../personas/shop.yaml\nuser:\n  - say: hi\n")
    with pytest.raises(
        DocumentError, match=r"a.yaml:1: persona: persona '../personas/shop.yaml' resolves to .* outside"
    ):
        _run(project, fake_tts, fake_backend())
    path.write_text("persona: shop\nvoice: ../v.safetensors\nuser:\n  - say: hi\n")
    with pytest.raises(
        DocumentError, match=r"a.yaml:2: voice: voice '../v.safetensors' resolves to .* outside"
    ):
        _run(project, fake_tts, fake_backend())
    assert not (project / "transcripts" / "a").exists()


def test_a_damaged_voice_file_is_found_before_the_model(project, fake_tts, fake_backend):
    (project / "scenarios" / "v.safetensors").write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}')
    (project / "scenarios" / "a.yaml").write_text("persona: shop\nvoice: v.safetensors\nuser:\n  - say: hi\n")
    backend = fake_backend()
    with pytest.raises(
        DocumentError, match=r"a.yaml:2: voice: .*v.safetensors: not a valid .safetensors file"
    ):
        _run(project, fake_tts, backend)
    assert backend.started == []


def test_malformed_json_beside_a_good_record(suite):
    run = suite / "a" / "r0"
    (run / "transcript.json").write_text("{")
    result = invoke(["report", str(run)])
    assert_clean(result)
    assert result.code == 2 and f"{run / 'transcript.json'}: malformed transcript" in result.err
    result = invoke(["report", str(suite)])  # the suite report goes on and lists the run as damaged
    assert_clean(result)
    assert result.code == 0 and "malformed transcript" in (suite / "junit.xml").read_text()
    (run / "transcript.json").unlink()
    (run / "metrics.json").write_text("{")
    result = invoke(["report", str(suite)])
    assert_clean(result)
    assert "damaged" in (suite / "junit.xml").read_text()
