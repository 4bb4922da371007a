"""Custom checks: `expect: - python: checks/refund.py:mentions_policy` (or `package.module:function`).

The function receives one `CheckRun` (plain Python data, documented below) and returns either a
bool, a `(passed, message)` pair, or a dict `{"passed": bool, "message": str}`. Anything it raises
(and any other return value) makes that check fail with the reason; the suite never crashes.

A check that has not returned after CHECK_TIMEOUT_S seconds fails ("did not finish"); the suite
goes on (the function keeps running in a daemon thread until it returns or the process ends).

A `file.py` path is relative to the scenario file and must stay inside the scenario's folder; the
file is imported once per process under a private module name. `module:function` imports an
installed module. The function runs in the rolekit process: scenario authors' Python is trusted
code, like a pytest conftest.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rolekit.record import SessionRecord, monologue_words
from rolekit.scenario.expect import python_check_target
from rolekit.scenario.schema import check_file
from rolekit.transcribe.transcript import Transcript

CHECK_TIMEOUT_S = 30.0


@dataclass
class CheckRun:
    """What a custom check sees of one run (seconds from the start of the conversation).

    - `text`: {"user": str, "agent": str} Whisper text per channel ("" without a transcript)
    - `words`: {"user": [...], "agent": [...]}, each word {"word", "start", "end", "probability"}
      (Whisper's confidence, 0-1); empty lists without a transcript
    - `transcribed`: whether a Whisper transcript exists
    - `monologue`: the model's own text stream as [{"time", "word"}] (byte pieces decoded)
    - `metrics`: metrics.json's flat summary (the names `metric:` checks use)
    - `details`: the rest of metrics.json (segments, turns, interruptions, pauses, thresholds)
    - `events`: the script's ground-truth labels [{"kind", "turn", "start", "end", "text", ...}]
    - `meta`: meta.json (scenario, run_id, persona, vars, seed, voice, model_id, ...)
    - `duration`: seconds of conversation; `folder`: the run folder, when saved
    """

    text: dict[str, str]
    words: dict[str, list[dict[str, Any]]]
    transcribed: bool
    monologue: list[dict[str, Any]]
    metrics: dict[str, Any]
    details: dict[str, Any]
    events: list[dict[str, Any]]
    meta: dict[str, Any]
    duration: float
    folder: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_run(
    record: SessionRecord, metrics: dict[str, Any], transcript: Transcript | None, folder: Path | None = None
) -> CheckRun:
    """Build the CheckRun of a run (copies: a check cannot change what later checks see)."""
    import copy

    speakers = ("user", "agent")
    words = {
        sp: [
            {"word": w.word.strip(), "start": w.start, "end": w.end, "probability": w.probability}
            for w in (transcript.words(sp) if transcript is not None else [])
        ]
        for sp in speakers
    }
    return CheckRun(
        text={sp: transcript.text(sp) if transcript is not None else "" for sp in speakers},
        words=words,
        transcribed=transcript is not None,
        monologue=[{"time": t, "word": w} for t, w in monologue_words(record.text_pieces)],
        metrics=copy.deepcopy(metrics.get("summary", {})),
        details=copy.deepcopy({k: v for k, v in metrics.items() if k != "summary"}),
        events=copy.deepcopy(list(record.events)),
        meta=copy.deepcopy(dict(record.meta)),
        duration=record.duration,
        folder=folder,
    )


def run_custom_check(spec: str, run: CheckRun) -> tuple[str, str, dict[str, Any]]:
    """(status, message, details) of one `python:` check; never raises."""
    try:
        func = _load(spec, run.meta.get("scenario_file"))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the check fails, the suite goes on
        return "fail", f"cannot load {spec}: {_one_line(exc)}", {"exception": _one_line(exc)}
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["out"] = func(run)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported below
            box["exc"] = exc

    worker = threading.Thread(target=call, name=f"rolekit-check {spec}", daemon=True)
    worker.start()
    worker.join(CHECK_TIMEOUT_S)
    if worker.is_alive():
        return "fail", f"{spec} did not finish within {CHECK_TIMEOUT_S:g} s", {"timeout_s": CHECK_TIMEOUT_S}
    if "exc" in box:
        exc = box["exc"]
        where = _user_frame(exc)
        return "fail", f"{spec} raised {_one_line(exc)}{where}", {"exception": _one_line(exc)}
    out = box.get("out")
    passed, message = _verdict(out)
    if passed is None:
        return "fail", f"{spec} returned {out!r}: return a bool, (passed, message) or a dict", {}
    default = "passed" if passed else "failed"
    return ("pass" if passed else "fail"), message or f"{spec} {default}", {"returned": repr(out)[:500]}


def _verdict(out: Any) -> tuple[bool | None, str]:
    if isinstance(out, bool):
        return out, ""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], bool):
        return out[0], str(out[1])
    if isinstance(out, dict) and isinstance(out.get("passed"), bool):
        return out["passed"], str(out.get("message", ""))
    return None, ""


_LOADED: dict[str, Callable[..., Any]] = {}


def _load(spec: str, scenario_file: str | None) -> Callable[..., Any]:
    kind, target, name = python_check_target(spec)
    if kind == "file":
        if not scenario_file:
            raise ValueError("the run's meta.json names no scenario file to resolve the path against")
        path = check_file(Path(scenario_file), spec)
        key = f"{path}:{name}"
        if key not in _LOADED:
            mod_name = "rolekit_check_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
            _LOADED[key] = _function(module, name, str(path))
        return _LOADED[key]
    return _function(importlib.import_module(target), name, target)


def _function(module: Any, name: str, where: str) -> Callable[..., Any]:
    func = getattr(module, name, None)
    if not callable(func):
        raise AttributeError(f"{where} has no function {name!r}")
    return func


def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def _user_frame(exc: BaseException) -> str:
    """` at file.py:12` for the innermost frame of the check's own code."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
