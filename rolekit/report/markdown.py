"""Markdown summary of a suite: one table row per run, then every failure message."""

from __future__ import annotations

from typing import Any

from rolekit.report.results import random_label

_ICON = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}


def _num(v: Any, unit: str = "", nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{float(v):.{nd}f}{unit}"


def summary_markdown(results: list[dict[str, Any]], title: str = "rolekit results") -> str:
    n = len(results)
    counts = {s: sum(r.get("status") == s for r in results) for s in ("pass", "fail", "error")}
    lines = [
        f"# {title}",
        "",
        f"**{counts['pass']}/{n} passed** · {counts['fail']} failed · {counts['error']} errors",
        "",
    ]
    note = random_label(results)
    if note:  # a blockquote right under the counts: the first thing a reader sees
        lines += [f"> ⚠️ **Random weights:** {note}", ""]
    lines += [
        "| scenario | run | status | checks | latency mean | yield rate | pause floor | talk ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.get("metrics") or {}
        a = r.get("assertions") or {}
        checks = f"{a.get('pass', 0)}/{a.get('pass', 0) + a.get('fail', 0) + a.get('error', 0)}"
        lines.append(
            f"| {r.get('scenario')} | {r.get('run_id')} | {_ICON.get(r.get('status'), r.get('status'))} | {checks} "
            f"| {_num(m.get('response_latency_mean'), ' s')} | {_num(m.get('yield_rate'))} "
            f"| {_num(m.get('pause_take_floor_rate'))} | {_num(m.get('talk_ratio'))} |"
        )
    bad = [r for r in results if r.get("status") != "pass"]
    if bad:
        lines += ["", "## Failures", ""]
        for r in bad:
            lines.append(f"- **{r.get('scenario')} / {r.get('run_id')}**")
            if r.get("error"):
                lines.append(f"  - run error: {r['error']}")
            lines += [f"  - {msg}" for msg in r.get("failures") or []]
    return "\n".join(lines) + "\n"
