"""A kernel source made of parts, compiled apart and linked: nvJitLink (CUDA's device linker)
through ctypes, and `build`, the compile of any rolekit translation unit.

A translation unit may be cut into parts by `PART` lines: the text before the first one is
common to all (headers), each later segment is one part (device functions; the kernel's
`__global__` function and its declarations of the others in the last). NVRTC's time grows faster
than the code it compiles, and parts compile at once, one process each: a long kernel (Mimi's
step) then costs about its largest part, plus a link of well under a second. The text with its
`PART` lines is also one valid translation unit (they are comments), compiled whole where no
nvJitLink is found or linking fails (a notice says so). No mlx here.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from rolekit.nn import nvrtc
from rolekit.notices import notice

PART = "\n// ---- rolekit: a part compiled apart ----\n"
INPUT_CUBIN = 1  # nvJitLinkInputType: a relocatable cubin (NVRTC with -rdc)
# the first ABI of each major release: every later minor still exports it (a header maps the plain
# names to its own minor's, e.g. `__nvJitLinkCreate_13_5`)
ABIS = ("_13_0", "_12_0")


class LinkError(RuntimeError):
    """nvJitLink refused the parts: the message is its log."""


@lru_cache(maxsize=1)
def library_path() -> str | None:
    """libnvJitLink: the `nvidia-nvjitlink` wheel's (beside NVRTC's), else the toolkit's, else
    the system's, the first of NVRTC's major version (it links NVRTC's relocatable cubins; a
    version without `nvJitLinkVersion`, before 12.3, is not used); None without one (sources with
    parts then compile whole)."""
    try:
        major = nvrtc.version()[0]
    except (OSError, RuntimeError):  # no NVRTC: nothing to link
        return None
    for path in dict.fromkeys(nvrtc.installed("nvJitLink")):
        v = _version(path)
        if v is not None and v[0] == major:
            return path
    return None


def _version(path: str) -> tuple[int, int] | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    if not hasattr(lib, "nvJitLinkVersion") or not any(hasattr(lib, f"__nvJitLinkCreate{a}") for a in ABIS):
        return None
    major, minor = ctypes.c_uint(), ctypes.c_uint()
    if lib.nvJitLinkVersion(ctypes.byref(major), ctypes.byref(minor)):
        return None
    return major.value, minor.value


@lru_cache(maxsize=1)
def version() -> tuple[int, int] | None:
    """(major, minor) of the nvJitLink in use (`library_path`), None without one."""
    path = library_path()
    return None if path is None else _version(path)


def tag() -> str:
    """What decides a linked cubin besides the sources ("jitlink-13.5", or "whole" without one):
    part of the cubin cache's key (`nn.cubins`)."""
    v = version()
    return "whole" if v is None else "jitlink-{}.{}".format(*v)


def link(objects: Sequence[bytes], arch: str) -> bytes:
    """One cubin for `arch` from relocatable cubins (`nvrtc.compile_cubin(..., rdc=True)`).
    Raises LinkError with nvJitLink's log, or when there is no nvJitLink."""
    path = library_path()
    if path is None:
        raise LinkError("nvJitLink not found")
    lib = ctypes.CDLL(path)
    abi = next(a for a in ABIS if hasattr(lib, f"__nvJitLinkCreate{a}"))

    def fn(name: str):  # noqa: ANN202 - a ctypes function
        return getattr(lib, f"__nvJitLink{name}{abi}")

    handle = ctypes.c_void_p()
    opts = [f"-arch={arch}".encode()]
    if fn("Create")(ctypes.byref(handle), len(opts), (ctypes.c_char_p * len(opts))(*opts)):
        raise LinkError(f"nvJitLinkCreate failed for {arch}")
    try:
        for i, data in enumerate(objects):
            rc = fn("AddData")(handle, INPUT_CUBIN, data, ctypes.c_size_t(len(data)), f"part{i}".encode())
            if rc:
                raise LinkError(f"nvJitLinkAddData failed on part {i} ({rc}): {_log(fn, handle)}")
        rc = fn("Complete")(handle)
        if rc:
            raise LinkError(f"nvJitLink could not link ({rc}): {_log(fn, handle)}")
        size = ctypes.c_size_t()
        if fn("GetLinkedCubinSize")(handle, ctypes.byref(size)) or not size.value:
            raise LinkError("nvJitLinkGetLinkedCubinSize failed")
        out = ctypes.create_string_buffer(size.value)
        if fn("GetLinkedCubin")(handle, out):
            raise LinkError("nvJitLinkGetLinkedCubin failed")
        return out.raw
    finally:
        fn("Destroy")(ctypes.byref(handle))


def _log(fn, handle: ctypes.c_void_p) -> str:  # noqa: ANN001
    size = ctypes.c_size_t()
    fn("GetErrorLogSize")(handle, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value + 1)
    fn("GetErrorLog")(handle, buf)
    return buf.value.decode(errors="replace").strip()


def units(source: str) -> list[str]:
    """The translation units of a source with parts (the common text + each part), [] without."""
    segments = source.split(PART)
    if len(segments) < 3:
        return []
    return [segments[0] + seg for seg in segments[1:]]


def build(
    source: str,
    name: str,
    arch: str,
    lib_path: str | None = None,
    includes: tuple[str, ...] | None = None,
    isolated: bool = True,
) -> bytes:
    """The cubin of one rolekit translation unit for `arch`. A source with parts (`units`):
    each part compiled at once in a process of its own (relocatable), then linked (`link`);
    otherwise, or where the link fails, the whole source at once, in a process of its own when
    `isolated` (NVRTC serializes part of a compile inside a process), else in this one. NVRTC's
    library and include path as in `nvrtc.compile_cubin`. Raises nvrtc.CompileError (a part that
    does not compile: the whole would not either)."""
    lib_path = lib_path or nvrtc.library_path()
    includes = nvrtc.include_dirs() if includes is None else includes
    parts = units(source)
    if parts and library_path() is not None:
        with ThreadPoolExecutor(min(len(parts), os.cpu_count() or 1)) as pool:
            jobs = [
                pool.submit(nvrtc.compile_in_subprocess, u, f"{name}_part{i}", arch, lib_path, includes, True)
                for i, u in enumerate(parts)
            ]
            try:
                objects = [job.result() for job in jobs]  # a part that does not compile raises here
                return link(objects, arch)
            except (LinkError, OSError) as exc:  # the link (or a worker process) failed
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                notice(
                    "kernel-link", f"{name} compiles as one piece (slower): its parts did not link: {first}"
                )
    whole = nvrtc.compile_in_subprocess if isolated else nvrtc.compile_cubin
    return whole(source, name, arch, lib_path, includes)
