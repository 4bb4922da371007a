"""The dialogue transcript of a run: Whisper words and segments of both speakers, merged by time.

Plain data (no mlx): evaluate and report read it. Files: `transcript.json` (both channels with word
times, plus the merged dialogue) and `transcript.md` (one line per speaker turn with its time).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rolekit.atomic import write_text
from rolekit.errors import RolekitError

TRANSCRIPT_JSON = "transcript.json"
TRANSCRIPT_MD = "transcript.md"
TRANSCRIPT_VERSION = 1
SPEAKERS = ("user", "agent")
MERGE_GAP_S = 1.0  # consecutive segments of one speaker closer than this form one dialogue line


class TranscriptError(RolekitError):
    """A transcript file is missing or malformed."""


@dataclass
class Word:
    word: str  # as Whisper wrote it, leading space and punctuation kept
    start: float
    end: float
    probability: float = 1.0


@dataclass
class Segment:
    speaker: str  # "user" | "agent"
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    no_speech_prob: float = 0.0


@dataclass
class DialogueLine:
    speaker: str
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """Both channels of one run, in seconds from the start of the conversation."""

    model: str
    segments: list[Segment] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def of(self, speaker: str) -> list[Segment]:
        return [s for s in self.segments if s.speaker == speaker]

    def text(self, speaker: str, start: float | None = None, end: float | None = None) -> str:
        """The words of `speaker` whose start lies in [start, end) (all when no bounds are given)."""
        words = self.words(speaker, start, end)
        if words or start is not None or end is not None:
            return " ".join(w.word.strip() for w in words).strip()
        return " ".join(s.text.strip() for s in self.of(speaker)).strip()

    def words(self, speaker: str, start: float | None = None, end: float | None = None) -> list[Word]:
        lo = float("-inf") if start is None else start
        hi = float("inf") if end is None else end
        out: list[Word] = []
        for seg in self.of(speaker):
            if seg.words:
                out.extend(w for w in seg.words if lo <= w.start < hi)
            elif lo <= seg.start < hi:  # a segment without word times counts as one block
                out.append(Word(seg.text, seg.start, seg.end))
        return out

    def dialogue(self, merge_gap: float = MERGE_GAP_S) -> list[DialogueLine]:
        """Speaker turns sorted by start; one speaker's close segments are joined."""
        lines: list[DialogueLine] = []
        last: dict[str, DialogueLine] = {}
        for seg in sorted(self.segments, key=lambda s: (s.start, s.speaker)):
            text = seg.text.strip()
            if not text:
                continue
            prev = last.get(seg.speaker)
            if prev is not None and lines and lines[-1] is prev and seg.start - prev.end < merge_gap:
                prev.text = f"{prev.text} {text}"
                prev.end = max(prev.end, seg.end)
                continue
            line = DialogueLine(seg.speaker, seg.start, seg.end, text)
            lines.append(line)
            last[seg.speaker] = line
        return lines

    def to_dict(self) -> dict[str, Any]:
        channels = {
            sp: {"text": self.text(sp), "segments": [_segment_dict(s) for s in self.of(sp)]}
            for sp in SPEAKERS
        }
        return {
            "version": TRANSCRIPT_VERSION,
            "model": self.model,
            "options": self.options,
            "channels": channels,
            "dialogue": [asdict(line) for line in self.dialogue()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        segments: list[Segment] = []
        for sp, chan in data.get("channels", {}).items():
            for s in chan.get("segments", []):
                words = [
                    Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w.get("probability", 1.0)))
                    for w in s.get("words", [])
                ]
                segments.append(
                    Segment(
                        sp,
                        float(s["start"]),
                        float(s["end"]),
                        str(s["text"]),
                        words,
                        float(s.get("no_speech_prob", 0.0)),
                    )
                )
        segments.sort(key=lambda s: (s.start, s.speaker))
        return cls(model=str(data.get("model", "")), segments=segments, options=dict(data.get("options", {})))

    def markdown(self, title: str = "Transcript") -> str:
        out = [f"# {title}", "", f"Whisper model: `{self.model}`", ""]
        lines = self.dialogue()
        if not lines:
            out.append("_(no speech recognised on either channel)_")
        for line in lines:
            out.append(
                f"**[{clock(line.start)}–{clock(line.end)}] {line.speaker.capitalize()}:** {line.text}  "
            )
        return "\n".join(out) + "\n"


def _segment_dict(s: Segment) -> dict[str, Any]:
    return {
        "start": round(s.start, 3),
        "end": round(s.end, 3),
        "text": s.text.strip(),
        "no_speech_prob": round(s.no_speech_prob, 4),
        "words": [
            {
                "word": w.word,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "probability": round(w.probability, 4),
            }
            for w in s.words
        ],
    }


def clock(seconds: float) -> str:
    """mm:ss.s, e.g. 01:02.5."""
    m, s = divmod(max(0.0, seconds), 60.0)
    return f"{int(m):02d}:{s:04.1f}"


def write_transcript(folder: Path, transcript: Transcript, title: str | None = None) -> tuple[Path, Path]:
    """Write transcript.json and transcript.md into a run folder (each atomically)."""
    folder = Path(folder)
    j = write_text(
        folder / TRANSCRIPT_JSON, json.dumps(transcript.to_dict(), indent=1, ensure_ascii=False) + "\n"
    )
    m = write_text(folder / TRANSCRIPT_MD, transcript.markdown(title or f"Transcript: {folder.name}"))
    return j, m


def load_transcript(folder: Path) -> Transcript | None:
    """The transcript of a run folder, or None when it has not been transcribed."""
    path = Path(folder) / TRANSCRIPT_JSON
    if not path.is_file():
        return None
    try:
        return Transcript.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise TranscriptError(f"{path}: malformed transcript ({exc})") from None
