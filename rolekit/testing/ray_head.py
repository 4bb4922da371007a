"""A private Ray head on 127.0.0.1 for tests and benchmarks: `ray start --head --block` with free
ports and its own temp folder, so two of them (or a user's cluster) never collide; leaving the
context stops it and every process it started (SIGTERM to the blocking `ray start`).

    with local_ray_head(num_cpus=2) as head:
        ...  # rolekit test ... --cluster head.address   (or head.client: ray://127.0.0.1:PORT)
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RayHead:
    address: str  # HOST:PORT of the head's GCS (what `--cluster` takes)
    client: str  # ray://HOST:PORT of its Ray Client server
    pid: int  # the blocking `ray start` process
    temp_dir: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextmanager
def local_ray_head(
    num_cpus: int = 2, object_store_mb: int = 200, env: dict[str, str] | None = None, timeout_s: float = 120.0
) -> Iterator[RayHead]:
    """Start a head (no dashboard, loopback, token auth) and stop it on exit, also on failure.

    `env` is added to this process's environment for the head and the workers it starts (e.g.
    ROLEKIT_CACHE, PYTHONPATH). RAY_AUTH_MODE defaults to `token` (Ray's own default for new
    clusters); drivers read the token from ~/.ray/auth_token or RAY_AUTH_TOKEN. Where neither exists
    (a fresh machine), a random token is made for this head and RAY_AUTH_TOKEN is set in this
    process while the context lasts, so its drivers connect; it is unset again on exit.
    """
    temp = tempfile.mkdtemp(prefix="rkray-", dir="/tmp")  # short: Ray's unix socket paths must fit
    gcs, client = free_port(), free_port()
    ports = {
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        f"--ray-client-server-port={client}",
        f"--num-cpus={num_cpus}",
        f"--object-store-memory={object_store_mb * 1024 * 1024}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        *(f"{k}={v}" for k, v in ports.items()),
    ]
    own_token = "RAY_AUTH_TOKEN" not in os.environ and not (Path.home() / ".ray" / "auth_token").is_file()
    if own_token:
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    full_env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"), **(env or {})}
    log = open(os.path.join(temp, "ray-start.log"), "wb")
    proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        raylet = ports["--node-manager-port"]  # the node itself: drivers and workers attach to it
        while not all(_listening(p) for p in (gcs, client, raylet)):
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}:\n{_tail(log.name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not listen within {timeout_s:g} s:\n{_tail(log.name)}")
            time.sleep(0.2)
        yield RayHead(f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", proc.pid, temp)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `ray start --block` then stops what it started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        if own_token:
            os.environ.pop("RAY_AUTH_TOKEN", None)


def _tail(path: str, lines: int = 20) -> str:
    """The last lines of `ray start`'s log (the folder is removed on exit, so errors quote it)."""
    with open(path, "rb") as f:
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
