"""The timeline of a run as inline SVG: scripted events, user and agent speech (VAD), Whisper's
words of each speaker (low-confidence words marked), the model's inner monologue at the frames
where it wrote each word, interrupts and response latencies.

Pure string building (escaped). Lane labels are not in the SVG: the report draws them from `LANES`
as HTML that stays in view while the timeline scrolls. The playhead moves over the SVG (`.playhead`
line, x = `data-x0` + seconds * `data-px`).
"""

from __future__ import annotations

from html import escape
from typing import Any

PAD_LEFT = 8  # room before t = 0 (the labels are HTML, outside the SVG)
LANE_H = 22
LANE_GAP = 6
TOP = 24
# (lane id, label, title) top to bottom
LANES = (
    ("script", "script", "the scenario's turns: say / audio / pause / interrupt"),
    ("user", "user", "user voice activity (energy VAD)"),
    ("user_text", "user words", "Whisper's words on the user channel"),
    ("agent", "agent", "agent voice activity (energy VAD)"),
    ("agent_text", "agent words", "Whisper's words on the agent channel; red = low confidence"),
    ("monologue", "monologue", "the model's own text stream (inner monologue), at the frame of each word"),
)
COLORS = {
    "user": "#4c78a8",
    "agent": "#f58518",
    "say": "#9ecae9",
    "audio": "#9ecae9",
    "interrupt": "#c62828",
    "pause": "#d0d0d0",
}


def px_per_second(duration: float) -> float:
    """Scale so that short runs fill ~900 px and long ones stay readable (scrolls past ~6000 px)."""
    return max(900.0 / max(duration, 1e-6), 40.0) if duration <= 150 else 6000.0 / duration


def _fit(text: str, width_px: float) -> str:
    n = int(width_px / 6.2)
    if n <= 1:
        return ""
    return text if len(text) <= n else text[: max(n - 1, 1)] + "…"


def _rect(x: float, y: float, w: float, h: float, color: str, cls: str, title: str, label: str = "") -> str:
    out = (
        f'<g class="{cls}"><rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 1.5):.1f}" height="{h:.1f}" '
        f'rx="3" fill="{color}"><title>{escape(title)}</title></rect>'
    )
    if label:
        out += f'<text x="{x + 3:.1f}" y="{y + h - 6:.1f}" class="lbl">{escape(_fit(label, w - 4))}</text>'
    return out + "</g>"


def lane_y() -> dict[str, int]:
    """Top of each lane in SVG pixels (the HTML labels use the same numbers)."""
    return {name: TOP + i * (LANE_H + LANE_GAP) for i, (name, _, _) in enumerate(LANES)}


def lane_labels() -> list[dict[str, Any]]:
    """[{"id", "label", "title", "top", "height"}] for the sticky HTML lane labels."""
    y = lane_y()
    return [{"id": n, "label": lab, "title": t, "top": y[n], "height": LANE_H} for n, lab, t in LANES]


def svg_height() -> int:
    return lane_y()[LANES[-1][0]] + LANE_H + 14


def timeline_svg(
    duration: float,
    segments: dict[str, list[list[float]]],
    events: list[dict[str, Any]],
    transcript: list[dict[str, Any]] | None = None,
    turns: list[dict[str, Any]] | None = None,
    words: list[dict[str, Any]] | None = None,
    monologue: list[tuple[float, str]] | None = None,
    low_confidence: float = 0.5,
) -> str:
    """SVG markup. `transcript`: [{"speaker", "start", "end", "text"}] (drawn where a speaker has no
    `words`); `words`: [{"speaker", "word", "start", "end", "probability"}]; `monologue`: [(time s,
    word)]; `turns`: metrics.json turns."""
    px = px_per_second(duration)
    width = PAD_LEFT + duration * px + 20
    y = lane_y()
    height = svg_height()

    def X(t: float) -> float:
        return PAD_LEFT + float(t) * px

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" data-px="{px:.4f}" data-x0="{PAD_LEFT}" role="img" '
        f'aria-label="conversation timeline">'
    ]
    step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120) if s * px >= 45)
    t = 0.0
    while t <= duration + 1e-9:
        parts.append(
            f'<line x1="{X(t):.1f}" y1="14" x2="{X(t):.1f}" y2="{height - 4}" class="grid"/>'
            f'<text x="{X(t) + 2:.1f}" y="11" class="tick">{t:g}s</text>'
        )
        t += step
    for ev in events:
        start = float(ev["start"])
        end = float(ev["end"]) if ev.get("end") is not None else duration
        kind = str(ev.get("kind"))
        text = ev.get("text") or (f"pause {end - start:.1f} s" if kind == "pause" else kind)
        title = f"turn {ev.get('turn')} · {kind} · {start:.2f}–{end:.2f} s · {text}"
        parts.append(
            _rect(
                X(start),
                y["script"],
                (end - start) * px,
                LANE_H,
                COLORS.get(kind, "#ccc"),
                f"event {kind}",
                title,
                f"{ev.get('turn')}: {text}",
            )
        )
        if kind == "interrupt":
            parts.append(
                f'<line x1="{X(start):.1f}" y1="{y["script"]}" x2="{X(start):.1f}" y2="{height - 4}" class="interrupt-line"/>'
            )
    for speaker in ("user", "agent"):
        for s, e in segments.get(speaker, []):
            parts.append(
                _rect(
                    X(s),
                    y[speaker],
                    (e - s) * px,
                    LANE_H,
                    COLORS[speaker],
                    f"speech {speaker}",
                    f"{speaker} speech {s:.2f}–{e:.2f} s",
                )
            )
    worded = {w["speaker"] for w in words or []}
    for w in words or []:
        lane = f"{w['speaker']}_text"
        if lane not in y:
            continue
        s, e, prob = float(w["start"]), float(w["end"]), float(w.get("probability", 1.0))
        low = prob < low_confidence
        title = f"{w['speaker']} {s:.2f}–{e:.2f} s: {w['word']} (confidence {prob:.2f})"
        cls = f"word {w['speaker']}" + (" lowconf" if low else "")
        parts.append(
            _rect(X(s), y[lane], (e - s) * px, LANE_H, "#f6c4c4" if low else "#eeeeee", cls, title, w["word"])
        )
    for i, (t, word) in enumerate(monologue or []):
        nxt = monologue[i + 1][0] if monologue and i + 1 < len(monologue) else t + 0.4
        w_s = max(min(nxt, t + 1.2) - t, 0.16)
        title = f"monologue {t:.2f} s: {word}"
        parts.append(_rect(X(t), y["monologue"], w_s * px, LANE_H, "#e3d7f5", "mono-word", title, word))
    for seg in transcript or []:
        lane = f"{seg['speaker']}_text"
        if lane not in y or seg["speaker"] in worded:
            continue
        s, e = float(seg["start"]), float(seg["end"])
        title = f"{seg['speaker']} {s:.2f}–{e:.2f} s: {seg['text']}"
        parts.append(
            _rect(
                X(s), y[lane], (e - s) * px, LANE_H, "#eeeeee", f"words {seg['speaker']}", title, seg["text"]
            )
        )
    for tr in turns or []:
        if tr.get("response_latency_s") is None:
            continue
        x1, x2 = X(tr["end"]), X(tr["response_start"])
        ym = y["user"] + LANE_H + 3
        parts.append(
            f'<line x1="{x1:.1f}" y1="{ym}" x2="{x2:.1f}" y2="{ym}" class="latency">'
            f"<title>turn {tr['turn']}: response latency {tr['response_latency_s']:.2f} s</title></line>"
        )
    parts.append(f'<line class="playhead" x1="{PAD_LEFT}" y1="14" x2="{PAD_LEFT}" y2="{height - 4}"/>')
    parts.append("</svg>")
    return "".join(parts)
