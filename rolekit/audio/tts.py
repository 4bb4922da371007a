"""Text to speech for scripted users: espeak-ng (Linux) or `say` (macOS), cached, resampled to 24 kHz.

Rendered audio is cached under `$ROLEKIT_CACHE/tts` (default `~/.cache/rolekit/tts`), keyed by a hash of
(backend, voice, rate, text), so a suite speaks each line once.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rolekit.audio.wav import read_audio
from rolekit.errors import DeviceError
from rolekit.frames import SAMPLE_RATE
from rolekit.hub import rolekit_cache

BACKENDS = ("espeak-ng", "say")
_DEFAULT_VOICE = {"espeak-ng": "en-us", "say": None}
_CACHE_VERSION = "v1"


class TtsError(DeviceError):
    """No usable text-to-speech backend, or the backend failed."""


@dataclass(frozen=True)
class TtsRequest:
    text: str
    backend: str = "auto"  # auto | espeak-ng | say
    voice: str | None = None
    rate: int = 170  # words per minute

    def resolved(self) -> TtsRequest:
        backend = pick_backend(self.backend)
        voice = self.voice if self.voice is not None else _DEFAULT_VOICE[backend]
        return TtsRequest(self.text, backend, voice, self.rate)

    def cache_key(self) -> str:
        """Hash of (backend, voice, rate, text); call on a resolved request."""
        blob = "\x1f".join([_CACHE_VERSION, self.backend, self.voice or "", str(self.rate), self.text])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def cache_dir() -> Path:
    """Where rendered speech is kept: $ROLEKIT_CACHE/tts or ~/.cache/rolekit/tts."""
    return rolekit_cache() / "tts"


def pick_backend(backend: str = "auto") -> str:
    """The backend to use; `auto` = `say` on macOS, espeak-ng elsewhere. TtsError with an install hint if absent."""
    if backend == "auto":
        backend = "say" if platform.system() == "Darwin" and shutil.which("say") else "espeak-ng"
    if backend not in BACKENDS:
        raise TtsError(f"unknown TTS backend {backend!r} (use one of: auto, {', '.join(BACKENDS)})")
    if shutil.which(backend) is None and not (backend == "espeak-ng" and _espeak_library() is not None):
        hint = {
            "espeak-ng": "install it: `pip install espeakng-loader` (the library and its data, no system "
            "package), or `sudo apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng`",
            "say": "`say` ships with macOS only; on Linux use `backend: espeak-ng` (apt-get install espeak-ng)",
        }[backend]
        raise TtsError(f"TTS backend {backend!r} not found: {hint}")
    return backend


def synthesize(request: TtsRequest, *, use_cache: bool = True) -> np.ndarray:
    """Speak `request.text`: [N] float32 at 24 kHz (cached on disk by hash)."""
    req = request.resolved()
    path = cache_dir() / f"{req.cache_key()}.wav"
    if use_cache and path.is_file():
        return read_audio(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=".tts.", suffix=".wav" if req.backend == "espeak-ng" else ".aiff", dir=path.parent
    )
    os.close(fd)
    try:
        _render(req, Path(tmp))
        _store(path, read_audio(tmp))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return read_audio(path)  # the cached 16-bit copy, so first and later calls agree exactly


def espeak_voices() -> set[str]:
    """Names espeak-ng accepts for -v: language codes, voice names, file names (lower case), variants."""
    names: set[str] = set()
    if shutil.which("espeak-ng") is None:
        lib = _espeak_library()
        return lib.voices() if lib is not None else names
    for arg in ("--voices", "--voices=variant"):
        try:
            text = subprocess.run(["espeak-ng", arg], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return names
        for line in text.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                lang, name, file = cols[1], cols[3], cols[4]
                names.update(x.lower() for x in (lang, name, file, file.split("/")[-1]) if x != "variant")
    return names


def _check_voice(req: TtsRequest) -> None:
    """espeak-ng silently falls back to a default for an unknown voice: refuse it instead."""
    if req.backend != "espeak-ng" or not req.voice:
        return
    known = espeak_voices()
    parts = [p.lower() for p in req.voice.split("+")]
    if known and any(p not in known for p in parts):
        raise TtsError(
            f"espeak-ng has no voice {req.voice!r} (see `espeak-ng --voices`; variants: `en-us+f3`)"
        )


def _espeak_library() -> Any:
    """The espeakng-loader wheel's libespeak-ng (rolekit.audio.espeak), None when not installed."""
    from rolekit.audio.espeak import library

    return library()


def _render(req: TtsRequest, out: Path) -> None:
    _check_voice(req)
    if req.backend == "espeak-ng" and shutil.which("espeak-ng") is None:
        from rolekit.audio.espeak import EspeakError
        from rolekit.audio.wav import write_wav

        try:
            pcm = _espeak_library().speak(req.text, req.voice, req.rate)
        except EspeakError as exc:
            raise TtsError(f"espeak-ng failed (voice {req.voice!r}): {exc}") from None
        write_wav(out, pcm.astype(np.float32) / 32768.0, _espeak_library().sample_rate)
        return
    if req.backend == "espeak-ng":
        cmd = ["espeak-ng", "-s", str(req.rate), "-w", str(out)]
        if req.voice:
            cmd += ["-v", req.voice]
    else:
        cmd = ["say", "-r", str(req.rate), "-o", str(out), "--data-format=LEI16@24000"]
        if req.voice:
            cmd += ["-v", req.voice]
    cmd += ["--", req.text]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TtsError(f"{req.backend} failed: {exc}") from None
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise TtsError(
            f"{req.backend} failed (voice {req.voice!r}): {detail[-1] if detail else 'no audio written'}"
        )


def _store(path: Path, pcm: np.ndarray) -> None:
    from rolekit.audio.wav import write_wav

    write_wav(path, pcm, SAMPLE_RATE)
