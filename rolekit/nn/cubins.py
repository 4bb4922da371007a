"""The machine code of rolekit's CUDA kernels, compiled once per source and device, kept on disk.

MLX's `mx.fast.cuda_kernel` compiles a custom kernel with NVRTC in every process and never writes
it to MLX's kernel cache; rolekit's temporal kernel alone takes seconds to compile, once per
attended ring length. So rolekit compiles its kernels itself (`nn.nvrtc`), keeps each cubin in
this process and in `folder` (`$ROLEKIT_CACHE/kernels/rolekit`, set by `rolekit.kernelcache`),
and `nn.cuda` launches it (from MLX's own kernel cache, `nn.mlxcache`).

A cubin is named by the SHA-256 of everything that decides it: the full source, the target
architecture, NVRTC's version and options, the CUDA headers (`nvrtc.headers_fingerprint`) and
the linker of sources with parts (`jitlink.tag`; `jitlink.build` compiles every source). A
file holds the cubin followed by the SHA-256 of it, written atomically; a file whose digest does not
match (damaged, truncated, not ours) is removed and the kernel compiled again. A folder that cannot
be written leaves the cache in memory only. Two processes may compile one kernel at once (the last
rename wins, with equal bytes). `stats` counts what this process compiled and read. No mlx here.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path

from rolekit.atomic import replaced_file
from rolekit.nn import jitlink, nvrtc

Compiler = Callable[[str, str, str], bytes]  # (source, name, arch) -> cubin
DIGEST = 32  # bytes of SHA-256 after the cubin in a cache file


@dataclass
class Stats:
    """What this process's cache did: kernels compiled (and their seconds), read from disk, reused."""

    compiled: int = 0
    compile_s: float = 0.0
    read: int = 0
    reused: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "compiled": self.compiled,
            "compile_s": round(self.compile_s, 3),
            "read": self.read,
            "reused": self.reused,
        }


class BinaryCache:
    """cubins by source and architecture: this process's memory, then `folder`, then `compiler`."""

    def __init__(self, folder: Path | None = None, compiler: Compiler | None = None) -> None:
        self.folder = folder
        self.compiler = compiler
        self.stats = Stats()
        self._memory: dict[str, bytes] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._pending: dict[str, Future[tuple[bytes, float]]] = {}  # prefetches under way
        self._guard = threading.Lock()

    def key(self, source: str, arch: str) -> str:
        """The SHA-256 (hex) that names the cubin of `source` for `arch`."""
        if self.compiler is not None:
            compiler = "custom"
        else:
            compiler = "nvrtc-{}.{}-{}".format(*nvrtc.version(), nvrtc.headers_fingerprint())
            if jitlink.PART in source:  # in parts: linked, or compiled whole without a linker
                compiler += "-" + jitlink.tag()
        h = hashlib.sha256()
        for part in (compiler, arch, " ".join(nvrtc.OPTIONS), source):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def path(self, name: str, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{name}-{key[:32]}.cubin"

    def get(self, source: str, name: str, arch: str) -> bytes:
        """The cubin of `source` (kernel `name`, for `arch`): compiled once per process whichever
        threads ask, and not again while the cache folder keeps it. Raises nvrtc.CompileError
        (and FileNotFoundError without NVRTC or CUDA's headers)."""
        key = self.key(source, arch)
        found = self._memory.get(key)
        if found is not None:
            self._count("reused")
            return found
        pending = self._pending.get(key)
        if pending is not None:  # a prefetch is compiling it: wait for that one
            try:
                data, _ = pending.result()
            except Exception:  # failed or cancelled: compiled here, which reports the failure
                pass
            else:
                with self._guard:
                    return self._memory.setdefault(key, data)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one compile per source in this process; other threads wait for it
            found = self._memory.get(key)
            if found is None:
                found = self._read(name, key)
                if found is None:
                    found = self._compile(source, name, arch)
                    self._write(name, key, found)
                self._memory[key] = found
            else:
                self._count("reused")
        return found

    def prefetch(self, source: str, name: str, arch: str, pool: Executor) -> Future | None:
        """Start compiling `source` in a thread of `pool` (with NVRTC: in a process of its own,
        `jitlink.build`) unless this process or the folder already has it; the result goes
        to memory and the folder, and a `get` meanwhile waits for it. Returns the compile's future,
        None when nothing had to be compiled. A failed compile is left for `get` to report."""
        key = self.key(source, arch)
        with self._guard:
            if key in self._memory or key in self._pending:
                return self._pending.get(key)
        data = self._read(name, key)
        if data is not None:
            with self._guard:
                self._memory.setdefault(key, data)
            return None
        if self.compiler is not None:
            job = pool.submit(_timed, self.compiler, source, name, arch)
        else:  # a process of its own (one per part), with this process's library and headers
            job = pool.submit(
                _timed, jitlink.build, source, name, arch, nvrtc.library_path(), nvrtc.include_dirs()
            )
        with self._guard:
            self._pending[key] = job
        job.add_done_callback(lambda done: self._prefetched(key, name, done))
        return job

    def _prefetched(self, key: str, name: str, job: Future[tuple[bytes, float]]) -> None:
        try:
            data, seconds = job.result()
        except BaseException:  # noqa: BLE001 - failed or cancelled: `get` compiles and reports
            with self._guard:
                self._pending.pop(key, None)
            return
        self._write(name, key, data)
        with self._guard:
            self._memory.setdefault(key, data)
            self._pending.pop(key, None)
        self._count("compiled", seconds)

    def _count(self, what: str, seconds: float = 0.0) -> None:
        with self._guard:
            setattr(self.stats, what, getattr(self.stats, what) + 1)
            self.stats.compile_s += seconds

    def _read(self, name: str, key: str) -> bytes | None:
        path = self.path(name, key)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        cubin, digest = data[:-DIGEST], data[-DIGEST:]
        if len(data) <= DIGEST or hashlib.sha256(cubin).digest() != digest:
            try:
                path.unlink(missing_ok=True)  # damaged or not ours: compiled again
            except OSError:
                pass
            return None
        self._count("read")
        return cubin

    def _compile(self, source: str, name: str, arch: str) -> bytes:
        t0 = time.perf_counter()
        if self.compiler is not None:
            data = self.compiler(source, name, arch)
        else:
            data = jitlink.build(source, name, arch, isolated=False)
        self._count("compiled", time.perf_counter() - t0)
        return data

    def _write(self, name: str, key: str, data: bytes) -> None:
        path = self.path(name, key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replaced_file(path) as tmp:
                Path(tmp).write_bytes(data + hashlib.sha256(data).digest())
        except OSError:  # a read-only or full cache: this process keeps its copy in memory
            pass


def _timed(compile_fn: Compiler, *args: object) -> tuple[bytes, float]:
    """(cubin, seconds) of one compile: a prefetch's job."""
    t0 = time.perf_counter()
    data = compile_fn(*args)  # type: ignore[arg-type]
    return data, time.perf_counter() - t0


CACHE = BinaryCache()


def use_folder(folder: str | os.PathLike | None) -> None:
    """Keep compiled kernels in `folder` from now on (None: in memory only)."""
    CACHE.folder = None if folder is None else Path(folder)
