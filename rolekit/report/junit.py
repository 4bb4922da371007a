"""JUnit XML for CI dashboards: one testsuite per scenario, one testcase per run.

`time` is the run's wall time (`wall_s`: generation, transcription and evaluation), not the audio
length. A failed assertion becomes <failure>, a crashed run or an assertion that could not be evaluated
becomes <error>; the message lists every such assertion. A run of a random-weight model carries a
`random_model` property (its text says why its results mean nothing).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rolekit.atomic import write_text
from rolekit.report.results import random_label


def _case_name(r: dict[str, Any]) -> str:
    parts = [str(r.get("run_id"))]
    if r.get("vars"):
        parts.append(",".join(f"{k}={v}" for k, v in sorted(r["vars"].items())))
    return " ".join(parts)


def junit_xml(results: list[dict[str, Any]], name: str = "rolekit") -> str:
    """The JUnit XML document (a <testsuites> root) for results.jsonl lines."""
    root = ET.Element("testsuites", name=name)
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_scenario.setdefault(str(r.get("scenario")), []).append(r)
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    for scenario, runs in by_scenario.items():
        suite = ET.SubElement(root, "testsuite", name=scenario)
        counts = {"tests": len(runs), "failures": 0, "errors": 0, "time": 0.0}
        for r in runs:
            t = float(r.get("wall_s") or 0.0)
            counts["time"] += t
            case = ET.SubElement(
                suite, "testcase", classname=f"rolekit.{scenario}", name=_case_name(r), time=f"{t:.3f}"
            )
            if r.get("random_model"):  # first child, as JUnit's schema orders them
                props = ET.SubElement(case, "properties")
                ET.SubElement(props, "property", name="random_model", value=random_label([r]) or "")
            messages = list(r.get("failures") or [])
            if r.get("error"):
                messages.insert(0, str(r["error"]))
            if r.get("status") == "error":
                counts["errors"] += 1
                el = ET.SubElement(case, "error", message=messages[0] if messages else "error", type="error")
                el.text = "\n".join(messages)
            elif r.get("status") == "fail":
                counts["failures"] += 1
                el = ET.SubElement(
                    case, "failure", message=messages[0] if messages else "failed", type="assertion"
                )
                el.text = "\n".join(messages)
            if r.get("run_dir"):
                ET.SubElement(case, "system-out").text = f"run folder: {r['run_dir']}"
        for k, v in counts.items():
            suite.set(k, f"{v:.3f}" if k == "time" else str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, f"{v:.3f}" if k == "time" else str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, results: list[dict[str, Any]], name: str = "rolekit") -> Path:
    return write_text(path, junit_xml(results, name))
