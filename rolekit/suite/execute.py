"""Run a planned suite: prepare every run (bad input fails before anything is written), drive the
engine in batches, save each record atomically, transcribe, evaluate, append results.jsonl."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rolekit.errors import DocumentError, ModelError, Problem, RolekitError
from rolekit.hub import folder_size
from rolekit.record import SessionRecord, is_complete
from rolekit.report.results import append_result, error_result, run_result
from rolekit.scenario.timeline import Synthesizer
from rolekit.session.scripted import run_scripted
from rolekit.suite.backend import Backend
from rolekit.suite.batching import plan_batches
from rolekit.suite.lock import suite_lock
from rolekit.suite.plan import RunSpec
from rolekit.suite.prepare import PreparedRun, check_context, prefill_frames, prepare_run
from rolekit.suite.results import compact_results, results_path, start_results
from rolekit.suite.stages import TRANSCRIBE_PRIOR, StageClock, StageEvent

if TYPE_CHECKING:
    from rolekit.transcribe.whisper import AsrModel


@dataclass
class SuiteOptions:
    out: Path = Path("transcripts")
    whisper: str | None = None  # Whisper folder or hub id; None = default tiny.en when available
    asr: str | None = None  # auto | ct2 | mlx (None: $ROLEKIT_ASR or auto)
    transcribe: bool = True
    resume: bool = False
    batch: int = 1  # conversations per engine (B > 1 batches independent runs)
    fresh_results: bool = True  # empty results.jsonl first (unless resuming); False = always append


@dataclass
class SuiteListener:
    """Callbacks for progress display (all optional)."""

    on_plan: Callable[[int, int], None] | None = None  # (runs to do, runs skipped by --resume)
    on_run_start: Callable[[list[RunSpec]], None] | None = None
    on_step: Callable[[int, int], None] | None = None  # (frame, frame bound) of the current batch
    on_run_end: Callable[[dict[str, Any]], None] | None = None
    on_note: Callable[[str], None] | None = None
    on_stage: Callable[[StageEvent], None] | None = None  # a run enters prefill, conversation, ...


@dataclass
class _Track:
    """Stage timing of a suite, and how many runs are left (for ETAs)."""

    clock: StageClock
    left: int
    stage: str | None = None

    def enter(self, ls: SuiteListener, stage: str, keys: list[str], units: float) -> None:
        """Close the current stage, open `stage` over `units` and tell the listener."""
        if self.stage is not None:
            self.clock.stop(self.stage)
        self.stage = stage
        eta = self.clock.start(stage, units)
        if ls.on_stage:
            ls.on_stage(StageEvent(stage, tuple(keys), eta, self.clock.suite_eta(self.left)))

    def close(self) -> None:
        if self.stage is not None:
            self.clock.stop(self.stage)
        self.stage = None


@dataclass
class SuiteOutcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    transcribed: bool = False


def run_folder(out: Path, spec: RunSpec) -> Path:
    return Path(out) / spec.scenario / spec.run_id


def run_suite(
    runs: list[RunSpec],
    backend: Backend,
    options: SuiteOptions,
    listener: SuiteListener | None = None,
    synth: Synthesizer | None = None,
    executor: Executor | None = None,
) -> SuiteOutcome:
    """Run every RunSpec; returns one results row per run (in plan order). RolekitError = usage error.

    `executor(groups, finish)` runs the batches elsewhere (rolekit.suite.cluster) and yields each
    group's rows (from `finish`) as it ends; default: one local engine per batch, in plan order.
    Holds the output folder's lock (a second suite on the same folder is refused) and leaves
    results.jsonl with exactly one line per run (rolekit.suite.results.compact_results)."""
    with suite_lock(options.out):
        outcome = _run_suite(runs, backend, options, listener, synth, executor)
        compact_results(Path(options.out))
        return outcome


def _run_suite(
    runs: list[RunSpec],
    backend: Backend,
    options: SuiteOptions,
    listener: SuiteListener | None = None,
    synth: Synthesizer | None = None,
    executor: Executor | None = None,
) -> SuiteOutcome:
    ls = listener or SuiteListener()
    out = Path(options.out)
    whisper_dir = _whisper(options, ls)
    track = _Track(StageClock(), 0)
    if whisper_dir is not None:
        track.clock.rates["transcribing"] = TRANSCRIBE_PRIOR[_prior_key(whisper_dir)]
    previous = start_results(out, resume=options.resume) if options.resume else {}
    todo: list[RunSpec] = []
    rows: dict[str, dict[str, Any]] = {}
    for spec in runs:
        folder = run_folder(out, spec)
        if options.resume and is_complete(folder):
            row = previous.get(spec.key)
            if row is None or row.get("status") == "error":
                row = _review(folder, spec, None, whisper_dir, out, ls, track)  # saved but not evaluated
            rows[spec.key] = row
        else:
            todo.append(spec)
    prepared = _prepare_all(todo, backend, synth)  # bad input stops here, every file reported
    lengths: list[tuple[int, int]] = []  # per run: (prefill frames, conversation frames at most)
    for p in prepared:  # with the voice's real length (this loads the model once)
        voice = backend.voice_frames(p.plan.voice)
        check_context(p.spec, p.plan, p.timeline, voice)
        lengths.append((prefill_frames(p.plan, voice), p.timeline.max_frames()))
    if not options.resume and options.fresh_results:
        start_results(out, resume=False)
    else:
        for spec in runs:
            if spec.key in rows and spec.key not in previous:
                append_result(results_path(out), rows[spec.key])
    if ls.on_plan:
        ls.on_plan(len(todo), len(runs) - len(todo))
    batch = max(1, options.batch)
    track.left = len(prepared)
    reserve = 0 if whisper_dir is None else folder_size(whisper_dir.folder)  # Whisper loads later
    groups = [[prepared[i] for i in g] for g in plan_batches(lengths, batch, backend, ls.on_note, reserve)]
    finish = GroupFinisher(out, whisper_dir, ls, track, options.whisper, options.asr)
    produced = executor(groups, finish) if executor else (_run_group(g, backend, finish) for g in groups)
    t0 = time.perf_counter()
    try:
        for group_rows in produced:
            track.left -= len(group_rows)
            track.clock.finished_run((time.perf_counter() - t0) / max(1, len(group_rows)))
            for row in group_rows:
                rows[f"{row['scenario']}/{row['run_id']}"] = row
                append_result(results_path(out), row)
                if ls.on_run_end:
                    ls.on_run_end(row)
            t0 = time.perf_counter()
    finally:
        getattr(produced, "close", lambda: None)()  # a cluster executor stops its workers here
    ordered = [rows[s.key] for s in runs if s.key in rows]
    return SuiteOutcome(ordered, skipped=len(runs) - len(todo), transcribed=whisper_dir is not None)


def _prepare_all(todo: list[RunSpec], backend: Backend, synth: Synthesizer | None) -> list[PreparedRun]:
    """prepare_run for every run; the problems of all runs are reported together (each once)."""
    prepared: list[PreparedRun] = []
    problems: list[Problem] = []
    for spec in todo:
        try:
            prepared.append(prepare_run(spec, backend.tokenizer, synth))
        except DocumentError as exc:
            problems.extend(p for p in (exc.problems or [Problem(str(exc))]) if p not in problems)
    if problems:
        raise DocumentError(problems=problems)
    return prepared


def _whisper(options: SuiteOptions, ls: SuiteListener) -> AsrModel | None:
    if not options.transcribe:
        return None
    from rolekit.transcribe.whisper import resolve_asr

    try:
        return resolve_asr(options.whisper, options.asr)
    except ModelError as exc:
        if options.whisper or options.asr:
            raise
        if ls.on_note:
            ls.on_note(f"not transcribing: {exc}")
        return None


def _prior_key(model: AsrModel) -> str:
    if model.backend == "ct2":
        return "ct2"
    from rolekit.transcribe.whisper import accelerated_mlx

    return "mlx-gpu" if accelerated_mlx() else "mlx"


@dataclass
class GroupResult:
    """What driving one batch produced: a record per run, or the crash that stopped the batch."""

    records: list[SessionRecord] | None
    wall_s: float
    error: str | None = None  # one line: the exception that stopped the engine
    transcripts: list[Any] | None = None  # Whisper transcripts made where the batch ran (or None)
    usage: bool = False  # `error` is a usage error (a RolekitError where the batch ran): stop the suite


def drive_group(
    group: list[PreparedRun],
    backend: Backend,
    ls: SuiteListener | None = None,
    track: _Track | None = None,
) -> GroupResult:
    """Prefill and step one batch to the end of its scripts. RolekitError = usage error; any other
    exception becomes `GroupResult.error` (the suite goes on)."""
    ls = ls or SuiteListener()
    keys = [p.spec.key for p in group]
    t0 = time.perf_counter()
    try:
        if track:
            track.enter(ls, "prefill", keys, sum(p.plan.frames for p in group))
        frames = max(p.timeline.max_frames() for p in group)
        engine, frames_left = backend.start([p.plan for p in group], [p.spec.seed for p in group], frames)
        if track:
            track.enter(ls, "conversation", keys, 1)
        metas = [_meta(p, backend, len(group)) for p in group]
        records = run_scripted(
            engine,
            [p.timeline for p in group],
            metas,
            piece=backend.piece,
            vad_threshold_db=[p.spec.loaded.scenario.vad_threshold_db for p in group],
            max_frames=frames_left,
            on_step=ls.on_step,
        )
    except RolekitError:
        raise
    except Exception as exc:  # a crash in one batch is reported as an error result, the suite goes on
        if track:
            track.close()
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return GroupResult(None, time.perf_counter() - t0, error=detail)
    return GroupResult(records, time.perf_counter() - t0)


@dataclass
class GroupFinisher:
    """The driver's half of a batch: save each record into the suite folder, transcribe (unless the
    worker did), evaluate, write the run report; returns the results rows in the group's order."""

    out: Path
    whisper_dir: AsrModel | None
    listener: SuiteListener
    track: _Track
    whisper: str | None = None  # the --whisper / --asr the user gave (a worker resolves them itself)
    asr: str | None = None

    def __call__(self, group: list[PreparedRun], result: GroupResult) -> list[dict[str, Any]]:
        if result.records is None:
            return [
                error_result(
                    s.scenario,
                    s.run_id,
                    result.error or "",
                    persona=s.persona,
                    vars=s.vars,
                    seed=s.seed,
                    matrix=s.cell,
                )
                for s in (p.spec for p in group)
            ]
        rows = []
        transcripts = result.transcripts or [None] * len(group)
        for p, rec, tr in zip(group, result.records, transcripts, strict=True):
            rec.meta["wall_s"] = round(result.wall_s, 3)
            folder = rec.save(run_folder(self.out, p.spec))
            rows.append(
                _review(folder, p.spec, rec, self.whisper_dir, self.out, self.listener, self.track, tr)
            )
        self.track.close()
        return rows


Executor = Callable[[list[list[PreparedRun]], GroupFinisher], Iterator[list[dict[str, Any]]]]


def _run_group(group: list[PreparedRun], backend: Backend, finish: GroupFinisher) -> list[dict[str, Any]]:
    ls = finish.listener
    if ls.on_run_start:
        ls.on_run_start([p.spec for p in group])
    return finish(group, drive_group(group, backend, ls, finish.track))


def _meta(p: PreparedRun, backend: Backend, batch: int) -> dict[str, Any]:
    meta = dict(p.meta)
    meta.update(
        model_id=backend.model_id,
        is_random_model=backend.is_random,
        batch=batch,
        expect=[e.model_dump(exclude_none=True) for e in p.spec.loaded.scenario.expect],
        prefill_frames=p.plan.frames,
        tags=list(p.spec.loaded.scenario.tags),
    )
    info = getattr(backend, "model_info", None)  # a test backend without a model has none
    if info is not None:
        meta["model"] = dict(info)
    return meta


def _review(
    folder: Path,
    spec: RunSpec,
    record: SessionRecord | None,
    whisper_dir: AsrModel | None,
    out: Path,
    ls: SuiteListener,
    track: _Track,
    transcript: Any = None,
) -> dict[str, Any]:
    """Transcribe (when a Whisper model is available and `transcript` is None: not made on a
    worker), evaluate, write the run report; the results row."""
    from rolekit.evaluate.review import review_run
    from rolekit.report.html import write_run_report

    t0 = time.perf_counter()
    try:
        record = record if record is not None else SessionRecord.load(folder)
        if whisper_dir is not None:
            from rolekit.transcribe.transcript import write_transcript
            from rolekit.transcribe.whisper import transcribe_record

            if transcript is None:
                track.enter(ls, "transcribing", [spec.key], record.duration)
                transcript = transcribe_record(record, whisper_dir)
            write_transcript(folder, transcript, title=f"{spec.scenario} / {spec.run_id}")
        track.enter(ls, "evaluating", [spec.key], 1)
        review_run(folder, record, list(spec.loaded.scenario.expect), transcript)
        track.enter(ls, "report", [spec.key], 1)
        write_run_report(folder)
    except RolekitError:
        track.close()
        raise
    except Exception as exc:
        track.close()
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return error_result(spec.scenario, spec.run_id, f"evaluation failed: {detail}", run_dir=str(folder))
    row = run_result(folder, out)
    row["wall_s"] = round(float(record.meta.get("wall_s") or 0.0) + time.perf_counter() - t0, 3)
    return row
