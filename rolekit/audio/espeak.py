"""espeak-ng as a library, from the `espeakng-loader` wheel (libespeak-ng and its data): scripted
users speak without the system espeak-ng program. numpy + ctypes only.

The library keeps state from one utterance to the next (a second call in one process comes out a few
milliseconds longer or shorter), so `speak` runs each utterance in a fresh child process
(`python -m rolekit.audio.espeak`), as the espeak-ng program does: the same text, voice and rate
always give the same samples. It returns 16-bit mono PCM at the library's rate (22050 Hz, like
`espeak-ng -w`), synthesized with the program's flags (UTF-8 text, a pause at the end).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: AUDIO_OUTPUT_SYNCHRONOUS
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE = 1  # espeak_PARAMETER: espeakRATE (words per minute)
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated language)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class EspeakError(RuntimeError):
    """The library refused a voice or failed to speak."""


class EspeakLibrary:
    """One loaded libespeak-ng with its data folder."""

    def __init__(self, library: Path, data: Path) -> None:
        self.library, self.data = Path(library), Path(data)
        self._lib = ctypes.CDLL(str(self.library))
        self._lock = threading.Lock()
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self._lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = self._lib.espeak_Initialize(_OUTPUT_SYNCHRONOUS, 0, str(self.data).encode(), 0)
        if self.sample_rate <= 0:
            raise EspeakError(f"{self.library}: espeak_Initialize failed with data {self.data}")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the library
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: ctypes.c_void_p) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # continue

    def voices(self) -> set[str]:
        """Lower-case names, identifiers (and their last part) and languages of every voice."""
        names: set[str] = set()
        variant = ctypes.create_string_buffer(b"\x00variant\x00")  # priority 0, "variant"
        spec = _Voice(languages=ctypes.cast(variant, ctypes.c_void_p))
        with self._lock:
            for which in (None, spec):  # the voices, then the variants (`en-us+f3`)
                for v in self._list(which):
                    for text in (v.name, v.identifier):
                        if text:
                            t = text.decode("utf-8", "replace").lower()
                            names.update({t, t.split("/")[-1], t.replace(" ", "_")})
                    names.update(_languages(v.languages) - {"variant"})
        return names

    def _set_voice(self, voice: str) -> bool:
        """Select `voice` as the espeak-ng program's `-v` does: a voice name (`en-us`, `en-us+f3`),
        else a language with an optional `+variant` (`en-gb+f3`: the first voice that speaks en-gb,
        with variant f3). Caller holds the lock."""
        if self._lib.espeak_SetVoiceByName(voice.encode("utf-8")) == 0:
            return True
        language, plus, variant = voice.partition("+")
        for v in self._list(None):
            if v.name and language.lower() in _languages(v.languages):
                name = v.name + (plus + variant).encode("utf-8")
                return self._lib.espeak_SetVoiceByName(name) == 0
        return False

    def _list(self, spec: _Voice | None) -> list[_Voice]:
        """espeak_ListVoices: every voice (None) or those matching `spec`. The library rebuilds its
        table on each call: read the result before the next call. Caller holds the lock."""
        table = self._lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        out, i = [], 0
        while table[i]:
            out.append(table[i].contents)
            i += 1
        return out

    def speak_here(self, text: str, voice: str | None, rate: int) -> np.ndarray:
        """`text` spoken by `voice` (None: the default, en) at `rate` words per minute: int16 [N],
        in this process (only the first utterance of a process is reproducible)."""
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            if voice and not self._set_voice(voice):
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self._chunks = []
            err = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            self._lib.espeak_Synchronize()
            if err != 0:
                raise EspeakError(f"espeak_Synth failed (error {err})")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def speak(self, text: str, voice: str | None, rate: int, timeout: float = 120.0) -> np.ndarray:
        """`text` spoken by `voice` at `rate` words per minute, in a fresh child process: int16 [N]."""
        cmd = [sys.executable, "-m", "rolekit.audio.espeak", "--rate", str(int(rate))]
        if voice:
            cmd += ["--voice", voice]
        try:
            proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EspeakError(f"espeak-ng library: {exc}") from None
        if proc.returncode != 0:
            lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise EspeakError(lines[-1] if lines else f"espeak-ng library: exit {proc.returncode}")
        return np.frombuffer(proc.stdout, dtype="<i2").copy()


def _languages(ptr: int | None) -> set[str]:
    out: set[str] = set()
    if not ptr:
        return out
    raw = ctypes.string_at(ptr, 256)
    pos = 0
    while pos < len(raw) and raw[pos] != 0:  # priority byte, then the language
        end = raw.index(b"\0", pos + 1)
        out.add(raw[pos + 1 : end].decode("utf-8", "replace").lower())
        pos = end + 1
    return out


@lru_cache(maxsize=1)
def library() -> EspeakLibrary | None:
    """The espeakng-loader wheel's libespeak-ng, loaded once; None when the wheel is not installed."""
    try:
        import espeakng_loader  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return EspeakLibrary(Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path()))
    except (OSError, RuntimeError):
        return None


def main(argv: list[str] | None = None) -> int:
    """Child process of `EspeakLibrary.speak`: text on stdin, raw int16 little-endian PCM on stdout."""
    ap = argparse.ArgumentParser(prog="python -m rolekit.audio.espeak")
    ap.add_argument("--voice", default=None)
    ap.add_argument("--rate", type=int, default=175)
    args = ap.parse_args(argv)
    lib = library()
    if lib is None:
        print("espeak-ng library: the espeakng-loader wheel is not installed", file=sys.stderr)
        return 1
    try:
        pcm = lib.speak_here(sys.stdin.buffer.read().decode("utf-8"), args.voice, args.rate)
    except EspeakError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sys.stdout.buffer.write(pcm.astype("<i2").tobytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
