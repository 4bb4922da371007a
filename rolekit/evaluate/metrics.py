"""Turn-taking metrics of one run: two-channel energy VAD plus the script's event labels.

Definitions (seconds; FDB = Full-Duplex-Bench, tau = tau-voice):
- response latency (per user turn, say/audio/interrupt): start of the first agent segment that
  begins after the turn started and before the next user turn, minus the turn's end (negative =
  the agent started before the user finished); no such segment = no response.
- barge-in (per scripted interrupt while the agent speaks): yielded if that agent segment ends
  within `yield_window_s` of the interrupt; time to yield = segment end - interrupt start;
  talk-over = agent speech during the interrupting utterance. Yield rate = yields / applicable.
- agent interruptions (tau I_A): agent segments that start while the user is speaking.
- overlap: total time both channels speak. Dead air: silence between the first and the last
  speech of either side (lead-in and tail silences are not counted); gaps > `dead_air_gap_s`.
- talk ratio: agent speech / (agent + user speech).
- takes the floor during a pause (per scripted pause): the agent's voice activity (VAD) inside the
  pause adds up to >= `take_floor_min_span_s`, whether or not Whisper heard words in it (speech
  begun before the pause and carried through it counts); with a transcript, the FDB take-turn rule
  on agent words starting inside the pause (> `take_floor_max_words` words or a span >=
  `take_floor_min_span_s`) also counts. `agent_speech_s` and `agent_words` are kept per pause.
- speaking rate: agent Whisper words per minute of agent VAD speech.
- monologue agreement: word overlap / WER between the model's text stream and Whisper's agent text.
- word confidence: Whisper's per-word probability; the share of agent words below `low_confidence`
  (a mostly low-confidence agent channel is often Whisper inventing words over noise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.atomic import write_text
from rolekit.evaluate.thresholds import THRESHOLDS_VERSION, thresholds
from rolekit.evaluate.vad import Span, clip, covering, intersect, merge, speech_segments, total
from rolekit.record import SessionRecord
from rolekit.transcribe.transcript import Transcript
from rolekit.transcribe.words import normalize_words, word_error_rate, word_overlap

METRICS_JSON = "metrics.json"
USER_TURN_KINDS = ("say", "audio", "interrupt")


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _end(ev: dict[str, Any], duration: float) -> float:
    return float(ev["end"]) if ev.get("end") is not None else duration


def _stats(values: list[float], prefix: str) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}_mean": None, f"{prefix}_p50": None, f"{prefix}_p90": None, f"{prefix}_max": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        f"{prefix}_mean": _r(a.mean()),
        f"{prefix}_p50": _r(np.percentile(a, 50)),
        f"{prefix}_p90": _r(np.percentile(a, 90)),
        f"{prefix}_max": _r(a.max()),
    }


def user_turns(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((e for e in events if e.get("kind") in USER_TURN_KINDS), key=lambda e: float(e["start"]))


def turn_window(events: list[dict[str, Any]], turn: int, duration: float) -> tuple[float, float] | None:
    """[start of turn `turn`, start of the next spoken user turn) or None if it never played.

    Pauses do not end a window: what the agent says during a pause answers the turn before it.
    """
    evs = sorted(events, key=lambda e: float(e["start"]))
    for i, e in enumerate(evs):
        if e.get("turn") == turn:
            start = float(e["start"])
            nxt = (
                float(x["start"])
                for x in evs[i + 1 :]
                if x.get("kind") in USER_TURN_KINDS and float(x["start"]) > start
            )
            return start, next(nxt, duration)
    return None


def _response(turn: dict, nxt_start: float, agent: list[Span]) -> Span | None:
    start = float(turn["start"])
    return next((a for a in agent if start < a[0] < nxt_start), None)


def _took_floor_words(words: list[Any], th: dict[str, float]) -> bool:
    if not words:
        return False
    span = words[-1].end - words[0].start
    return not (span < th["take_floor_min_span_s"] and len(words) <= th["take_floor_max_words"])


def compute_metrics(
    record: SessionRecord, transcript: Transcript | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """metrics.json content: thresholds, VAD segments, per-turn details and a flat `summary`."""
    th = thresholds(overrides)
    sr = record.sample_rate
    duration = record.duration
    user = speech_segments(record.user_pcm, sr, th)
    agent = speech_segments(record.agent_pcm, sr, th)
    events = list(record.events)
    turns_ev = user_turns(events)

    # response latency per user turn
    turns = []
    for i, ev in enumerate(turns_ev):
        nxt = float(turns_ev[i + 1]["start"]) if i + 1 < len(turns_ev) else duration
        end = _end(ev, duration)
        resp = _response(ev, nxt, agent)
        turns.append(
            {
                "turn": ev.get("turn"),
                "kind": ev["kind"],
                "start": _r(ev["start"]),
                "end": _r(end),
                "text": ev.get("text"),
                "responded": resp is not None,
                "response_start": _r(resp[0]) if resp else None,
                "response_latency_s": _r(resp[0] - end) if resp else None,
            }
        )
    latencies = [t["response_latency_s"] for t in turns if t["response_latency_s"] is not None]

    # barge-in: scripted interrupts
    interruptions = []
    for ev in (e for e in turns_ev if e["kind"] == "interrupt"):
        t_i, end = float(ev["start"]), _end(ev, duration)
        seg = covering(agent, t_i)
        item: dict[str, Any] = {"turn": ev.get("turn"), "at": _r(t_i), "agent_speaking": seg is not None}
        if seg is not None:
            item["time_to_yield_s"] = _r(seg[1] - t_i)
            item["yielded"] = seg[1] - t_i <= th["yield_window_s"] + 1e-9
        item["talk_over_s"] = _r(total(clip(agent, t_i, end)))
        interruptions.append(item)
    applicable = [x for x in interruptions if x["agent_speaking"]]

    # agent-initiated interruptions: agent starts while the user speaks
    agent_interrupts = [
        {"at": _r(a[0]), "user_segment": [_r(u[0]), _r(u[1])]} for a in agent if (u := covering(user, a[0]))
    ]

    # pauses: does the agent take the floor?
    pauses = []
    for ev in (e for e in events if e.get("kind") == "pause"):
        lo, hi = float(ev["start"]), _end(ev, duration)
        voiced = total(clip(agent, lo, hi))
        item = {"turn": ev.get("turn"), "start": _r(lo), "end": _r(hi), "agent_speech_s": _r(voiced)}
        took = voiced >= th["take_floor_min_span_s"] - 1e-9
        if transcript is not None:
            words = transcript.words("agent", lo, hi)
            item["agent_words"] = len(words)
            took = took or _took_floor_words(words, th)
        item["took_floor"] = took
        pauses.append(item)

    # overlap, dead air, talk ratio
    both = intersect(user, agent)
    speech = merge(user + agent)
    user_s, agent_s = total(user), total(agent)
    gaps = [b[0] - a[1] for a, b in zip(speech, speech[1:], strict=False)]
    span = (speech[-1][1] - speech[0][0]) if speech else 0.0
    dead = sum(gaps)
    summary: dict[str, Any] = {
        "duration_s": _r(duration),
        "user_speech_s": _r(user_s),
        "agent_speech_s": _r(agent_s),
        "talk_ratio": _r(agent_s / (agent_s + user_s)) if agent_s + user_s > 0 else None,
        "agent_first_speech_s": _r(agent[0][0]) if agent else None,
        "user_turns": len(turns),
        "responses": sum(t["responded"] for t in turns),
        "response_rate": _r(sum(t["responded"] for t in turns) / len(turns)) if turns else None,
        **_stats(latencies, "response_latency"),
        "interrupts": len(interruptions),
        "interrupts_while_agent_speaking": len(applicable),
        "yield_rate": _r(sum(x["yielded"] for x in applicable) / len(applicable)) if applicable else None,
        **_stats([x["time_to_yield_s"] for x in applicable], "time_to_yield"),
        "talk_over_s": _r(sum(x["talk_over_s"] for x in interruptions)),
        "agent_interruptions": len(agent_interrupts),
        "agent_interruption_rate": _r(len(agent_interrupts) / len(turns)) if turns else None,
        "overlap_s": _r(total(both)),
        "overlap_count": len(both),
        "dead_air_s": _r(dead),
        "dead_air_ratio": _r(dead / span) if span > 0 else None,
        "dead_air_max_gap_s": _r(max(gaps)) if gaps else None,
        "dead_air_long_gaps": sum(g > th["dead_air_gap_s"] for g in gaps),
        "pauses": len(pauses),
        "pause_take_floor_rate": _r(sum(p["took_floor"] for p in pauses) / len(pauses)) if pauses else None,
    }
    summary.update(_text_metrics(record, transcript, agent_s, th))
    summary.update(_timing_metrics(record))
    return {
        "thresholds_version": THRESHOLDS_VERSION,
        "thresholds": th,
        "transcript": transcript is not None,
        # a random-weight model speaks noise: these numbers test the plumbing, not a persona
        "random_model": bool(record.meta.get("is_random_model", False)),
        "summary": summary,
        "segments": {"user": [[_r(s), _r(e)] for s, e in user], "agent": [[_r(s), _r(e)] for s, e in agent]},
        "turns": turns,
        "interruptions": interruptions,
        "agent_interruptions": agent_interrupts,
        "pauses": pauses,
    }


def _text_metrics(
    record: SessionRecord, transcript: Transcript | None, agent_s: float, th: dict[str, float]
) -> dict[str, Any]:
    mono = record.monologue_text()
    out: dict[str, Any] = {"monologue_words": len(normalize_words(mono))}
    if transcript is None:
        out.update(
            agent_mean_confidence=None,
            agent_low_confidence_share=None,
            speaking_rate_wpm=None,
            monologue_overlap=None,
            monologue_wer=None,
            monologue_agrees=None,
            user_wer=None,
        )
        return out
    agent_text = transcript.text("agent")
    n_words = len(normalize_words(agent_text))
    out["agent_words"] = n_words
    probs = [w.probability for w in transcript.words("agent")]
    out["agent_mean_confidence"] = _r(float(np.mean(probs))) if probs else None
    low = sum(p < th["low_confidence"] for p in probs)
    out["agent_low_confidence_share"] = _r(low / len(probs)) if probs else None
    out["speaking_rate_wpm"] = _r(n_words / (agent_s / 60.0), 1) if agent_s > 0 else None
    if mono or agent_text:
        overlap = word_overlap(mono, agent_text)
        out["monologue_overlap"] = _r(overlap)
        out["monologue_wer"] = _r(word_error_rate(mono, agent_text))
        out["monologue_agrees"] = overlap >= th["monologue_min_overlap"]
    else:
        out.update(monologue_overlap=None, monologue_wer=None, monologue_agrees=None)
    script = " ".join(
        e["text"]
        for e in user_turns(record.events)
        if e.get("kind") in ("say", "interrupt") and e.get("text")
    )
    out["user_wer"] = _r(word_error_rate(script, transcript.text("user"))) if script else None
    return out


def _timing_metrics(record: SessionRecord) -> dict[str, Any]:
    steps = np.asarray(record.step_ms, dtype=np.float64)
    if steps.size == 0:
        return {
            "step_ms_mean": None,
            "step_ms_p90": None,
            "realtime_factor": None,
            "late_frames": record.meta.get("late_frames"),
        }
    return {
        "step_ms_mean": _r(steps.mean(), 2),
        "step_ms_p90": _r(np.percentile(steps, 90), 2),
        "realtime_factor": _r(steps.mean() / 80.0),
        "late_frames": record.meta.get("late_frames"),
    }


TRANSCRIPT_METRICS = (
    "agent_words",
    "speaking_rate_wpm",
    "monologue_overlap",
    "monologue_wer",
    "monologue_agrees",
    "user_wer",
)


def metric_names() -> frozenset[str]:
    """Every key of a metrics.json `summary` (what `expect: - metric: {name}` may name): the keys of
    a silent one-second record, plus those only a transcript gives."""
    from rolekit.frames import SAMPLE_RATE

    silent = np.zeros(SAMPLE_RATE, np.float32)
    summary = compute_metrics(SessionRecord(user_pcm=silent, agent_pcm=silent))["summary"]
    return frozenset(summary) | frozenset(TRANSCRIPT_METRICS)


def write_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    return write_text(Path(folder) / METRICS_JSON, json.dumps(metrics, indent=1) + "\n")


def load_metrics(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / METRICS_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
