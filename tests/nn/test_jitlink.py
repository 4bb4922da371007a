"""A kernel in parts (`nn.cuda.CudaKernel.parts`): its translation unit, compiled part by part and
linked (`nn.jitlink.build`), or whole where linking is not possible. Here with stand-ins for NVRTC
and nvJitLink; `-m nvrtc` compiles and links real ones."""

from __future__ import annotations

import re

import mlx.core as mx
import pytest

from rolekit import notices
from rolekit.nn import cuda, jitlink, nvrtc

BODY = "rolekit_part_0(ROLEKIT_KERNEL_ARGS, 2.f);\nrolekit_part_1(ROLEKIT_KERNEL_ARGS, 3.f);"
PARTS = ("y[threadIdx.x] = a * x[threadIdx.x];", "y[threadIdx.x] += a;")


def two_parts() -> cuda.CudaKernel:
    return cuda.build_kernel(
        "parts", ["x", "unused"], ["y"], BODY, threads=64, parts=PARTS, part_params=["float a"]
    )


def test_a_kernel_without_parts_is_one_unit_and_its_text_is_unchanged():
    plain = cuda.build_kernel("plain", ["x"], ["y"], "y[0] = x[0];")
    source = plain.translation_unit([mx.float32], [mx.float32])
    assert jitlink.units(source) == []
    assert jitlink.PART not in source and "rolekit_args" not in source
    assert source.endswith(
        f'extern "C" __global__ void {plain.name}(\n    const float* x,\n    float* y) {{\ny[0] = x[0];\n}}\n'
    )


def test_a_kernel_in_parts_gives_each_part_its_own_unit_and_the_kernel_the_last():
    kernel = two_parts()
    source = kernel.translation_unit([mx.float32, mx.float32], [mx.float32])
    units = jitlink.units(source)
    assert len(units) == 3
    common = source.split(jitlink.PART)[0]
    assert all(u.startswith(common) for u in units)
    for i, (unit, body) in enumerate(zip(units, PARTS, strict=False)):
        own = unit[len(common) :]
        assert own.count("__device__ __noinline__") == 1 and f"void rolekit_part_{i}(" in own and body in own
        # a part reads the arguments it names from the kernel's table, in the kernel's order
        assert "const float* x = static_cast<const float*>(rolekit_args[0]);" in own
        assert "float* y = static_cast<float*>(rolekit_args[2]);" in own
        assert "unused" not in own and "float a" in own
    kernel_unit = units[2][len(common) :]
    assert "__noinline__" not in kernel_unit and kernel_unit.count("__device__ void rolekit_part_") == 2
    table = re.findall(r"rolekit_args\[(\d)\] = \(void\*\)(\w+);", kernel_unit)
    assert table == [("0", "x"), ("1", "unused"), ("2", "y")]
    assert kernel_unit.index("__syncthreads();") < kernel_unit.index("rolekit_part_0(ROLEKIT_KERNEL_ARGS")
    assert f"__launch_bounds__(64) {kernel.name}(" in kernel_unit
    # the parts and their parameters name the kernel
    other = cuda.build_kernel(
        "parts",
        ["x", "unused"],
        ["y"],
        BODY,
        threads=64,
        parts=(PARTS[0], "y[0] = a;"),
        part_params=["float a"],
    )
    assert other.name != kernel.name


class Toolchain:
    """Stand-ins for NVRTC (whole and relocatable compiles) and nvJitLink, recording their calls."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, linker: bool = True, link_fails: bool = False
    ) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.link_fails = link_fails
        monkeypatch.setattr(jitlink, "library_path", lambda: "libnvJitLink.so" if linker else None)
        monkeypatch.setattr(nvrtc, "library_path", lambda: "libnvrtc.so")
        monkeypatch.setattr(nvrtc, "include_dirs", lambda: ("/inc",))
        monkeypatch.setattr(nvrtc, "compile_in_subprocess", self.subprocess)
        monkeypatch.setattr(nvrtc, "compile_cubin", self.here)
        monkeypatch.setattr(jitlink, "link", self.link)

    def subprocess(self, source: str, name: str, arch: str, lib: str, inc: tuple, rdc: bool = False) -> bytes:
        self.calls.append(("process", name, "rdc" if rdc else "whole", source))
        return f"obj:{name}".encode()

    def here(self, source: str, name: str, arch: str, lib: str, inc: tuple, rdc: bool = False) -> bytes:
        self.calls.append(("here", name, "rdc" if rdc else "whole", source))
        return b"whole-cubin"

    def link(self, objects: list[bytes], arch: str) -> bytes:
        self.calls.append(("link", arch, *(o.decode() for o in objects)))
        if self.link_fails:
            raise jitlink.LinkError("nvJitLink could not link (7): undefined rolekit_part_1")
        return b"linked-cubin"


def test_parts_compile_apart_relocatable_and_are_linked_in_order(monkeypatch):
    tools = Toolchain(monkeypatch)
    source = two_parts().translation_unit([mx.float32, mx.float32], [mx.float32])
    assert jitlink.build(source, "k", "sm_90a", isolated=False) == b"linked-cubin"
    compiles = sorted(c for c in tools.calls if c[0] == "process")
    assert [(c[1], c[2], c[3]) for c in compiles] == [
        (f"k_part{i}", "rdc", u) for i, u in enumerate(jitlink.units(source))
    ]
    assert tools.calls[-1] == ("link", "sm_90a", "obj:k_part0", "obj:k_part1", "obj:k_part2")


@pytest.mark.parametrize("isolated", [True, False])
def test_a_source_without_parts_compiles_whole_where_asked(monkeypatch, isolated):
    tools = Toolchain(monkeypatch)
    plain = cuda.build_kernel("plain", ["x"], ["y"], "y[0] = x[0];")
    source = plain.translation_unit([mx.float32], [mx.float32])
    jitlink.build(source, "k", "sm_90a", isolated=isolated)
    assert tools.calls == [("process" if isolated else "here", "k", "whole", source)]


def test_without_a_linker_the_parts_compile_as_one_unit(monkeypatch):
    tools = Toolchain(monkeypatch, linker=False)
    source = two_parts().translation_unit([mx.float32, mx.float32], [mx.float32])
    assert jitlink.build(source, "k", "sm_90a", isolated=False) == b"whole-cubin"
    assert tools.calls == [("here", "k", "whole", source)]


@pytest.mark.parametrize("failure", ["link", "process"])
def test_a_failed_link_says_so_once_and_compiles_the_kernel_whole(monkeypatch, failure):
    notices.reset()
    said: list[str] = []
    notices.set_sink(said.append)
    try:
        tools = Toolchain(monkeypatch, link_fails=failure == "link")
        if failure == "process":  # e.g. no process could be started for a part
            spawn = tools.subprocess

            def subprocess(source, name, *a, **k):  # noqa: ANN001, ANN202
                if name.endswith("_part0"):
                    raise OSError("[Errno 12] Cannot allocate memory")
                return spawn(source, name, *a, **k)

            monkeypatch.setattr(nvrtc, "compile_in_subprocess", subprocess)
        source = two_parts().translation_unit([mx.float32, mx.float32], [mx.float32])
        assert jitlink.build(source, "k", "sm_90a", isolated=True) == b"obj:k"
    finally:
        notices.set_sink(None)
    assert tools.calls[-1] == ("process", "k", "whole", source)
    why = "undefined rolekit_part_1" if failure == "link" else "Cannot allocate memory"
    assert len(said) == 1 and "k compiles as one piece" in said[0] and why in said[0]


def test_a_part_that_does_not_compile_is_the_error_and_nothing_compiles_again(monkeypatch):
    tools = Toolchain(monkeypatch)

    def broken(source: str, name: str, *_a: object, **_k: object) -> bytes:
        tools.calls.append(("process", name))
        if name.endswith("_part1"):
            raise nvrtc.CompileError("NVRTC could not compile k_part1: identifier undefined")
        return b"obj"

    monkeypatch.setattr(nvrtc, "compile_in_subprocess", broken)
    source = two_parts().translation_unit([mx.float32, mx.float32], [mx.float32])
    with pytest.raises(nvrtc.CompileError, match="k_part1"):
        jitlink.build(source, "k", "sm_90a")
    assert sorted(c[1] for c in tools.calls) == ["k_part0", "k_part1", "k_part2"]  # no whole compile


def test_the_linker_is_the_first_of_nvrtcs_major_version(tmp_path, monkeypatch):
    """A CUDA 12 wheel's nvJitLink (e.g. torch's) sorts first but cannot link NVRTC 13's cubins; one
    without `nvJitLinkVersion` (before 12.3) is never used."""
    versions = {"cu12": (12, 8), "cu13": (13, 5), "old": None}
    for name in versions:
        (tmp_path / "nvidia" / name / "lib").mkdir(parents=True)
        (tmp_path / "nvidia" / name / "lib" / "libnvJitLink.so.1").write_bytes(b"")
    monkeypatch.setattr(nvrtc, "site_dirs", lambda: [str(tmp_path)])
    monkeypatch.setattr(nvrtc, "cuda_homes", lambda: [])
    monkeypatch.setattr(jitlink.ctypes.util, "find_library", lambda _: None)
    monkeypatch.setattr(jitlink, "_version", lambda path: versions[path.split("/")[-3]])
    for major, want in ((13, "cu13"), (12, "cu12"), (11, None)):
        monkeypatch.setattr(nvrtc, "version", lambda major=major: (major, 0))
        jitlink.library_path.cache_clear()
        found = jitlink.library_path()
        assert (found and found.split("/")[-3]) == want
    jitlink.library_path.cache_clear()
    jitlink.version.cache_clear()


def test_the_cache_key_names_the_linker(monkeypatch):
    from rolekit.nn import cubins

    monkeypatch.setattr(nvrtc, "version", lambda: (13, 5))
    monkeypatch.setattr(nvrtc, "headers_fingerprint", lambda: "h")
    cache = cubins.BinaryCache()
    in_parts = two_parts().translation_unit([mx.float32, mx.float32], [mx.float32])
    keys, plain = set(), set()
    for tag in ("whole", "jitlink-13.5", "jitlink-13.6"):
        monkeypatch.setattr(jitlink, "tag", lambda tag=tag: tag)
        keys.add(cache.key(in_parts, "sm_90a"))
        plain.add(cache.key("src", "sm_90a"))
    assert len(keys) == 3 and len(plain) == 1  # a source without parts keeps its cubin


@pytest.mark.nvrtc
def test_nvrtc_and_nvjitlink_build_a_kernel_in_parts():
    notices.reset()
    kernel = two_parts()
    source = kernel.translation_unit([mx.float32, mx.float32], [mx.float32])
    assert jitlink.library_path() is not None and jitlink.tag().startswith("jitlink-13.")
    objects = [
        nvrtc.compile_cubin(u, f"u{i}", "sm_90a", rdc=True) for i, u in enumerate(jitlink.units(source))
    ]
    linked = jitlink.link(objects, "sm_90a")
    assert linked[:4] == b"\x7fELF" and kernel.name.encode() in linked
    built = jitlink.build(source, kernel.name, "sm_90a")  # one process per part
    assert built[:4] == b"\x7fELF" and kernel.name.encode() in built
    assert "kernel-link" not in notices.said()
    with pytest.raises(jitlink.LinkError, match="rolekit_part_1"):  # a part missing: undefined
        jitlink.link([objects[0], objects[2]], "sm_90a")
