"""`rolekit run SCENARIO` and `rolekit test [PATHS]`: scripted conversations as a test suite.

Exit codes: 0 every run passed, 1 a run failed or errored, 2 usage error (bad scenario, persona, model...).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from rolekit.cli import options as model_opts
from rolekit.cli.user_input import user_errors
from rolekit.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add `run` and `test` to the rolekit app."""
    app.command("run")(run_command)
    app.command("test")(test_command)


_MODEL = model_opts.MODEL
_OUT = typer.Option(Path("transcripts"), "--out", "-o", help="Folder for run folders and results.jsonl.")
_WHISPER = typer.Option(
    None, "--whisper", help="mlx-whisper folder or hub id (default: tiny.en when installed)."
)
_NO_TRANSCRIBE = typer.Option(
    False, "--no-transcribe", help="Skip Whisper (text checks with `source: whisper` then report an error)."
)
_ASR = typer.Option(
    None,
    "--asr",
    help="Whisper backend: auto (ct2 on CPU-only machines, mlx on Apple Silicon / CUDA), ct2, mlx.",
)
_JOBS = typer.Option(
    1, "--jobs", "-j", min=1, max=64, help="Conversations run together in one batched engine."
)
_JUNIT = typer.Option(None, "--junit", help="Write JUnit XML here.")
_RESUME = typer.Option(False, "--resume", help="Skip runs already finished in --out.")


def run_command(
    scenario: Path = typer.Argument(..., help="A scenario YAML file."),
    model: str = _MODEL,
    out: Path = _OUT,
    whisper: str | None = _WHISPER,
    no_transcribe: bool = _NO_TRANSCRIBE,
    asr: str | None = _ASR,
    repeats: int | None = typer.Option(
        None, "--repeats", "-n", min=1, max=1000, help="Override the scenario's repeats."
    ),
    jobs: int = _JOBS,
    junit: Path | None = _JUNIT,
    dtype: str = model_opts.DTYPE,
    quant: str = model_opts.QUANT,
    compat: str = model_opts.COMPAT,
    kernels: str = model_opts.KERNELS,
    resume: bool = _RESUME,
) -> None:
    """Run one scenario (every matrix cell and repeat) and write transcripts/<scenario>/<run-id>/."""
    if scenario.is_dir():
        raise ConfigError(
            f"{scenario}: `rolekit run` takes one scenario file; use `rolekit test` for folders"
        )
    load = model_opts.load_options(dtype, quant, compat, jobs, kernels)
    call = _SuiteCall(model, out, whisper, not no_transcribe, resume, jobs, junit, asr, load, "rolekit run")
    _suite(call, [scenario], repeats=repeats)


def test_command(
    paths: list[Path] | None = typer.Argument(None, help="Scenario files or folders (default: scenarios/)."),
    filter: str | None = typer.Option(
        None, "--filter", "-k", help="Only runs whose scenario/run-id matches."
    ),
    tag: list[str] | None = typer.Option(
        None, "--tag", "-t", help="Only scenarios with this `tags:` entry (repeatable: any of them)."
    ),
    resume: bool = _RESUME,
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="Suite folder to compare with (e.g. OUT/history/<time>, or `last`: the newest snapshot "
        "in OUT/history); exit 1 on regressions beyond the scenarios' `baseline:` bounds.",
    ),
    model: str = _MODEL,
    out: Path = _OUT,
    whisper: str | None = _WHISPER,
    no_transcribe: bool = _NO_TRANSCRIBE,
    asr: str | None = _ASR,
    jobs: int = _JOBS,
    junit: Path | None = _JUNIT,
    cluster: str | None = typer.Option(
        None,
        "--cluster",
        envvar="ROLEKIT_CLUSTER",
        help="Run the batches on a Ray cluster: `auto` (started on this machine), HOST:PORT or ray://HOST:PORT.",
    ),
    gpus_per_actor: float | None = typer.Option(
        None, "--gpus-per-actor", min=0, help="With --cluster: GPUs per worker (default 1 if any, else 0)."
    ),
    actors_per_node: int | None = typer.Option(
        None,
        "--actors-per-node",
        min=1,
        help="With --cluster: workers per node (default GPUs / --gpus-per-actor).",
    ),
    dtype: str = model_opts.DTYPE,
    quant: str = model_opts.QUANT,
    compat: str = model_opts.COMPAT,
    kernels: str = model_opts.KERNELS,
) -> None:
    """Run every scenario × matrix × repeat as a test suite; results.jsonl, JUnit, summary, exit code."""
    with user_errors():
        on = _cluster_options(cluster, gpus_per_actor, actors_per_node, kernels)
        # on a cluster each worker turns --kernels into the policy of its own device (a driver
        # without a GPU would turn every kernel off, or refuse one it cannot run)
        load = model_opts.load_options(dtype, quant, compat, jobs, "" if on is not None else kernels)
    call = _SuiteCall(
        model, out, whisper, not no_transcribe, resume, jobs, junit, asr, load, "rolekit test", on
    )
    _suite(call, paths or [Path("scenarios")], filter, tags=tag, baseline=baseline)


def _cluster_options(address: str | None, gpus: float | None, per_node: int | None, kernels: str = "") -> Any:
    if address is None:
        if gpus is not None or per_node is not None:
            raise ConfigError("--gpus-per-actor / --actors-per-node need --cluster")
        return None
    from rolekit.suite.cluster import ClusterOptions

    return ClusterOptions(
        address=address.strip(),
        gpus_per_actor=gpus,
        actors_per_node=per_node,
        kernels=model_opts.check_kernels(kernels),
    )


@dataclass(frozen=True)
class _SuiteCall:
    """What `run` and `test` both hand the suite: the model, outputs and how the runs execute."""

    model: str
    out: Path
    whisper: str | None
    transcribe: bool
    resume: bool
    jobs: int
    junit: Path | None
    asr: str | None
    load: Any  # models.LoadOptions
    title: str
    cluster: Any = None  # suite.cluster.ClusterOptions, or None: this process


def _suite(
    call: _SuiteCall,
    paths: list[Path],
    pattern: str | None = None,
    repeats: int | None = None,
    tags: list[str] | None = None,
    baseline: str | None = None,
) -> None:
    from rolekit.outputs import check_output_dir, check_output_file

    with user_errors():  # bad input: one message, exit 2
        check_output_dir(call.out, "--out")
        if call.junit is not None:
            check_output_file(call.junit, "--junit", create_parents=True)
        runs, base_side = _plan(paths, pattern, repeats, tags, baseline, call.out)
    _run_planned(runs, base_side, call, fresh=pattern is None and not tags)


def _plan(
    paths: list[Path],
    pattern: str | None,
    repeats: int | None,
    tags: list[str] | None,
    baseline: str | None,
    out: Path,
) -> tuple[list[Any], Any]:
    from rolekit.suite.plan import plan_suite

    runs = plan_suite(paths, pattern, repeats, tags)
    if not runs:
        what = [f"--filter {pattern!r}"] if pattern else []
        what += [f"--tag {t!r}" for t in tags or []]
        raise ConfigError(f"no runs match {' and '.join(what) or 'the scenarios'}")
    return runs, _baseline_side(baseline, out)  # read before the suite rewrites `out`


def _run_planned(runs: list[Any], base_side: Any, call: _SuiteCall, fresh: bool = True) -> None:
    from contextlib import nullcontext

    from rolekit.suite.backend import MlxBackend
    from rolekit.suite.execute import SuiteOptions, run_suite
    from rolekit.suite.results import summarize

    # A filtered rerun (-k / --tag) adds or replaces only its own rows of results.jsonl.
    model, out, load, cluster = call.model, call.out, call.load, call.cluster
    options = SuiteOptions(
        out=out,
        whisper=call.whisper,
        transcribe=call.transcribe,
        resume=call.resume,
        batch=call.jobs,
        asr=call.asr,
        fresh_results=fresh,
    )
    from rolekit.cli.progress import suite_progress

    where: Any = nullcontext()
    if cluster is not None:  # batches on Ray workers (rolekit.suite.cluster)
        from rolekit.suite.cluster import RayCluster

        where = RayCluster(cluster, model, load)
    from rolekit.suite.history import snapshot
    from rolekit.suite.lock import suite_lock

    with ExitStack() as held:  # one suite at a time in `out`, reports and history included
        with user_errors():
            held.enter_context(where)  # a cluster usage error first: nothing written yet
            held.enter_context(suite_lock(out))
        try:
            with user_errors(), suite_progress(len(runs)) as progress:
                local = MlxBackend(model, lambda spec: model_opts.load_model(spec, load), model_opts.warm)
                backend = where.backend if cluster is not None else local
                executor = where if cluster is not None else None
                outcome = run_suite(runs, backend, options, progress.listener(), executor=executor)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: finished runs are in {out}; rerun with --resume to continue", err=True)
            raise typer.Exit(130) from None
        summary = summarize(outcome.rows)
        _write_reports(out, outcome.rows, call.junit)
        kept = snapshot(out, outcome.rows)
    _print_summary(outcome.rows, summary, outcome.skipped, out, call.title)
    typer.echo(f"history: {kept}")
    code = summary["exit_code"]
    if base_side is not None:
        policies = {r.scenario: r.loaded.scenario.baseline for r in runs}
        if _check_baseline(base_side, out, outcome.rows, policies):
            code = 1
    raise typer.Exit(code)


def _baseline_side(baseline: str | None, out: Path) -> Any:
    if baseline is None:
        return None
    from rolekit.report.compare import load_side
    from rolekit.suite.history import snapshots

    if baseline == "last":
        found = snapshots(out)
        if not found:
            raise ConfigError(f"--baseline last: no history snapshot in {out / 'history'} yet")
        return load_side(found[-1])
    return load_side(Path(baseline))


def _check_baseline(base: Any, out: Path, rows: list[dict[str, Any]], policies: dict[str, Any]) -> bool:
    """Print the regressions against `base` and write OUT/compare.html; True when there are any."""
    from rolekit.report.baseline import regressions
    from rolekit.report.compare import Side, compare
    from rolekit.report.compare_html import write_compare_html

    comparison = compare(base, Side(out, rows))
    found = regressions(comparison, policies)
    page = write_compare_html(out / "compare.html", comparison)
    if found:
        typer.echo(f"{len(found)} regression(s) against the baseline {base.path}:")
        for r in found:
            typer.echo(f"  REGRESSION {r}")
    else:
        typer.echo(
            f"no regressions against the baseline {base.path} ({len(comparison.cells)} cells compared)"
        )
    typer.echo(f"comparison: {page}")
    return bool(found)


def _write_reports(out: Path, rows: list[dict[str, Any]], junit: Path | None) -> None:
    from rolekit.report.markdown import summary_markdown

    (out / "summary.md").write_text(summary_markdown(rows), encoding="utf-8")
    if junit is not None:
        from rolekit.report.junit import write_junit

        write_junit(junit, rows)
    from rolekit.report.html import write_suite_report

    write_suite_report(out, rows)


def _print_summary(
    rows: list[dict[str, Any]], summary: dict[str, Any], skipped: int, out: Path, title: str
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=title)
    for col in ("scenario", "runs", "pass", "fail", "error"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for name, c in summary["by_scenario"].items():
        table.add_row(name, str(sum(c.values())), str(c["pass"]), str(c["fail"]), str(c["error"]))
    console.print(table)
    for r in rows:
        if r.get("status") != "pass":
            console.print(f"[red]{r['status'].upper()}[/] {r['scenario']}/{r['run_id']}")
            for msg in r.get("failures") or []:
                console.print(f"    {msg}", markup=False)
            if r.get("error"):
                console.print(f"    {r['error']}", markup=False)
    for r in rows:
        for w in r.get("warnings") or []:
            console.print(f"[yellow]warning[/] {r['scenario']}/{r['run_id']}: ", end="")
            console.print(w, markup=False)
    resumed = f", {skipped} resumed" if skipped else ""
    console.print(
        f"{summary['pass']} passed, {summary['fail']} failed, {summary['error']} errors{resumed}; "
        f"results: {out / 'results.jsonl'}",
        markup=False,
    )
    from rolekit.report.results import random_label

    note = random_label(rows)
    if note:  # one line, never wrapped: the last thing a reader sees
        from rich.markup import escape

        console.print(f"[bold yellow]random weights:[/] {escape(note)}", soft_wrap=True)
