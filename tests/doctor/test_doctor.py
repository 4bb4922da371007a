"""`rolekit doctor`: the reporting logic of every check with the hardware probes replaced (CUDA
compile, MLX backend, NVIDIA driver, GEMM speed, network), and the real command on this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rolekit.doctor import checks as dc


def test_cuda_kernel_check_reports_compile_success_failure_and_absence():
    assert dc.check_cuda("cpu").status == "skip"
    ok = dc.check_cuda("cuda", compile_probe=lambda: None, linker=(13, 5))
    assert ok.status == "ok" and "compiled and ran" in ok.detail and "nvJitLink 13.5" in ok.detail
    unlinked = dc.check_cuda("cuda", compile_probe=lambda: None, linker=())
    assert (
        unlinked.status == "warn" and "nvidia-nvjitlink" in unlinked.fix and unlinked.data["linker"] is None
    )

    def broken():
        raise RuntimeError("nvrtcCompileProgram failed: cannot open source file cuda_bf16.h\nmore")

    bad = dc.check_cuda("cuda", compile_probe=broken)
    assert bad.status == "fail" and "cannot open source file cuda_bf16.h" in bad.detail
    assert "CUDA_HOME" in bad.fix and "NVRTC" in bad.fix
    assert dc.needed_failures([bad], "run") == [bad] and dc.needed_failures([bad], "transcribe") == []


def test_mlx_check_names_the_backend_and_the_cuda_extra_when_a_driver_is_idle():
    cpu = {"version": "0.32.4", "backend": "cpu", "device": "Device(cpu, 0)"}
    assert dc.check_mlx(lambda: cpu).status == "ok"
    idle = dc.check_mlx(lambda: cpu, driver="13.0")
    assert idle.status == "warn" and idle.fix == 'pip install "rolekit[cuda]"' and "CUDA 13.0" in idle.detail
    assert dc.check_mlx(lambda: cpu, driver="12.4").fix == 'pip install "rolekit[cuda12]"'
    cuda = dc.check_mlx(lambda: {**cpu, "backend": "cuda", "device": "Device(gpu, 0)"}, driver="13.0")
    assert cuda.status == "ok" and "cuda backend" in cuda.detail

    def missing():
        raise ImportError("No module named 'mlx'")

    gone = dc.check_mlx(missing)
    assert (
        gone.status == "fail"
        and gone.fix.startswith("pip install")
        and set(dc.COMMANDS) <= set(gone.needed_by)
    )


def test_openblas_check_reports_the_measured_speed_up_or_the_install(monkeypatch):
    monkeypatch.setattr(dc, "_linux", lambda: True)
    monkeypatch.delenv("ROLEKIT_NO_OPENBLAS", raising=False)
    ok = dc.check_openblas("cpu", "/usr/lib/libopenblas.so.0", gflops=lambda fast: 20.0 if fast else 1.25)
    assert ok.status == "ok" and ok.data["speedup"] == 16.0 and "(16.0x)" in ok.detail
    monkeypatch.setattr("rolekit.codec.blas.openblas_path", lambda: None)
    none = dc.check_openblas("cpu", None, gflops=lambda fast: pytest.fail("no probe without OpenBLAS"))
    assert none.status == "warn" and none.fix == "sudo apt-get install libopenblas0-pthread"
    assert dc.check_openblas("cuda", None).status == "skip"
    monkeypatch.setenv("ROLEKIT_NO_OPENBLAS", "1")
    assert dc.check_openblas("cpu", "/x").status == "warn"


def test_hub_check_depends_on_the_model_the_next_command_uses(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    off = dc.check_hub("nvidia/personaplex-7b-v1", reachable=lambda: pytest.fail("offline: no probe"))
    assert off.status == "fail" and off.fix == "unset HF_HUB_OFFLINE" and "offline" in off.detail
    assert dc.check_hub("tiny").status == "ok"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    no_token = dc.check_hub("nvidia/personaplex-7b-v1", reachable=lambda: True)
    assert no_token.status == "fail" and "HF_TOKEN" in no_token.fix and "token not set" in no_token.detail
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert dc.check_hub("nvidia/personaplex-7b-v1", reachable=lambda: True).status == "ok"
    assert "hf_test" not in json.dumps(dc.check_hub("tiny").to_dict())  # a token is never printed


def test_tts_check_without_program_or_library(monkeypatch):
    from rolekit.audio import tts

    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    monkeypatch.setattr(tts, "_espeak_library", lambda: None)
    monkeypatch.setattr(tts.platform, "system", lambda: "Linux")
    c = dc.check_tts()
    assert c.status == "fail" and "espeakng-loader" in c.fix and "demo" in c.needed_by


def test_whisper_check_names_the_slow_path(monkeypatch):
    from rolekit.transcribe import ctranslate

    assert dc.check_whisper(accelerated=False).data["backend"] == "ct2"
    monkeypatch.setattr(ctranslate, "available", lambda: False)
    slow = dc.check_whisper(accelerated=False)
    assert slow.status == "warn" and slow.fix == "pip install faster-whisper"
    assert dc.check_whisper(accelerated=True).status == "ok"


def _doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rolekit", "doctor", *args], capture_output=True, text=True, timeout=300
    )


def test_doctor_json_on_this_machine_and_its_exit_code():
    out = _doctor("--json", "--for", "demo", "--quick")
    doc = json.loads(out.stdout)
    names = [c["name"] for c in doc["checks"]]
    assert names == [
        "mlx",
        "openblas",
        "tts",
        "portaudio",
        "devices",
        "whisper",
        "caches",
        "cuda-kernels",
        "hub",
    ]
    failed = [c["name"] for c in doc["checks"] if c["status"] == "fail" and "demo" in c["needed_by"]]
    assert out.returncode == (1 if failed else 0) and doc["ok"] == (not failed), out.stderr
    live = _doctor("--json", "--for", "live", "--quick")
    needed = [
        c for c in json.loads(live.stdout)["checks"] if c["status"] == "fail" and "live" in c["needed_by"]
    ]
    assert live.returncode == (1 if needed else 0)
    assert all(c["fix"] for c in needed)  # every failure comes with its fix


def test_doctor_rejects_an_unknown_command():
    out = _doctor("--for", "deploy")
    assert (
        out.returncode == 2
        and "--for: unknown command 'deploy'" in out.stderr
        and "Traceback" not in out.stderr
    )
