"""How many conversations one engine may run (`Backend.fit_batch`): the ring KV caches of the
longest batch must fit in the memory left after the model, with a margin; the suite splits its
batches where they would not, says so once, and still runs and writes every run."""

from __future__ import annotations

import json

import pytest

from rolekit.hub import folder_size
from rolekit.lm import precision
from rolekit.record import is_complete
from rolekit.suite.backend import KEEP_FREE_BYTES, KEEP_FREE_FRACTION, BatchFit, MlxBackend, fitting
from rolekit.suite.batching import batch_positions, plan_batches
from rolekit.suite.execute import SuiteListener, SuiteOptions, run_suite
from rolekit.suite.plan import plan_suite
from rolekit.suite.prepare import prepare_run
from rolekit.suite.worker import ClusterBackend, SuiteWorker

GB = 1_000_000_000


def _free_for(each: int, count: float) -> float:
    """Free bytes whose budget after the margin is exactly `count` caches of `each` bytes."""
    return (count * each + KEEP_FREE_BYTES) / (1.0 - KEEP_FREE_FRACTION)


@pytest.mark.parametrize(
    "free, each, wanted, want",
    [
        (_free_for(GB, 48.5), GB, 64, 48),
        (_free_for(GB, 48), GB, 64, 48),
        (_free_for(GB, 48) - 1e6, GB, 64, 47),
        (_free_for(GB, 48), GB, 8, 8),  # never more than wanted
        (_free_for(GB, 0.5), GB, 64, 1),  # always at least one
        (0.0, GB, 4, 1),
        (KEEP_FREE_BYTES / 2, GB, 4, 1),  # a budget below zero
    ],
)
def test_fitting_keeps_the_margin_and_clamps(free, each, wanted, want):
    assert fitting(free, each, wanted) == want


def test_the_margin_is_a_tenth_of_the_free_memory_and_a_gigabyte():
    assert KEEP_FREE_FRACTION == 0.10 and KEEP_FREE_BYTES == GB
    assert fitting(80 * GB, GB, 100) == 71  # 80 GB free: 72 - 1 GB for the caches


def test_batch_fit_describes_its_grounds():
    assert BatchFit(48, 61.23e9, 1_073_741_824).describe() == "61.23 GB free; 1.07 GB of KV cache each"


@pytest.fixture(scope="module")
def tiny_backend():
    backend = MlxBackend("tiny")
    assert backend.bundle.lm is not None  # loaded once for the module
    return backend


def test_mlx_backend_fits_the_kv_caches_in_the_free_memory(tiny_backend, monkeypatch):
    from rolekit.engine.warmup import WARMUP_STEPS

    lm = tiny_backend.bundle.lm
    positions = 120
    # at most: the rings at `positions`, or twice (the warm-up's snapshot) those after the prompt
    each = max(lm.kv_bytes(1, positions), 2 * lm.kv_bytes(1, WARMUP_STEPS))
    assert each > 0
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: _free_for(each, 5.5))
    assert tiny_backend.fit_batch(0, positions, 64) == 5
    assert tiny_backend.last_fit == BatchFit(5, _free_for(each, 5.5), each)
    assert tiny_backend.fit_batch(0, positions, 3) == 3
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: 0.0)
    assert tiny_backend.fit_batch(0, positions, 64) == 1
    assert tiny_backend.last_fit.count == 1 and tiny_backend.last_fit.free_bytes == 0.0


def test_models_still_to_load_are_kept_out_of_the_budget(tiny_backend, monkeypatch):
    lm = tiny_backend.bundle.lm
    each = max(lm.kv_bytes(1, 120), 2 * lm.kv_bytes(1, 4))
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: _free_for(each, 6.5) + 3 * GB)
    assert tiny_backend.fit_batch(0, 120, 64) > 6
    assert tiny_backend.fit_batch(0, 120, 64, reserve=3 * GB) == 6
    assert tiny_backend.fit_batch(0, 120, 64, reserve=100 * GB) == 1  # nothing left: still one


def test_the_warm_up_snapshot_counts_twice_where_the_prompt_fills_the_rings(tiny_backend, monkeypatch):
    """The warm-up snapshots the rings after the prompt (a copy): a conversation whose prompt
    already fills the rings it ends with holds them twice during the warm-up."""
    from rolekit.engine.warmup import WARMUP_STEPS

    lm = tiny_backend.bundle.lm
    monkeypatch.setattr(lm, "ring_floor", 2, raising=False)  # rings that grow within the tiny context
    positions = lm.context
    each = lm.kv_bytes(1, positions)
    assert lm.kv_bytes(1, positions - WARMUP_STEPS) == each  # the prompt alone fills them
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: _free_for(each, 8.5))
    assert tiny_backend.fit_batch(positions - WARMUP_STEPS, positions, 64) == 4
    assert tiny_backend.last_fit.kv_bytes == 2 * each
    assert tiny_backend.fit_batch(1, positions, 64) == 8  # a short prompt: its small rings twice


def test_a_longer_conversation_fits_fewer_times(tiny_backend, monkeypatch):
    lm = tiny_backend.bundle.lm
    monkeypatch.setattr(lm, "ring_floor", 2, raising=False)  # rings that grow within the tiny context
    short, long = lm.kv_bytes(1, 1), lm.kv_bytes(1, lm.context)
    assert long > short
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: _free_for(long, 4))
    assert tiny_backend.fit_batch(0, lm.context, 64) == 4 < tiny_backend.fit_batch(0, 1, 64)


def test_the_cluster_asks_a_worker(monkeypatch):
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: 0.0)
    worker = SuiteWorker("tiny", False)
    asked = []

    def ask(method, *args):
        asked.append((method, *args))
        return getattr(worker, method)(*args)

    cluster = ClusterBackend("tiny", ask)
    assert cluster.fit_batch(50, 200, 8) == worker.fit_batch(50, 200, 8) == 1
    assert asked[-1] == ("fit_batch", 50, 200, 8, 1.0, 0)
    halves = ClusterBackend("tiny", ask, memory_share=0.5)  # two workers on one GPU
    halves.fit_batch(50, 200, 8)
    assert asked[-1] == ("fit_batch", 50, 200, 8, 0.5, 0)


def test_the_cluster_takes_the_smallest_answer_of_its_workers(monkeypatch):
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: 0.0)
    worker = SuiteWorker("tiny", False)
    answers = {"fit_batch": [6, 3, 5]}

    def ask(method, *args):
        return getattr(worker, method)(*args)

    def ask_all(method, *args):
        return answers[method]

    assert ClusterBackend("tiny", ask, ask_all=ask_all).fit_batch(50, 200, 8) == 3


def test_workers_sharing_a_gpu_fit_their_share(tiny_backend, monkeypatch):
    from rolekit.suite import backend as backend_module

    monkeypatch.setattr(backend_module, "KEEP_FREE_BYTES", 0)  # only the fraction: tiny caches
    lm = tiny_backend.bundle.lm
    monkeypatch.setattr(lm, "ring_floor", 2, raising=False)  # the prompt's rings are the smaller
    each = lm.kv_bytes(1, 120)
    assert 2 * lm.kv_bytes(1, 4) < each
    monkeypatch.setattr(precision, "free_memory_bytes", lambda device=None: 12.5 * each / 0.9)
    assert tiny_backend.fit_batch(0, 120, 64) == 12
    assert tiny_backend.fit_batch(0, 120, 64, share=0.5) == 6


class _Fits:
    """A backend whose fit_batch answers `table(positions)`, recording each question."""

    def __init__(self, table) -> None:
        self.table = table
        self.asked: list[tuple[int, int, int]] = []

    def fit_batch(
        self, prefill: int, positions: int, wanted: int, share: float = 1.0, reserve: int = 0
    ) -> int:
        self.asked.append((prefill, positions, wanted))
        return max(1, min(wanted, self.table(positions)))


def test_a_batchs_positions_are_its_longest_prefill_plus_its_longest_conversation():
    assert batch_positions([(10, 200), (200, 10)]) == 400  # rows are left-padded to the longest prefill
    assert batch_positions([(100, 50)]) == 150
    assert batch_positions([(2000, 2000)]) == 3000  # the engine stops at the context


@pytest.mark.parametrize(
    "runs, fit, sizes, spread",
    [
        (6, 3, [3, 3], "3"),
        (7, 3, [3, 2, 2], "3 and 2"),
        (64, 56, [32, 32], "32"),
        (65, 56, [33, 32], "33 and 32"),
        (3, 1, [1, 1, 1], "1"),
    ],
)
def test_capped_batches_are_even_and_in_plan_order(runs, fit, sizes, spread):
    notes: list[str] = []
    backend = _Fits(lambda positions: fit)
    lengths = [(100, 50)] * (runs - 1) + [(300, 20)]  # the longest prompt and script set the fit
    groups = plan_batches(lengths, 64, backend, notes.append)
    assert [len(g) for g in groups] == sizes
    assert [i for g in groups for i in g] == list(range(runs))
    assert backend.asked == [(300, 350, min(64, runs))]  # asked once, for the suite's longest
    plural = "s" if fit != 1 else ""
    assert notes == [
        f"--jobs 64: {fit} conversation{plural} of up to 350 positions (prompt included) fit in the memory "
        f"left after the model: {runs} runs in batches of {spread}"
    ]


def test_batches_without_a_cap_are_slices_of_jobs():
    notes: list[str] = []
    backend = _Fits(lambda positions: 64)
    groups = plan_batches([(100, 50)] * 5, 2, backend, notes.append)
    assert groups == [[0, 1], [2, 3], [4]] and notes == []
    assert plan_batches([(100, 50)] * 3, 1, backend) == [[0], [1], [2]]
    assert plan_batches([(100, 50)], 8, backend) == [[0]]
    assert backend.asked == [(100, 150, 2)]  # --jobs 1 or a single run: nothing to ask
    fits_all = _Fits(lambda positions: 3)  # 3 runs that fit under --jobs 8: one batch, no note
    assert plan_batches([(100, 50)] * 3, 8, fits_all, notes.append) == [[0, 1, 2]]
    assert notes == []


def test_a_note_carries_the_backends_grounds():
    backend = _Fits(lambda positions: 2)
    backend.last_fit = BatchFit(2, 61.23e9, 1_070_000_000)
    notes: list[str] = []
    plan_batches([(100, 1080)] * 3, 64, backend, notes.append)
    assert notes == [
        "--jobs 64: 2 conversations of up to 1180 positions (prompt included) fit in the memory left after "
        "the model (61.23 GB free; 1.07 GB of KV cache each): 3 runs in batches of 2 and 1"
    ]
    assert BatchFit(1, 2.5e9, 8_400_000).describe() == "2.50 GB free; 8.4 MB of KV cache each"


SCENARIO = """persona: shop
lead_in: 0.5
tail: 2.5
repeats: 5
user:
  - say: "hello there"
  - after: agent_done
    silence: 0.4
    say: "thanks"
expect:
  - agent_says: {contains: w10, source: monologue}
"""


def test_the_suite_splits_batches_that_do_not_fit(project, fake_tts, fake_backend):
    (project / "scenarios" / "greet.yaml").write_text(SCENARIO)
    runs = plan_suite([project / "scenarios"])
    backend = fake_backend(fit=2)
    notes: list[str] = []
    options = SuiteOptions(out=project / "transcripts", transcribe=False, batch=4)
    outcome = run_suite(runs, backend, options, SuiteListener(on_note=notes.append), synth=fake_tts)
    assert backend.started == [2, 2, 1]
    prepared = prepare_run(runs[0], backend.tokenizer, fake_tts)
    prefill = prepared.plan.frames
    positions = prefill + prepared.timeline.max_frames()
    assert backend.fit_asked == [(prefill, positions, 4)]
    assert notes == [
        f"--jobs 4: 2 conversations of up to {positions} positions (prompt included) fit in the memory "
        "left after the model: 5 runs in batches of 2 and 1"
    ]
    assert [r["run_id"] for r in outcome.rows] == [f"r{i}" for i in range(5)]
    assert all(r["status"] == "pass" for r in outcome.rows), outcome.rows
    lines = (project / "transcripts" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["run_id"] for x in lines) == [f"r{i}" for i in range(5)]
    assert all(is_complete(project / "transcripts" / "greet" / f"r{i}") for i in range(5))


def test_the_suite_keeps_the_whisper_model_out_of_the_budget(
    project, fake_tts, fake_backend, monkeypatch, tmp_path
):
    """Whisper loads after the batches are sized, in the same process: its files' bytes are kept."""
    from rolekit.transcribe import whisper
    from rolekit.transcribe.transcript import Transcript

    folder = tmp_path / "whisper"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"w" * 3000)
    (folder / "sub" / "vocab.json").write_bytes(b"v" * 500)
    monkeypatch.setattr(
        whisper, "resolve_asr", lambda spec, asr=None: whisper.AsrModel("ct2", folder, "fake")
    )
    monkeypatch.setattr(
        whisper, "transcribe_record", lambda record, model=None, **k: Transcript(model="fake")
    )
    (project / "scenarios" / "greet.yaml").write_text(SCENARIO)
    backend = fake_backend(fit=2)
    options = SuiteOptions(out=project / "transcripts", transcribe=True, batch=4)
    outcome = run_suite(plan_suite([project / "scenarios"]), backend, options, synth=fake_tts)
    assert backend.fit_reserved == [3500] and backend.started == [2, 2, 1]
    assert len(outcome.rows) == 5
    assert folder_size(tmp_path / "none") == 0


def test_workers_sharing_a_gpu_are_given_their_part_of_its_memory():
    from rolekit.suite.cluster import memory_share

    assert memory_share([("n1", {"num_gpus": 0.5, "num_cpus": 1.0})] * 2) == 0.5
    assert memory_share([("n1", {"num_gpus": 1.0, "num_cpus": 1.0})]) == 1.0
    assert memory_share([("n1", {"num_gpus": 0.0, "num_cpus": 1.0})]) == 1.0  # CPU workers: RAM
    cpu = {"num_gpus": 0.0, "num_cpus": 1.0}
    assert memory_share([("n1", cpu), ("n1", cpu), ("n2", cpu)]) == 0.5  # two share n1's RAM
    assert memory_share([]) == 1.0
