"""rolekit's kernels are compiled once per source and device and kept on disk (`nn.cubins`), then
launched as machine code (`nn.cuda.CudaKernel`: from MLX's kernel cache, tests/nn/test_mlxcache.py,
else by `mx.fast.precompiled_cuda_kernel`). Here with a counting stand-in for NVRTC; `-m nvrtc`
compiles a real kernel."""

from __future__ import annotations

import threading
import time

import mlx.core as mx
import pytest

from rolekit.nn import cubins, cuda, mlxcache, nvrtc


def compiler_sources(compiler: Counting) -> list[str]:
    return compiler.sources


class Counting:
    """A compiler that returns a made-up cubin per (source, arch) and counts its calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.sources: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, source: str, name: str, arch: str) -> bytes:
        time.sleep(self.delay)
        with self.lock:
            self.calls.append((name, arch))
            self.sources.append(source)
        return f"{arch}:{name}:{source}".encode()


def test_a_second_process_reads_the_cubin_instead_of_compiling(tmp_path):
    first = cubins.BinaryCache(tmp_path, Counting())
    data = first.get("SRC", "k", "sm_90")
    assert first.get("SRC", "k", "sm_90") == data  # this process: from memory
    assert first.stats.as_dict() == {
        "compiled": 1,
        "compile_s": pytest.approx(0, abs=0.1),
        "read": 0,
        "reused": 1,
    }
    assert [p.name for p in tmp_path.iterdir()] == [f"k-{first.key('SRC', 'sm_90')[:32]}.cubin"]

    again = Counting()
    second = cubins.BinaryCache(tmp_path, again)  # a later process, same folder
    assert second.get("SRC", "k", "sm_90") == data
    assert again.calls == [] and second.stats.read == 1 and second.stats.compiled == 0


def test_another_source_or_architecture_is_another_cubin(tmp_path):
    compiler = Counting()
    cache = cubins.BinaryCache(tmp_path, compiler)
    a = cache.get("SRC", "k", "sm_90")
    b = cache.get("SRC2", "k", "sm_90")
    c = cache.get("SRC", "k", "sm_100")
    assert len({a, b, c}) == 3 and len(compiler.calls) == 3
    assert len(list(tmp_path.iterdir())) == 3


def test_threads_asking_for_one_source_compile_it_once(tmp_path):
    compiler = Counting(delay=0.05)
    cache = cubins.BinaryCache(tmp_path, compiler)
    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("SRC", "k", "sm_90"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(compiler.calls) == 1 and len(set(got)) == 1 and len(got) == 8


def test_a_launch_waits_for_the_prefetch_of_its_kernel(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    compiler = Counting(delay=0.2)
    cache = cubins.BinaryCache(tmp_path, compiler)
    with ThreadPoolExecutor(2) as pool:
        job = cache.prefetch("SRC", "k", "sm_90", pool)
        assert job is not None and cache.prefetch("SRC", "k", "sm_90", pool) is job
        data = cache.get("SRC", "k", "sm_90")  # while the prefetch compiles
    assert len(compiler.calls) == 1 and data == job.result()[0]
    assert cache.stats.compiled == 1 and cache.path("k", cache.key("SRC", "sm_90")).exists()
    later = cubins.BinaryCache(tmp_path, Counting())
    with ThreadPoolExecutor(1) as pool:
        assert later.prefetch("SRC", "k", "sm_90", pool) is None  # read from the folder
    assert later.stats.read == 1 and later.get("SRC", "k", "sm_90") == data


def test_a_compile_in_a_process_of_its_own_reports_the_worker_failure(tmp_path):
    with pytest.raises(nvrtc.CompileError, match="no-such-libnvrtc"):
        nvrtc.compile_in_subprocess(
            "", "k", "sm_90a", str(tmp_path / "no-such-libnvrtc.so"), (str(tmp_path),)
        )


def test_an_unwritable_folder_keeps_the_cubin_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    compiler = Counting()
    cache = cubins.BinaryCache(blocker / "kernels", compiler)  # mkdir under a file fails
    assert cache.get("SRC", "k", "sm_90") == cache.get("SRC", "k", "sm_90")
    assert len(compiler.calls) == 1 and blocker.read_text() == "not a folder"


@pytest.mark.parametrize("damage", [b"", b"garbage", None])
def test_a_damaged_cache_file_is_compiled_again(tmp_path, damage):
    first = cubins.BinaryCache(tmp_path, Counting())
    data = first.get("SRC", "k", "sm_90")
    path = first.path("k", first.key("SRC", "sm_90"))
    stored = path.read_bytes()
    assert stored[: len(data)] == data and len(stored) == len(data) + cubins.DIGEST
    path.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]) if damage is None else damage)
    compiler = Counting()
    again = cubins.BinaryCache(tmp_path, compiler)
    assert again.get("SRC", "k", "sm_90") == data
    assert len(compiler.calls) == 1 and again.stats.read == 0 and path.read_bytes() == stored


def test_a_kernel_launches_its_cached_cubin_with_its_translation_unit(tmp_path, monkeypatch):
    compiler = Counting()
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path, compiler))
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90")
    monkeypatch.setattr(mlxcache, "folder", lambda: None)  # MLX's kernel cache not ours to write
    monkeypatch.setattr(cuda, "_LAUNCHED", set())
    launched = []

    def precompiled(**kw):
        launched.append(kw)
        return [mx.zeros(s, dtype=d) for s, d in zip(kw["output_shapes"], kw["output_dtypes"], strict=True)]

    monkeypatch.setattr(mx.fast, "precompiled_cuda_kernel", precompiled)
    kernel = cuda.build_kernel("axpb", ["x", "w"], ["y"], "y[0] = x[0];", threads=256, shared_memory=49152)
    x, w = mx.zeros((4,), mx.bfloat16), mx.zeros((2, 2), mx.uint32)
    (y,) = kernel(
        inputs=[x, w],
        output_shapes=[(4,)],
        output_dtypes=[mx.float32],
        grid=(4, 1, 1),
        threadgroup=(4, 1, 1),
        template=[("T", mx.bfloat16), ("N", 4), ("FLAG", True)],
        init_value=0,
    )
    assert y.shape == (4,) and len(launched) == 1
    call = launched[0]
    source = kernel.translation_unit(
        [mx.bfloat16, mx.uint32], [mx.float32], [("T", mx.bfloat16), ("N", 4), ("FLAG", True)]
    )
    assert call["compiled_source"] == f"sm_90:{kernel.name}:{source}".encode()
    assert call["name"] == kernel.name and call["shared_memory"] == 49152 and call["init_value"] == 0
    assert call["ensure_row_contiguous"] is True and call["scalars"] == []
    assert call["grid"] == (4, 1, 1) and call["threadgroup"] == (4, 1, 1)
    # the signature MLX's launcher fills: inputs in order, then outputs; bounds and constants
    signature = source[source.index('extern "C"') :]
    assert signature.startswith(f'extern "C" __global__ void __launch_bounds__(256) {kernel.name}(\n')
    assert "const __nv_bfloat16* x,\n    const uint32_t* w,\n    float* y) {\n" in signature
    assert "  using T = __nv_bfloat16;\n  constexpr int N = 4;\n  constexpr bool FLAG = true;\n" in signature
    # an int where a bool was is another constant: another translation unit
    kernel(
        inputs=[x, w],
        output_shapes=[(4,)],
        output_dtypes=[mx.float32],
        grid=(4, 1, 1),
        threadgroup=(4, 1, 1),
        template=[("T", mx.bfloat16), ("N", 4), ("FLAG", 1)],
    )
    assert len(compiler.calls) == 2 and "constexpr int FLAG = 1;" in compiler_sources(compiler)[-1]
    # another dtype is another translation unit, compiled once more
    kernel(
        inputs=[x.astype(mx.float32), w],
        output_shapes=[(4,)],
        output_dtypes=[mx.float32],
        grid=(4, 1, 1),
        threadgroup=(4, 1, 1),
        template=[("T", mx.float32), ("N", 4), ("FLAG", True)],
    )
    assert len(compiler.calls) == 3


def test_a_kernel_that_cannot_be_built_is_a_clear_error(tmp_path, monkeypatch):
    from rolekit.errors import KernelError

    def missing(source, name, arch):
        raise FileNotFoundError("CUDA's headers (cuda_bf16.h) not found in any of [] (set CUDA_HOME)")

    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path, missing))
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90")
    kernel = cuda.build_kernel("nothing", ["x"], ["y"], "y[0] = x[0];")
    with pytest.raises(KernelError, match=r"cuda_bf16\.h.*--kernels NAME=0"):
        launch_one(kernel)


def launch_one(kernel: cuda.CudaKernel) -> list[mx.array]:
    """One launch of a kernel of one float in, one float out."""
    return kernel(
        inputs=[mx.zeros((1,))],
        output_shapes=[(1,)],
        output_dtypes=[mx.float32],
        grid=(1, 1, 1),
        threadgroup=(1, 1, 1),
    )


def test_importing_rolekit_puts_every_kernel_cache_under_the_rolekit_cache(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MLX_PTX_CACHE_DIR", "CUDA_CACHE_PATH")}
    env["ROLEKIT_CACHE"] = str(tmp_path)
    code = (
        "import json, os, rolekit; from rolekit.nn import cubins; "
        "print(json.dumps([str(cubins.CACHE.folder), os.environ['MLX_PTX_CACHE_DIR'], os.environ['CUDA_CACHE_PATH']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    kernels = tmp_path / "kernels"
    assert json.loads(out.stdout) == [
        str(kernels / "rolekit"),
        str(kernels / "mlx-ptx"),
        str(kernels / "cuda"),
    ]


@pytest.mark.nvrtc
def test_kernels_compiled_ahead_compile_in_processes_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path))  # NVRTC itself
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90a")
    monkeypatch.setattr(mlxcache, "folder", lambda: None)  # no launch check kernel
    kernels = [
        cuda.build_kernel(f"probe{i}", ["x"], ["y"], f"y[threadIdx.x] = x[threadIdx.x] + {i};")
        for i in range(2)
    ]
    x = mx.zeros((32,), mx.float32)
    call = dict(output_shapes=[(32,)], output_dtypes=[mx.float32], grid=(32, 1, 1), threadgroup=(32, 1, 1))
    with cuda.compiling_ahead(workers=2) as ahead:
        for k in kernels:
            (y,) = k(inputs=[x], **call)  # placeholders: nothing runs
    assert ahead.wait() == 2 and cubins.CACHE.stats.compiled == 2
    for k in kernels:
        source = k.translation_unit([mx.float32], [mx.float32])
        assert cubins.CACHE.get(source, k.name, "sm_90a")[:4] == b"\x7fELF"
    assert cubins.CACHE.stats.compiled == 2 and cubins.CACHE.stats.reused == 2
    assert len(list(tmp_path.glob("rolekit_probe*.cubin"))) == 2


def test_a_later_build_waits_for_and_cancels_the_compiles_an_earlier_build_left_running(
    tmp_path, monkeypatch
):
    """The prefill's build (`Engine.prefill`) is left running; the warm-up's meets its compiles."""
    release = threading.Event()

    class Gated(Counting):  # holds the first compile until released: the second waits in line
        def __call__(self, source: str, name: str, arch: str) -> bytes:
            release.wait(10)
            return super().__call__(source, name, arch)

    compiler = Gated()
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path, compiler))
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90a")
    monkeypatch.setattr(mlxcache, "folder", lambda: None)  # no launch check kernel
    kernels = [
        cuda.build_kernel(f"late{i}", ["x"], ["y"], f"y[threadIdx.x] = x[threadIdx.x] + {i};")
        for i in range(2)
    ]
    x = mx.zeros((32,), mx.float32)
    call = dict(output_shapes=[(32,)], output_dtypes=[mx.float32], grid=(32, 1, 1), threadgroup=(32, 1, 1))
    with cuda.compiling_ahead(workers=1) as first:  # one worker: the second compile waits in line
        for k in kernels:
            k(inputs=[x], **call)
    with pytest.raises(RuntimeError):  # closed to new work after its block
        first.pool.submit(print)
    with cuda.compiling_ahead(workers=1) as second:
        for k in kernels:
            k(inputs=[x], **call)
    assert second.futures == first.futures and len(first.futures) == 2
    second.cancel()
    release.set()
    assert first.futures[1].cancelled() and first.futures[0].result()[0]
    assert len(compiler.calls) == 1  # the cancelled one never compiled


def test_a_build_ahead_leaves_a_kernel_it_cannot_start_to_its_launch(tmp_path, monkeypatch):
    """No NVRTC (its version unreadable): building ahead does not fail the caller (the prefill);
    the launch reports it (`test_a_kernel_that_cannot_be_built_is_a_clear_error`)."""

    def no_nvrtc(*_a: object) -> None:
        raise FileNotFoundError("libnvrtc.so")

    monkeypatch.setattr(cubins.CACHE, "prefetch", no_nvrtc)
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90a")
    monkeypatch.setattr(mlxcache, "folder", lambda: None)
    kernel = cuda.build_kernel("nonvrtc", ["x"], ["y"], "y[threadIdx.x] = x[threadIdx.x];")
    x = mx.zeros((32,), mx.float32)
    with cuda.compiling_ahead(workers=1) as ahead:
        kernel(
            inputs=[x],
            output_shapes=[(32,)],
            output_dtypes=[mx.float32],
            grid=(32, 1, 1),
            threadgroup=(32, 1, 1),
        )
    assert ahead.wait() == 1 and ahead.futures == []


@pytest.mark.nvrtc
def test_nvrtc_compiles_a_kernel_to_machine_code_and_reports_errors():
    kernel = cuda.build_kernel("probe", ["x"], ["y"], "y[threadIdx.x] = T(2) * x[threadIdx.x];", threads=128)
    source = kernel.translation_unit([mx.bfloat16], [mx.bfloat16], [("T", mx.bfloat16)])
    binary = nvrtc.compile_cubin(source, kernel.name, "sm_90")
    assert binary[:4] == b"\x7fELF" and kernel.name.encode() in binary
    with pytest.raises(nvrtc.CompileError, match="undefined"):
        nvrtc.compile_cubin(source.replace("T(2)", "undefined_thing"), kernel.name, "sm_90")
