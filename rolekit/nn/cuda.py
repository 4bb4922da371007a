"""The CUDA device as rolekit's own kernels see it: present, its SMs, shared memory and architecture;
`CudaKernel` (built by `build_kernel`, the one place a kernel is named and built): a kernel's
translation unit, compiled once per source and device (`nn.cubins`, `nn.nvrtc`) and launched from
MLX's kernel cache by `mx.fast.cuda_kernel` (`nn.mlxcache`), else by
`mx.fast.precompiled_cuda_kernel`. The kernels' text: `nn.cuda_text`. Which kernels run is
`nn.kernels.Kernels`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial
from pathlib import Path

import mlx.core as mx

from rolekit.errors import KernelError
from rolekit.nn import cubins, mlxcache, nvrtc
from rolekit.nn.cuda_text import CUDA_TYPES, Template, shared_header, source_tag, translation_unit
from rolekit.notices import notice


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    return bool(mx.cuda.is_available())


@lru_cache(maxsize=1)
def sm_count() -> int | None:
    """Streaming multiprocessors of CUDA device 0 (from the driver, libcuda), None without one.
    A kernel whose blocks wait for each other must launch no more blocks than can be resident."""
    return _attribute(16)  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT


def _attribute(attribute: int) -> int | None:
    """A CUdevice_attribute of CUDA device 0 from the driver (libcuda); None without one."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    dev, value = ctypes.c_int(), ctypes.c_int()
    if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(dev), 0):
        return None
    if lib.cuDeviceGetAttribute(ctypes.byref(value), attribute, dev):
        return None
    return value.value or None


@lru_cache(maxsize=1)
def shared_optin() -> int | None:
    """Bytes of shared memory a block of CUDA device 0 may opt in to (static + dynamic), None
    without a device."""
    return _attribute(97)  # CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN


@lru_cache(maxsize=1)
def arch() -> str:
    """NVRTC's target for CUDA device 0, from its compute capability ("sm_90a" on an H100 or H200).
    Raises RuntimeError without a device."""
    major = _attribute(75)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    if major is None:
        raise RuntimeError("no CUDA device: rolekit's CUDA kernels cannot be compiled for one")
    # ..._MINOR (0 reads as None); "a": the architecture's own features, as MLX's JIT compiles
    return f"sm_{major}{_attribute(76) or 0}{'a' if major >= 9 else ''}"


_LAUNCHED: set[str] = set()  # the paths this process's launchers took (`CudaKernel._launcher`)


def launch_path() -> str:
    """How this process launches rolekit's cubins: "mlx-cache" (`nn.mlxcache`), "precompiled"
    (`mx.fast.precompiled_cuda_kernel`), "mixed" (some each: a cubin could not be placed), or
    "none" without a CUDA device. Before the first launch: the path it will try."""
    if not cuda_available():
        return "none"
    if len(_LAUNCHED) > 1:
        return "mixed"
    if _LAUNCHED:
        return next(iter(_LAUNCHED))
    return "mlx-cache" if mlx_cache_folder() is not None else "precompiled"


# out = 2 x + 1 over N floats: the kernel that checks a launch path (here, and doctor's probe)
AXPB_BODY = "uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;\nif (i < N) { out[i] = 2.0f * x[i] + 1.0f; }"


@lru_cache(maxsize=1)
def _probe() -> tuple[CudaKernel, str]:
    """The kernel `mlx_cache_folder` runs, and its translation unit (also built ahead)."""
    kernel = build_kernel("launch_probe", ["x"], ["out"], AXPB_BODY)
    return kernel, kernel.translation_unit([mx.float32], [mx.float32], [("N", 64)])


@lru_cache(maxsize=1)
def mlx_cache_folder() -> Path | None:
    """MLX's kernel cache folder where launching cubins from it works in this process: the
    folder `nn.mlxcache.folder` allows, checked once by running a small kernel that way (MLX
    either loads the placed cubin or fails on the placeholder's `#error`). Where the check fails,
    every kernel launches the precompiled way and a notice says why."""
    folder = mlxcache.folder()
    if folder is None:
        return None
    try:
        kernel, source = _probe()
        launch = kernel.from_mlx_cache(
            source, _binary(source, kernel.name), [mx.float32], [mx.float32], folder
        )
        if launch is None:
            raise OSError(f"{folder} cannot be written")
        x = mx.arange(64, dtype=mx.float32)
        out = launch(
            inputs=[x],
            output_shapes=[(64,)],
            output_dtypes=[mx.float32],
            grid=(64, 1, 1),
            threadgroup=(64, 1, 1),
        )
        if not bool(mx.all(out[0] == 2 * x + 1).item()):
            raise RuntimeError("a kernel launched from it computed wrong values")
    except (RuntimeError, OSError, KernelError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        notice(
            "mlx-kernel-cache",
            f"rolekit's CUDA kernels launch the precompiled way (MLX hashes each cubin at every "
            f"launch: slower steps), since launching them from MLX's kernel cache failed: {first}",
        )
        return None
    return folder


@dataclass(frozen=True)
class CudaKernel:
    """One rolekit kernel: the body `source` of a `__global__` function whose arguments are the
    row-contiguous `inputs` (`const T*`, in order) then the `outputs` (`T*`), after the shared
    header set and `header`. Template values become constants at the top of the body (`int`,
    `bool`, or a type alias for a dtype). `threads`: launch bounds (a block of at most that many
    threads; without them NVRTC may give a thread 255 registers, capping a block at 256
    threads); `shared_memory`: dynamic shared memory in bytes (MLX raises the block's limit past
    48000). `parts`: bodies of `__device__ __noinline__` functions `rolekit_part_<i>`, which see
    the kernel's arguments by their names (from a table in shared memory) and take `part_params`
    (declarations) besides; the body calls them as `rolekit_part_<i>(ROLEKIT_KERNEL_ARGS, ...)`
    (`cuda_text.translation_unit`). Each part is compiled apart and the kernel linked
    (`nn.jitlink`): a long kernel compiles in about the time of its largest part.

    Called like the function `mx.fast.cuda_kernel` returns (inputs, output shapes and dtypes,
    grid in threads, threadgroup, template, init_value), it compiles the source for this GPU once
    per process and cache folder (`nn.cubins`) and launches the cubin (`_launcher`)."""

    family: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    source: str
    header: str = ""
    threads: int = 0
    shared_memory: int = 0
    parts: tuple[str, ...] = ()
    part_params: tuple[str, ...] = ()

    @cached_property
    def _launchers(self) -> dict[tuple, Callable[..., list[mx.array]]]:
        """(input dtypes, output dtypes, template) -> the launch function of this process's cubin."""
        return {}

    @cached_property
    def name(self) -> str:
        """`rolekit_<family>_<source_tag of the header set and body>`."""
        text = shared_header() + self.header + self.source + "".join(self.parts) + ",".join(self.part_params)
        return f"rolekit_{self.family}_{source_tag(text)}"

    def translation_unit(
        self, input_dtypes: Sequence[mx.Dtype], output_dtypes: Sequence[mx.Dtype], template: Template = ()
    ) -> str:
        """The full source NVRTC compiles for one launch's dtypes and template values."""
        types = [f"const {CUDA_TYPES[d]}*" for d in input_dtypes]
        types += [f"{CUDA_TYPES[d]}*" for d in output_dtypes]
        return translation_unit(
            self.name,
            [*self.inputs, *self.outputs],
            types,
            self.source,
            self.header,
            self.threads,
            template,
            self.parts,
            self.part_params,
        )

    def __call__(
        self,
        *,
        inputs: Sequence[mx.array],
        output_shapes: Sequence[Sequence[int]],
        output_dtypes: Sequence[mx.Dtype],
        grid: tuple[int, int, int],
        threadgroup: tuple[int, int, int],
        template: Template = (),
        init_value: float | None = None,
    ) -> list[mx.array]:
        # a step launches the same kernels every 80 ms; True and 1 are other constants (bool, int)
        values = tuple((k, type(v), v) for k, v in template)
        launch = (tuple(a.dtype for a in inputs), tuple(output_dtypes), values)
        launcher = self._launchers.get(launch)
        if launcher is None:
            source = self.translation_unit(launch[0], output_dtypes, template)
            ahead = _AHEAD.get()
            if ahead is not None:  # building ahead: compile in the background, answer with placeholders
                ahead.submit(source, self.name)
                return ahead.placeholders(output_shapes, output_dtypes, inputs)
            launcher = self._launchers[launch] = self._launcher(source, launch)
        return launcher(
            inputs=list(inputs),
            output_shapes=[tuple(s) for s in output_shapes],
            output_dtypes=list(output_dtypes),
            grid=grid,
            threadgroup=threadgroup,
            init_value=init_value,
        )

    def _launcher(self, source: str, launch: tuple) -> Callable[..., list[mx.array]]:
        """How one launch variant runs: from MLX's kernel cache (`from_mlx_cache`) where that
        works in this process, else by `mx.fast.precompiled_cuda_kernel`."""
        binary = _binary(source, self.name)
        folder = mlx_cache_folder()
        placed = None if folder is None else self.from_mlx_cache(source, binary, launch[0], launch[1], folder)
        _LAUNCHED.add("precompiled" if placed is None else "mlx-cache")
        return placed or partial(
            mx.fast.precompiled_cuda_kernel,
            name=self.name,
            compiled_source=binary,
            scalars=[],
            shared_memory=self.shared_memory,
            ensure_row_contiguous=True,
        )

    def from_mlx_cache(
        self,
        source: str,
        binary: bytes,
        in_dtypes: Sequence[mx.Dtype],
        out_dtypes: Sequence[mx.Dtype],
        folder: Path,
    ) -> Callable[..., list[mx.array]] | None:
        """The cubin of `source` placed in MLX's kernel cache `folder` under its placeholder's
        module (`nn.mlxcache`), and `mx.fast.cuda_kernel` of the placeholder, which MLX then
        launches from the cubin; None when the folder cannot be written."""
        placeholder = mlxcache.Placeholder(
            self.name,
            cubins.CACHE.key(source, arch()),
            [(CUDA_TYPES[d], n) for n, d in zip(self.inputs, in_dtypes, strict=True)],
            [(CUDA_TYPES[d], n) for n, d in zip(self.outputs, out_dtypes, strict=True)],
        )
        if not placeholder.place(folder, binary):
            return None
        return mx.fast.cuda_kernel(
            name=placeholder.name,
            input_names=list(self.inputs),
            output_names=list(self.outputs),
            source=placeholder.source,
            header=placeholder.header,
            ensure_row_contiguous=True,
            shared_memory=self.shared_memory,
        )


def _binary(source: str, name: str) -> bytes:
    """The cubin of one translation unit (`nn.cubins`); what stops it is the user's to fix."""
    try:
        return cubins.CACHE.get(source, name, arch())
    except FileNotFoundError as exc:
        raise KernelError(f"{exc}. {KERNEL_FIX}") from None
    except nvrtc.CompileError as exc:
        raise KernelError(f"{exc}\n{KERNEL_FIX}") from None


KERNEL_FIX = (
    "rolekit compiles its CUDA kernels with NVRTC: install rolekit's cuda extra (NVRTC and CUDA's "
    "headers) or the CUDA toolkit with CUDA_HOME set (`rolekit doctor` checks it), or run the "
    "part with MLX's ops (`--kernels NAME=0`)"
)


def build_kernel(
    family: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    source: str,
    header: str = "",
    threads: int = 0,
    shared_memory: int = 0,
    parts: Sequence[str] = (),
    part_params: Sequence[str] = (),
) -> CudaKernel:
    """The one place a rolekit kernel is named and built (`CudaKernel`)."""
    return CudaKernel(
        family,
        tuple(inputs),
        tuple(outputs),
        source,
        header,
        threads,
        shared_memory,
        tuple(parts),
        tuple(part_params),
    )


class AheadBuild:
    """The translation units launched inside `compiling_ahead`: each not yet compiled compiles in
    `pool` (`nn.cubins.BinaryCache.prefetch`); `wait` for them all."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool
        self.sources: set[str] = set()
        self.futures: list[Future] = []
        self.filled = 0  # placeholders handed out (`placeholders`)

    def placeholders(
        self, shapes: Sequence[Sequence[int]], dtypes: Sequence[mx.Dtype], inputs: Sequence[mx.array] = ()
    ) -> list[mx.array]:
        """Stand-ins for a kernel's outputs: lazy constants, each with a fill value of its own
        (0, 1, 2, ...: small, so an integer one is a valid index; bool ones alternate), so that
        `mx.compile` never merges two of them into one array where a kernel's outputs would stay
        apart, and which depend on the kernel's `inputs` (`mx.depends`: its node also keeps two
        equal bool constants apart), so that what computes only a kernel's inputs is evaluated
        too (the fused kernels MLX builds around them are those it builds around the kernel's)."""
        out = []
        for shape, dtype in zip(shapes, dtypes, strict=True):
            # (a bool fill value: `mx.full` of an int with dtype bool makes an int32 array)
            value = bool(self.filled % 2) if dtype == mx.bool_ else self.filled % 64
            out.append(mx.full(tuple(shape), value, dtype=dtype))
            self.filled += 1
        return with_inputs(out, inputs)

    def submit(self, source: str, name: str) -> None:
        if not self.sources and mlxcache.folder() is not None:  # the check before the first launch
            probe, probe_source = _probe()
            self._add(probe_source, probe.name)
        self._add(source, name)

    def _add(self, source: str, name: str) -> None:
        if source not in self.sources:
            self.sources.add(source)
            try:
                job = cubins.CACHE.prefetch(source, name, arch(), self.pool)
            except Exception:  # noqa: BLE001 - e.g. no NVRTC: left for the launch to report
                return
            if job is not None:
                self.futures.append(job)

    def wait(self) -> int:
        """Block until every compile has finished; returns how many kernels were asked for
        (compiled or read). A source that failed to compile is left for its launch to report."""
        wait(self.futures)
        self.pool.shutdown()
        return len(self.sources)

    def cancel(self) -> None:
        """Drop the compiles not yet started, this build's and those of an earlier build it found
        pending (those running finish in their workers)."""
        for job in self.futures:
            job.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)


def with_inputs(outputs: list[mx.array], inputs: Sequence[mx.array]) -> list[mx.array]:
    """`outputs` made to depend on `inputs` (`mx.depends`): evaluating them evaluates what
    computes the inputs, as a kernel's outputs do."""
    return list(mx.depends(list(outputs), list(inputs))) if inputs else list(outputs)


_AHEAD: ContextVar[AheadBuild | None] = ContextVar("rolekit_cuda_ahead", default=None)


@contextmanager
def compiling_ahead(workers: int | None = None) -> Iterator[AheadBuild]:
    """Inside the block a `CudaKernel` call whose cubin this process lacks starts compiling it, in
    a process of its own watched by one of `workers` threads (default: the CPU count, at most 16),
    unless the kernel cache has it, and returns placeholders of the output shapes
    (`AheadBuild.placeholders`); only throwaway graphs belong inside, evaluated (if at all) on
    scratch state. The compiles go on after the block
    (`AheadBuild.wait`), their pool closed to new work, so its threads end with the last compile
    even if nobody waits; a launch that needs one of them meanwhile waits for it (`nn.cubins`). A
    build that meets a compile of an earlier build still running waits for that one too. An
    exception inside cancels the compiles not yet started."""
    build = AheadBuild(ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)))
    token = _AHEAD.set(build)
    try:
        yield build
    except BaseException:
        build.cancel()
        raise
    finally:
        _AHEAD.reset(token)
        build.pool.shutdown(wait=False)  # no more submits: the queued compiles still run
