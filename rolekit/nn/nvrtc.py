"""NVRTC, CUDA's runtime compiler, through ctypes: a kernel's full source in, machine code out.

rolekit compiles its own kernels (not MLX's `mx.fast.cuda_kernel`, which compiles them again in
every process) so that the machine code can be kept on disk (`nn.cubins`). The library is the
one MLX's CUDA backend loaded when there is one, else the `nvidia-cuda-nvrtc` wheel's, else the
toolkit's; the CUDA headers are chosen as MLX's JIT chooses them (`include_dirs`).

Thread-safe, but NVRTC serializes part of a compile inside one process (MLX's own JIT included):
kernels compiled at once each go to a process of their own (`compile_in_subprocess`, running this
module: `python -m rolekit.nn.nvrtc NAME ARCH LIBRARY INCLUDES [--rdc] < source > cubin`), with this
process's library and include path. No mlx here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import importlib.util
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

OPTIONS = ("--std=c++17", "--device-as-default-execution-space")  # as MLX's JIT (C++17 its default)


class CompileError(RuntimeError):
    """NVRTC refused a source: the message is its log."""


@lru_cache(maxsize=1)
def library_path() -> str:
    """Where libnvrtc is: the one already in this process (MLX's CUDA backend links it), else the
    `nvidia-cuda-nvrtc` wheel's, else the system's. Raises FileNotFoundError without one."""
    for path in _candidates():
        try:
            ctypes.CDLL(path)
        except OSError:
            continue
        return path
    raise FileNotFoundError(
        "libnvrtc (CUDA's runtime compiler) not found: install rolekit's cuda extra "
        "(or nvidia-cuda-nvrtc), or put the CUDA toolkit's lib64 on LD_LIBRARY_PATH"
    )


@lru_cache(maxsize=4)
def library(path: str | None = None) -> ctypes.CDLL:
    """libnvrtc at `path` (default `library_path()`)."""
    return ctypes.CDLL(path or library_path())


def _candidates() -> list[str]:
    found: list[str] = []
    try:  # what this process already loaded
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                path = line.rsplit(" ", 1)[-1].strip()
                name = os.path.basename(path)
                if name.startswith("libnvrtc.so") and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found + [p for p in installed("nvrtc") if "builtins" not in os.path.basename(p)]


def installed(stem: str) -> list[str]:
    """The CUDA library `lib<stem>.so*` wherever it may be installed, in the order to try: the
    `nvidia-*` wheels' (`site_dirs`), the toolkit's (`cuda_homes`), then the system's."""
    found: list[str] = []
    for root in site_dirs():
        found += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", f"lib{stem}.so*")), reverse=True)
    for home in cuda_homes():
        found += sorted(glob.glob(os.path.join(home, "lib64", f"lib{stem}.so*")), reverse=True)
    named = ctypes.util.find_library(stem)
    if named:
        found.append(named)
    return found


def site_dirs() -> list[str]:
    """Python's package folders where CUDA's wheels may be (MLX's first)."""
    dirs = []
    spec = importlib.util.find_spec("mlx")
    if spec is not None and spec.submodule_search_locations:
        dirs += [str(Path(p).parent) for p in spec.submodule_search_locations]
    dirs += [p for p in sys.path if p.endswith("site-packages") or p.endswith("dist-packages")]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def cuda_homes() -> list[str]:
    """The CUDA toolkit folders that exist: $CUDA_HOME, $CUDA_PATH, /usr/local/cuda."""
    homes = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    return [h for h in dict.fromkeys(homes) if h and os.path.isdir(h)]


@lru_cache(maxsize=1)
def include_dirs() -> tuple[str, ...]:
    """The include path, chosen as MLX's JIT chooses it: MLX's bundled headers (and their `cccl`),
    then the first CUDA runtime header folder that has cuda_bf16.h, of the `nvidia/cu13` (or
    `cuda_runtime`) wheel, `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda` (and its `cccl`); where
    none of these has libcu++ (cuda/std), the first of those folders that does. Raises
    FileNotFoundError without cuda_bf16.h."""
    dirs: list[str] = []
    spec = importlib.util.find_spec("mlx")
    if spec is not None and spec.submodule_search_locations:
        for p in spec.submodule_search_locations:
            dirs += [os.path.join(p, "include"), os.path.join(p, "include", "cccl")]
    runtimes = [
        os.path.join(r, "nvidia", n, "include") for r in site_dirs() for n in ("cu13", "cuda_runtime")
    ]
    runtimes += [os.path.join(h, "include") for h in cuda_homes()]
    runtime = next((r for r in runtimes if os.path.exists(os.path.join(r, "cuda_bf16.h"))), None)
    if runtime is None:
        raise FileNotFoundError(
            f"CUDA's headers (cuda_bf16.h) not found in any of {runtimes} (set CUDA_HOME)"
        )
    dirs += [runtime, os.path.join(runtime, "cccl")]
    dirs = [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]
    if not any(_has_cuda_std(d) for d in dirs):  # libcu++ (cuda/std) from another CUDA install
        dirs += [d for r in runtimes for d in (r, os.path.join(r, "cccl")) if _has_cuda_std(d)][:1]
    return tuple(dirs)


def _has_cuda_std(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, "cuda", "std", "cstdint"))


@lru_cache(maxsize=1)
def headers_fingerprint() -> str:
    """A SHA-256 (hex) of the include path and of the CUDA runtime's cuda_bf16.h and cuda.h:
    kernels built against other headers get other cubins (`nn.cubins`)."""
    h = hashlib.sha256("\0".join(include_dirs()).encode())
    for d in include_dirs():
        for name in ("cuda_bf16.h", "cuda.h"):
            path = os.path.join(d, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


@lru_cache(maxsize=1)
def version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library in use."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(library().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def _check(rc: int, what: str) -> None:
    if rc != 0:
        lib = library()
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise CompileError(f"{what} failed: {lib.nvrtcGetErrorString(rc).decode()} ({rc})")


def compile_cubin(
    source: str,
    name: str,
    arch: str,
    lib_path: str | None = None,
    includes: tuple[str, ...] | None = None,
    rdc: bool = False,
) -> bytes:
    """Machine code (a cubin) of `source` for `arch` (e.g. "sm_90a"), C++17, device code by
    default, with libnvrtc at `lib_path` and the include path `includes` (defaults:
    `library_path()`, `include_dirs()`); `rdc`: relocatable device code, a cubin for a linker
    (`nn.jitlink`). Raises CompileError with NVRTC's log when the source does not compile."""
    lib = library(lib_path)
    prog = ctypes.c_void_p()
    _check(
        lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None),
        "nvrtcCreateProgram",
    )
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in OPTIONS)]
        if rdc:
            opts.append(b"--relocatable-device-code=true")
        opts += [f"--include-path={d}".encode() for d in (include_dirs() if includes is None else includes)]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        if rc != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CompileError(f"NVRTC could not compile {name}:\n{log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        out = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetCUBIN(prog, out), "nvrtcGetCUBIN")
        return out.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_in_subprocess(
    source: str,
    name: str,
    arch: str,
    lib_path: str | None = None,
    includes: tuple[str, ...] | None = None,
    rdc: bool = False,
) -> bytes:
    """`compile_cubin` in a new Python process running this module (defaults as there, resolved
    here so that the worker uses this process's NVRTC and headers). Raises CompileError."""
    lib_path = lib_path or library_path()
    includes = include_dirs() if includes is None else includes
    argv = [name, arch, lib_path, os.pathsep.join(includes), *(["--rdc"] if rdc else [])]
    out = subprocess.run(
        [sys.executable, "-m", "rolekit.nn.nvrtc", *argv],
        input=source.encode(),
        capture_output=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout:
        raise CompileError(out.stderr.decode(errors="replace")[-8000:] or f"the compile of {name} failed")
    return out.stdout


def _main(argv: list[str]) -> int:
    name, arch, lib_path, includes, *flags = argv
    try:
        cubin = compile_cubin(
            sys.stdin.read(),
            name,
            arch,
            lib_path,
            tuple(filter(None, includes.split(os.pathsep))),
            rdc="--rdc" in flags,
        )
    except CompileError as exc:
        sys.stderr.write(str(exc))
        return 3
    sys.stdout.buffer.write(cubin)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
