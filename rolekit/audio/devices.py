"""Audio devices through sounddevice/PortAudio: lazy import, listing, selection, sample rate choice.

sounddevice is optional hardware support: it is imported only here, on first use, and a missing
PortAudio library becomes a DeviceError with an install hint instead of an OSError at import time.
numpy only, never mlx.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from rolekit.errors import DeviceError
from rolekit.frames import SAMPLE_RATE

Kind = Literal["input", "output"]

PORTAUDIO_HINT = (
    "install PortAudio: `sudo apt-get install libportaudio2` (Debian/Ubuntu), "
    "`sudo dnf install portaudio` (Fedora) or `brew install portaudio` (macOS)"
)
# Rates tried, in order, when a device refuses 24 kHz; the stream then resamples on the main thread.
FALLBACK_RATES = (48_000, 44_100, 32_000, 16_000, 96_000)


def load_sounddevice() -> ModuleType:
    """Import sounddevice, turning 'no PortAudio' and 'not installed' into a DeviceError with a hint."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as exc:  # sounddevice raises OSError at import when libportaudio is missing
        raise DeviceError(f"the PortAudio library was not found ({exc}); {PORTAUDIO_HINT}") from None
    except ImportError:
        raise DeviceError("the sounddevice package is not installed: `pip install sounddevice`") from None


@dataclass(frozen=True)
class AudioDevice:
    """One PortAudio device as PortAudio reports it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False

    def can(self, kind: Kind) -> bool:
        return (self.max_input_channels if kind == "input" else self.max_output_channels) > 0

    @property
    def label(self) -> str:
        return f"{self.index} {self.name!r} ({self.hostapi})"


def list_devices(sd: ModuleType | None = None) -> list[AudioDevice]:
    """Every device PortAudio sees, with the default input/output marked ([] when there is none)."""
    sd = sd or load_sounddevice()
    try:
        raw = list(sd.query_devices())
        hostapis = [h["name"] for h in sd.query_hostapis()]
    except Exception as exc:  # PortAudioError or a broken host API
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    default_in, default_out = _defaults(sd)
    devices = []
    for i, d in enumerate(raw):
        index = int(d.get("index", i))
        api = int(d.get("hostapi", 0))
        devices.append(
            AudioDevice(
                index=index,
                name=str(d["name"]),
                hostapi=hostapis[api] if 0 <= api < len(hostapis) else "?",
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                default_input=index == default_in,
                default_output=index == default_out,
            )
        )
    return devices


def _defaults(sd: ModuleType) -> tuple[int, int]:
    dev: Any = sd.default.device
    try:
        return int(dev[0]), int(dev[1])
    except (TypeError, ValueError, IndexError):
        return -1, -1


def no_devices_message() -> str:
    """PortAudio works but lists nothing: say what to check."""
    check = (
        " (check `arecord -l` / `aplay -l`, or that PulseAudio/PipeWire is running)"
        if sys.platform.startswith("linux")
        else ""
    )
    return f"no audio devices found: PortAudio sees no microphone or speaker; connect one{check}"


def resolve_device(spec: str | int | None, kind: Kind, devices: list[AudioDevice]) -> AudioDevice:
    """Pick a device by index, exact name or unique case-insensitive name fragment (None: the default)."""
    flag = f"--{kind}-device"
    usable = [d for d in devices if d.can(kind)]
    if not devices:
        raise DeviceError(no_devices_message())
    if not usable:
        raise DeviceError(f"no {kind} device found (see `rolekit devices`)")
    if spec is None or str(spec).strip() == "":
        for d in usable:
            if d.default_input if kind == "input" else d.default_output:
                return d
        if len(usable) == 1:
            return usable[0]
        raise DeviceError(f"no default {kind} device; choose one with {flag} (see `rolekit devices`)")
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        for d in devices:
            if d.index == int(text):
                if not d.can(kind):
                    raise DeviceError(f"{flag} {text}: {d.label} has no {kind} channels")
                return d
        raise DeviceError(f"{flag} {text}: no device with that index (see `rolekit devices`)")
    exact = [d for d in usable if d.name == text]
    if exact:
        return exact[0]
    matches = [d for d in usable if text.lower() in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"{flag} {text!r}: no {kind} device matches (see `rolekit devices`)")
    names = ", ".join(d.label for d in matches)
    raise DeviceError(f"{flag} {text!r} is ambiguous: {names}; give the index")


def choose_rate(
    sd: ModuleType, input_device: AudioDevice, output_device: AudioDevice, wanted: int = SAMPLE_RATE
) -> int:
    """The stream rate: 24 kHz when both devices take it, else the first rate both accept."""
    candidates = [wanted, int(output_device.default_samplerate), int(input_device.default_samplerate)]
    candidates += [r for r in FALLBACK_RATES]
    seen: list[int] = []
    for rate in candidates:
        if rate <= 0 or rate in seen:
            continue
        seen.append(rate)
        try:
            sd.check_input_settings(device=input_device.index, samplerate=rate, channels=1, dtype="float32")
            sd.check_output_settings(device=output_device.index, samplerate=rate, channels=1, dtype="float32")
        except Exception:  # PortAudioError/ValueError: this rate is refused
            continue
        return rate
    tried = ", ".join(str(r) for r in seen)
    raise DeviceError(
        f"{input_device.label} / {output_device.label}: no common mono float32 sample rate (tried {tried} Hz)"
    )
