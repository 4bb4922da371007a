"""Progress of `rolekit run` / `rolekit test`: each run's stage (prefill -> conversation ->
transcribing -> evaluating -> report) with an ETA.

On a terminal (stderr is a TTY): a rich progress display, runs done and the current batch's stage,
frames and ETA. Off a terminal (CI logs, pipes): plain one-line events on stderr, each prefixed with
the seconds since the start, so a log shows where the time goes and that nothing is stuck.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rolekit import notices
from rolekit.suite.stages import StageEvent, format_eta

STEP_EVENT_S = 10.0  # off a terminal, a conversation reports its frames at most this often


def suite_progress(total: int, stream: TextIO | None = None, tty: bool | None = None) -> Any:
    """A context manager with `.listener()` for `run_suite`: rich on a TTY, plain lines otherwise."""
    stream = stream or sys.stderr
    tty = stream.isatty() if tty is None else tty
    return RichProgress(total) if tty else PlainProgress(total, stream)


class PlainProgress:
    """One line per event: plan, stage changes (with ETAs), conversation frames every STEP_EVENT_S, results."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.t0 = time.perf_counter()
        self.done = 0
        self.keys: tuple[str, ...] = ()
        self.frames_t0 = 0.0
        self.last_step = 0.0

    def __enter__(self) -> PlainProgress:
        notices.set_sink(lambda text: self.say(f"note: {text}"))
        return self

    def __exit__(self, *exc: object) -> None:
        notices.set_sink(None)

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def listener(self) -> Any:
        from rolekit.suite.execute import SuiteListener

        def on_plan(todo: int, skipped: int) -> None:
            self.done = skipped
            self.say(f"plan: {todo} runs to do" + (f", {skipped} resumed" if skipped else ""))

        def on_stage(ev: StageEvent) -> None:
            self.keys = ev.runs
            names = ", ".join(ev.runs)
            suite = f", suite {format_eta(ev.suite_eta_s)}" if ev.suite_eta_s is not None else ""
            self.say(f"{names}: {ev.stage} ({format_eta(ev.eta_s)}{suite})")
            if ev.stage == "conversation":
                self.frames_t0 = self.last_step = time.perf_counter()

        def on_step(frame: int, bound: int) -> None:
            now = time.perf_counter()
            if now - self.last_step < STEP_EVENT_S or frame <= 0:
                return
            self.last_step = now
            per_frame = (now - self.frames_t0) / frame
            eta = format_eta(per_frame * max(0, bound - frame))
            self.say(
                f"{', '.join(self.keys)}: conversation frame {frame}/{bound} ({per_frame * 1000:.0f} ms/frame, {eta} at most)"
            )

        def on_run_end(row: dict[str, Any]) -> None:
            self.done += 1
            where = f"  {row['run_dir']}" if row.get("run_dir") else ""
            self.say(
                f"{row.get('status', '?')} {row['scenario']}/{row['run_id']} [{self.done}/{self.total}]{where}"
            )

        def on_note(text: str) -> None:
            self.say(f"note: {text}")

        return SuiteListener(on_plan, None, on_step, on_run_end, on_note, on_stage)


class RichProgress:
    """A rich display: runs done (with the suite's ETA), and the current batch's stage, frames and ETA."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            transient=True,
        )
        self.total = total
        self.runs: Any = None
        self.stage: Any = None
        self.names = ""
        self.frames_t0 = 0.0

    def __enter__(self) -> RichProgress:
        notices.set_sink(lambda text: self.console.print(f"[yellow]note:[/] {text}", markup=True))
        self.bar.__enter__()
        self.runs = self.bar.add_task("runs", total=self.total, eta="")
        self.stage = self.bar.add_task("", total=1, visible=False, eta="")
        return self

    def __exit__(self, *exc: object) -> None:
        notices.set_sink(None)
        self.bar.__exit__(*exc)

    def listener(self) -> Any:
        from rolekit.suite.execute import SuiteListener

        def on_plan(todo: int, skipped: int) -> None:
            self.bar.update(self.runs, completed=skipped)

        def on_stage(ev: StageEvent) -> None:
            names = ", ".join(ev.runs)
            self.names = names if len(names) <= 48 else names[:47] + "…"
            self.bar.update(
                self.stage,
                description=f"{self.names} · {ev.stage}",
                completed=0,
                total=1,
                visible=True,
                eta=format_eta(ev.eta_s),
            )
            if ev.suite_eta_s is not None:
                self.bar.update(self.runs, eta=f"suite {format_eta(ev.suite_eta_s)}")
            if ev.stage == "conversation":
                self.frames_t0 = time.perf_counter()

        def on_step(frame: int, bound: int) -> None:
            eta = ""
            if frame > 0:
                per_frame = (time.perf_counter() - self.frames_t0) / frame
                eta = f"{format_eta(per_frame * max(0, bound - frame))} at most"
            self.bar.update(self.stage, completed=frame, total=bound, eta=eta)

        def on_run_end(row: dict[str, Any]) -> None:
            self.bar.advance(self.runs)
            color = {"pass": "green", "fail": "red"}.get(row.get("status", ""), "yellow")
            where = f"  [dim]{row['run_dir']}[/]" if row.get("run_dir") else ""
            self.console.print(
                f"[{color}]{row.get('status', '?'):5}[/] {row['scenario']}/{row['run_id']}{where}"
            )

        def on_note(text: str) -> None:
            self.console.print(f"[yellow]note:[/] {text}", markup=True)

        return SuiteListener(on_plan, None, on_step, on_run_end, on_note, on_stage)
