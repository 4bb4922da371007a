"""What each metrics.json summary value means: unit, which direction is better, one-line definition.

Reports show these next to the numbers; `compare` and baselines use `better` to tell a regression
from an improvement. Every summary key has an entry (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

from rolekit.scenario.expect import Expectation


@dataclass(frozen=True)
class MetricDoc:
    unit: str  # "s", "ratio" (0-1), "count", "words/min", "ms", "x", "bool", "words"
    better: str  # "lower" | "higher" | "" (neither: context)
    text: str


_S, _R, _N = "s", "ratio", "count"

METRICS: dict[str, MetricDoc] = {
    "duration_s": MetricDoc(_S, "", "length of the conversation"),
    "user_speech_s": MetricDoc(_S, "", "user voice activity (energy VAD) in total"),
    "agent_speech_s": MetricDoc(_S, "", "agent voice activity (energy VAD) in total"),
    "talk_ratio": MetricDoc(_R, "", "agent speech / (agent + user speech)"),
    "agent_first_speech_s": MetricDoc(_S, "", "when the agent first spoke (the greeting)"),
    "user_turns": MetricDoc(_N, "", "user turns played (say / audio / interrupt)"),
    "responses": MetricDoc(_N, "higher", "user turns the agent answered before the next turn"),
    "response_rate": MetricDoc(_R, "higher", "responses / user turns"),
    "response_latency_mean": MetricDoc(_S, "lower", "mean of (agent speech start - user turn end)"),
    "response_latency_p50": MetricDoc(_S, "lower", "median response latency"),
    "response_latency_p90": MetricDoc(_S, "lower", "90th percentile response latency"),
    "response_latency_max": MetricDoc(_S, "lower", "slowest response"),
    "interrupts": MetricDoc(_N, "", "scripted barge-ins"),
    "interrupts_while_agent_speaking": MetricDoc(_N, "", "barge-ins that landed while the agent spoke"),
    "yield_rate": MetricDoc(_R, "higher", "barge-ins after which the agent stopped within the yield window"),
    "time_to_yield_mean": MetricDoc(_S, "lower", "mean time from a barge-in to the agent's silence"),
    "time_to_yield_p50": MetricDoc(_S, "lower", "median time to yield"),
    "time_to_yield_p90": MetricDoc(_S, "lower", "90th percentile time to yield"),
    "time_to_yield_max": MetricDoc(_S, "lower", "slowest yield"),
    "talk_over_s": MetricDoc(_S, "lower", "agent speech during the interrupting utterances"),
    "agent_interruptions": MetricDoc(_N, "lower", "agent speech that started while the user spoke"),
    "agent_interruption_rate": MetricDoc(_R, "lower", "agent interruptions / user turns"),
    "overlap_s": MetricDoc(_S, "lower", "time both channels speak"),
    "overlap_count": MetricDoc(_N, "lower", "stretches where both channels speak"),
    "dead_air_s": MetricDoc(_S, "lower", "silence between the first and last speech of either side"),
    "dead_air_ratio": MetricDoc(_R, "lower", "dead air / span from first to last speech"),
    "dead_air_max_gap_s": MetricDoc(_S, "lower", "longest silence inside the conversation"),
    "dead_air_long_gaps": MetricDoc(_N, "lower", "silences longer than dead_air_gap_s (3 s)"),
    "pauses": MetricDoc(_N, "", "scripted pauses (the user keeps the floor, silent)"),
    "pause_take_floor_rate": MetricDoc(
        _R, "lower", "pauses in which the agent's voice filled >= 1 s (or it said > 3 words)"
    ),
    "monologue_words": MetricDoc("words", "", "words in the model's own text stream"),
    "agent_words": MetricDoc("words", "", "words Whisper heard on the agent channel"),
    "agent_mean_confidence": MetricDoc(_R, "higher", "mean Whisper word confidence on the agent channel"),
    "agent_low_confidence_share": MetricDoc(
        _R, "lower", "agent words below confidence 0.5 (often Whisper inventing words over noise)"
    ),
    "speaking_rate_wpm": MetricDoc("words/min", "", "agent Whisper words per minute of agent speech"),
    "monologue_overlap": MetricDoc(_R, "higher", "share of words the text stream and Whisper have in common"),
    "monologue_wer": MetricDoc(
        _R, "lower", "word error rate of the text stream against Whisper's agent text"
    ),
    "monologue_agrees": MetricDoc("bool", "", "monologue_overlap >= monologue_min_overlap (0.2)"),
    "user_wer": MetricDoc(_R, "lower", "Whisper's word error rate on the scripted user lines (TTS check)"),
    "step_ms_mean": MetricDoc("ms", "lower", "mean compute time of one 80 ms step"),
    "step_ms_p90": MetricDoc("ms", "lower", "90th percentile step time"),
    "realtime_factor": MetricDoc("x", "lower", "step time / 80 ms (< 1 keeps up with real time)"),
    "late_frames": MetricDoc(_N, "lower", "steps slower than 80 ms (live runs)"),
}

# metrics each built-in check reads (highlighted in reports next to those checks)
_CHECK_METRICS = {
    "max_response_latency": ("response_latency_mean", "response_latency_p90", "response_latency_max"),
    "must_yield": ("yield_rate", "time_to_yield_max"),
    "must_not_interrupt": ("agent_interruptions",),
    "agent_says": ("agent_low_confidence_share",),
    "not_says": ("agent_low_confidence_share",),
}


def checked_metrics(expect: list[dict | Expectation]) -> set[str]:
    """Summary names the `expect:` list reads (metric: names and the built-in checks' metrics)."""
    out: set[str] = set()
    for item in expect:
        try:
            exp = item if isinstance(item, Expectation) else Expectation.model_validate(item)
        except ValueError:
            continue
        if exp.metric is not None:
            out.add(exp.metric.name)
        out.update(_CHECK_METRICS.get(exp.kind, ()))
    return out
