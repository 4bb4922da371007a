"""scripts/setup-system.sh and the Makefile, against stub commands (uname, id, dpkg-query, apt-get,
sudo, brew, nvidia-smi) on PATH: what a fresh machine gets, without touching this machine's packages."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup-system.sh"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _machine(tmp_path: Path, system: str = "Linux", uid: int = 0, installed=(), sudo: bool = False) -> dict:
    """Stub commands for a machine; every apt-get / sudo / brew call is appended to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    _stub(bin_dir, "uname", f'echo "{system}"')
    _stub(bin_dir, "id", f'echo "{uid}"')
    if system == "Linux":
        cases = "".join(f'  {p}) echo "install ok installed"; exit 0 ;;\n' for p in installed)
        _stub(bin_dir, "dpkg-query", f'for last; do :; done\ncase "$last" in\n{cases}esac\nexit 1')
        _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> "{log}"')
    if sudo:
        _stub(bin_dir, "sudo", f'echo "sudo $*" >> "{log}"\nif [ "$1" = -n ]; then shift; fi\nexec "$@"')
    if system == "Darwin":
        _stub(bin_dir, "brew", f'echo "brew $*" >> "{log}"\n[ "$1" = list ] && exit 1\nexit 0')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLEKIT_")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return {"env": env, "log": log}


def _run(m: dict, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=m["env"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    calls = m["log"].read_text().splitlines() if m["log"].exists() else []
    return out, calls


def test_root_on_debian_installs_only_what_is_missing_and_prints_it(tmp_path):
    m = _machine(tmp_path, installed=["libportaudio2"])
    out, calls = _run(m)
    assert out.returncode == 0, out.stderr
    assert "missing system packages: libopenblas0-pthread" in out.stdout
    install = "apt-get install -y -qq --no-install-recommends libopenblas0-pthread"
    assert (
        "+ apt-get update -qq" in out.stdout
        and f"+ env DEBIAN_FRONTEND=noninteractive {install}" in out.stdout
    )
    assert calls == ["apt-get update -qq", install]


def test_test_packages_come_with_dash_dash_test(tmp_path):
    m = _machine(tmp_path, installed=["libportaudio2", "libopenblas0-pthread", "alsa-utils"])
    out, calls = _run(m, "--test")
    assert out.returncode == 0, out.stderr
    assert calls[-1] == "apt-get install -y -qq --no-install-recommends libasound2-plugins chromium"


def test_a_user_goes_through_sudo_non_interactively_without_a_terminal(tmp_path):
    m = _machine(tmp_path, uid=1000, sudo=True)
    out, calls = _run(m)
    assert out.returncode == 0, out.stderr
    assert "+ sudo -n apt-get update -qq" in out.stdout
    assert calls[0] == "sudo -n apt-get update -qq" and calls[1] == "apt-get update -qq"
    assert calls[-1] == "apt-get install -y -qq --no-install-recommends libportaudio2 libopenblas0-pthread"


def test_a_user_without_sudo_gets_the_command_to_run_and_exit_1(tmp_path):
    m = _machine(tmp_path, uid=1000)
    out, calls = _run(m)
    assert out.returncode == 1 and calls == []
    assert (
        "run as root: apt-get install -y --no-install-recommends libportaudio2 libopenblas0-pthread"
        in out.stderr
    )


def test_nothing_missing_means_no_apt_get(tmp_path):
    m = _machine(tmp_path, installed=["libportaudio2", "libopenblas0-pthread"])
    out, calls = _run(m)
    assert out.returncode == 0 and calls == []
    assert "system packages present: libportaudio2 libopenblas0-pthread" in out.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path, how):
    m = _machine(tmp_path, installed=["libportaudio2"])
    if how == "env":
        m["env"]["ROLEKIT_SETUP_DRY_RUN"] = "1"
    out, calls = _run(m, *(["--dry-run"] if how == "flag" else []))
    assert out.returncode == 0 and calls == []
    assert "+ env DEBIAN_FRONTEND=noninteractive apt-get install" in out.stdout


def test_macos_uses_brew_for_portaudio(tmp_path):
    m = _machine(tmp_path, system="Darwin")
    out, calls = _run(m)
    assert out.returncode == 0, out.stderr
    assert calls == ["brew list --versions portaudio", "brew install portaudio"]
    assert "+ brew install portaudio" in out.stdout


def test_opt_out_and_bad_options(tmp_path):
    m = _machine(tmp_path)
    m["env"]["ROLEKIT_NO_SYSTEM_PACKAGES"] = "1"
    out, calls = _run(m)
    assert out.returncode == 0 and calls == [] and "skipped" in out.stdout
    out, _ = _run(_machine(tmp_path / "b"), "--bogus")
    assert out.returncode == 2 and "unknown option --bogus" in out.stderr


def _make_n(target: str, env_path: str | None = None) -> list[str]:
    # Under `make test` the outer make's variables would make this one print "Entering directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    if env_path:
        env["PATH"] = env_path
    out = subprocess.run(
        ["make", "-n", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize(
    ("smi", "extras"), [(None, "[cpu,asr]"), ("13.0", "[cuda,asr]"), ("12.4", "[cuda12,asr]")]
)
def test_make_runs_the_set_up_first_and_picks_the_mlx_backend(tmp_path, smi, extras):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "uname", 'echo "Linux"')
    if smi:
        _stub(
            bin_dir,
            "nvidia-smi",
            f'echo "| NVIDIA-SMI 580.1   Driver Version: 580.1   CUDA Version: {smi}  |"',
        )
    else:  # as on a machine without an NVIDIA driver, even where the tests run on a GPU host
        _stub(bin_dir, "nvidia-smi", "exit 9")
    path = f"{bin_dir}:{os.environ['PATH']}"
    demo = _make_n("demo", path)
    assert demo[0].strip() == "scripts/setup-system.sh" and demo[-1] == "rolekit demo"
    assert f'python3 -m pip install -q -e ".{extras}"' in demo
    test = _make_n("test", path)
    assert test[0] == "scripts/setup-system.sh --test"
    assert any('pytest -q -m "not gpu"' in line for line in test)  # gpu tests deselected, never skipped


def test_ci_runs_only_the_readme_command():
    lines = [
        ln.strip()
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[-1] == "exec make test"
    assert not any(re.search(r"\b(apt-get|apt|dpkg|brew|pip)\b", ln) for ln in lines)
    assert "make test" in (ROOT / "README.md").read_text()
