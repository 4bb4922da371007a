"""SessionRecord: what a session (scripted or live) produces and every later step reads.

numpy + soundfile only (no mlx; of rolekit only the leaf modules): transcribe, evaluate, report and review
read records without ever touching the engine.

Folder layout (written atomically by `save`: `rolekit.atomic.replaced_folder`, a temporary sibling
folder, then one rename):
    conversation.wav   stereo 16-bit PCM, 24 kHz, left = user, right = agent
    channels.json      {"sample_rate": 24000, "channels": {"0": "user", "1": "agent"}}
    monologue.json     [{"frame": i, "time": s, "id": n, "piece": "..."}, ...]  (the model's text stream)
    events.json        the script's ground-truth labels (say / audio / pause / interrupt)
    timings.json       {"step_ms": [...], "frame_seconds": 0.08}
    meta.json          scenario, run id, persona, hash, vars, model, seed, versions, ...
    agent_codes.npy    [T, 8] int agent Mimi codes (only when known)
Later steps add transcript.json / transcript.md, metrics.json, assertions.json, report.html.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.atomic import remove_leftovers, replaced_folder
from rolekit.errors import RolekitError
from rolekit.frames import FRAME_SECONDS, SAMPLE_RATE

CONVERSATION_WAV = "conversation.wav"
CHANNELS_JSON = "channels.json"
MONOLOGUE_JSON = "monologue.json"
EVENTS_JSON = "events.json"
TIMINGS_JSON = "timings.json"
META_JSON = "meta.json"
AGENT_CODES_NPY = "agent_codes.npy"
SPECIAL_PIECES = ("PAD", "EPAD", "BOS", "EOS")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
RECORD_FILES = (CONVERSATION_WAV, CHANNELS_JSON, MONOLOGUE_JSON, EVENTS_JSON, TIMINGS_JSON, META_JSON)


class RecordError(RolekitError):
    """A run folder is missing files or cannot be read as a SessionRecord."""


@dataclass
class SessionRecord:
    """One conversation: both channels, the model's text stream, timings, script labels, meta."""

    user_pcm: np.ndarray  # [N] float32, 24 kHz: what the model heard (user channel)
    agent_pcm: np.ndarray  # [N] float32, 24 kHz: what the model said, frame i at time i*0.08 s
    text_ids: list[int] = field(default_factory=list)  # per output frame: text token (inner monologue)
    text_pieces: list[str] = field(
        default_factory=list
    )  # per output frame: piece (▁ -> space) or "PAD"/"EPAD"
    agent_codes: np.ndarray | None = None  # [T, 8] int agent Mimi codes, or None
    step_ms: list[float] = field(default_factory=list)  # per step compute time (engine.step wall time)
    events: list[dict] = field(default_factory=list)  # ground-truth labels of the script
    meta: dict = field(default_factory=dict)
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        """Seconds of conversation (the longer channel)."""
        return max(len(self.user_pcm), len(self.agent_pcm)) / self.sample_rate

    @property
    def frames(self) -> int:
        return len(self.text_ids)

    def stereo(self) -> np.ndarray:
        """[N, 2] float32: left = user, right = agent (the shorter channel padded with silence)."""
        n = max(len(self.user_pcm), len(self.agent_pcm))
        out = np.zeros((n, 2), dtype=np.float32)
        out[: len(self.user_pcm), 0] = self.user_pcm
        out[: len(self.agent_pcm), 1] = self.agent_pcm
        return out

    def monologue(self) -> list[dict[str, Any]]:
        """The text stream with frame times: [{"frame", "time", "id", "piece"}]."""
        return [
            {"frame": i, "time": round(i * FRAME_SECONDS, 4), "id": int(t), "piece": p}
            for i, (t, p) in enumerate(zip(self.text_ids, self.text_pieces, strict=False))
        ]

    def monologue_text(self) -> str:
        """The words the model wrote in its text stream (specials dropped, byte pieces decoded)."""
        return " ".join(w for _, w in monologue_words(self.text_pieces))

    def save(self, folder: Path) -> Path:
        """Write the record to `folder` atomically (a temporary sibling folder, then one rename).

        An existing `folder` is replaced only after the new one is complete.
        """
        folder = Path(folder)
        if len(self.text_ids) != len(self.text_pieces):
            raise ValueError("text_ids and text_pieces must have one entry per frame")
        remove_leftovers(folder)  # of a save that crashed (one writer per run folder)
        with replaced_folder(folder) as partial:
            _write_wav(partial / CONVERSATION_WAV, self.stereo(), self.sample_rate)
            _write_json(
                partial / CHANNELS_JSON,
                {"sample_rate": self.sample_rate, "channels": {"0": "user", "1": "agent"}},
            )
            _write_json(partial / MONOLOGUE_JSON, self.monologue())
            _write_json(partial / EVENTS_JSON, _plain(self.events))
            _write_json(
                partial / TIMINGS_JSON,
                {"frame_seconds": FRAME_SECONDS, "step_ms": list(map(float, self.step_ms))},
            )
            _write_json(partial / META_JSON, _plain(self.meta))
            if self.agent_codes is not None:
                np.save(partial / AGENT_CODES_NPY, np.asarray(self.agent_codes, dtype=np.int32))
        return folder

    @classmethod
    def load(cls, folder: Path) -> SessionRecord:
        """Read a run folder written by `save` (PCM comes back at 16-bit precision)."""
        import soundfile as sf

        folder = Path(folder)
        missing = [n for n in RECORD_FILES if not (folder / n).is_file()]
        if missing:
            raise RecordError(f"{folder}: not a complete run folder (missing {', '.join(missing)})")
        if not _wav_complete(folder / CONVERSATION_WAV):
            raise RecordError(
                f"{folder / CONVERSATION_WAV}: damaged: the file is shorter than its header says"
            )
        try:
            pcm, sr = sf.read(str(folder / CONVERSATION_WAV), dtype="float32", always_2d=True)
            channels = _read_json(folder / CHANNELS_JSON)
            mono = _read_json(folder / MONOLOGUE_JSON)
            timings = _read_json(folder / TIMINGS_JSON)
            events = _read_json(folder / EVENTS_JSON)
            meta = _read_json(folder / META_JSON)
        except (OSError, ValueError, RuntimeError) as exc:
            raise RecordError(f"{folder}: cannot read run folder ({exc})") from None
        try:
            names = {v: int(k) for k, v in channels.get("channels", {}).items()}
            user = pcm[:, names.get("user", 0)].copy()
            agent = pcm[:, names.get("agent", 1)].copy() if pcm.shape[1] > 1 else np.zeros_like(user)
            codes_path = folder / AGENT_CODES_NPY
            codes = np.load(codes_path, allow_pickle=False) if codes_path.is_file() else None
            record = cls(
                user_pcm=user,
                agent_pcm=agent,
                text_ids=[int(m["id"]) for m in mono],
                text_pieces=[str(m["piece"]) for m in mono],
                agent_codes=codes,
                step_ms=[float(x) for x in timings.get("step_ms", [])],
                events=[_event(e) for e in events],
                meta=dict(meta),
                sample_rate=int(channels.get("sample_rate", sr)),
            )
        except (AttributeError, KeyError, TypeError, ValueError, IndexError, OSError) as exc:
            raise RecordError(f"{folder}: damaged run folder ({type(exc).__name__}: {exc})") from None
        frames, hop = len(record.text_ids), round(FRAME_SECONDS * sr)
        if sr != record.sample_rate or (frames and abs(len(user) - frames * hop) >= hop):
            raise RecordError(
                f"{folder / CONVERSATION_WAV}: damaged: {len(user)} samples at {sr} Hz, but the run has "
                f"{frames} frames of {FRAME_SECONDS} s at {record.sample_rate} Hz (truncated or replaced?)"
            )
        return record


def _wav_complete(path: Path) -> bool:
    """False when a RIFF/WAVE file is shorter than its header says (soundfile reads what is there)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
        size = os.path.getsize(path)
    except OSError:
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return True  # not RIFF: soundfile decides
    return int.from_bytes(head[4:8], "little") + 8 <= size


def _event(item: Any) -> dict[str, Any]:
    """One events.json label: a mapping with a `kind` and a finite `start` (and `end`) in seconds."""
    if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
        raise ValueError(f"events.json: {item!r} is not an event (a mapping with kind and start)")
    for key in ("start", "end"):
        value = item.get(key)
        if (key == "start" or value is not None) and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)
        ):
            raise ValueError(f"events.json: event {item.get('kind')!r} has no valid {key!r}")
    return item


def decode_pieces(pieces: list[str]) -> list[str]:
    """Per frame, the text of its piece: specials become "", SentencePiece byte-fallback pieces
    (`<0xE1>`) are joined with the byte pieces that follow them and decoded as UTF-8 on the frame of
    the first byte (a sequence that is not valid UTF-8 decodes with U+FFFD). Same length as `pieces`."""
    out = ["" for _ in pieces]
    i = 0
    while i < len(pieces):
        m = _BYTE_PIECE.match(pieces[i])
        if m is None:
            out[i] = "" if pieces[i] in SPECIAL_PIECES else pieces[i]
            i += 1
            continue
        start, raw = i, bytearray()
        while i < len(pieces) and (m := _BYTE_PIECE.match(pieces[i])) is not None:
            raw.append(int(m.group(1), 16))
            i += 1
        out[start] = raw.decode("utf-8", errors="replace")
    return out


def monologue_words(pieces: list[str], frame_seconds: float = FRAME_SECONDS) -> list[tuple[float, str]]:
    """The text stream as words with the time (s) of the frame where each word starts."""
    words: list[tuple[float, str]] = []
    current, start = "", 0.0
    for i, text in enumerate(decode_pieces(pieces)):
        for part in re.split(r"(\s+)", text):
            if not part:
                continue
            if part.isspace():
                if current:
                    words.append((start, current))
                current = ""
            else:
                if not current:
                    start = round(i * frame_seconds, 4)
                current += part
    if current:
        words.append((start, current))
    return words


def is_complete(folder: Path) -> bool:
    """True when `folder` holds every file `save` writes (a finished run)."""
    return all((Path(folder) / n).is_file() for n in RECORD_FILES)


def _plain(obj: Any) -> Any:
    """numpy scalars/arrays and paths -> JSON-ready Python values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_wav(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    sf.write(str(path), np.clip(pcm, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
