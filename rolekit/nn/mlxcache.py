"""rolekit's cubins placed in MLX's kernel cache, so that `mx.fast.cuda_kernel` launches them.

Why: `mx.fast.precompiled_cuda_kernel` keeps a cubin as its primitive's source, so MLX copies it
into every launch made outside a compiled graph and hashes it (`std::hash`) at every evaluation
of every launch: each step hashes megabytes (Mimi's two kernels alone are 0.5-0.6 MB each).
`mx.fast.cuda_kernel` hashes the text it generates instead, and before compiling that text it
reads `<MLX_PTX_CACHE_DIR>/<module>.ptx` whenever the file exists (MLX only never writes one for
a custom kernel). So rolekit launches a short placeholder text with `cuda_kernel` and, first,
writes the cubin compiled from the real source (`nn.cubins`) under the module name MLX derives
from that placeholder: MLX loads the cubin and hashes a few hundred bytes per launch.

The contract with MLX, read in `mlx/backend/cuda/custom_kernel.cpp` (`build_kernel`,
`CustomKernel::eval_gpu`) and `jit_module.cpp` (`read_cached_ptx`), unchanged from 0.32.1 to
0.32.4; `MLX_VERSIONS` are the versions it holds for (others launch cubins the precompiled way):
- the kernel is `custom_kernel_<name>` (no template arguments are passed), its text `generated_text`;
- the module is `<kernel>_<libstdc++ std::hash of the text, lowercase hex>` (`std_hash`);
- its files are `<dir>/<module>.ptx` (the cubin; names over 245 characters continue in
  subfolders) and `<dir>/<module>.txt`, a line `mlx::core::cu::<kernel>\\t<symbol>` per kernel.

`nn.cuda.mlx_cache_folder` checks the contract once a process with a small kernel launched this
way, before the first real launch; where that fails every kernel launches the precompiled way.
The placeholder's text is an `#error` that says what went wrong: should MLX ever compile it
instead of reading the cubin (the variable changed after MLX first used it, the file was removed
mid-run), the launch fails with that message instead of running an empty kernel. No mlx here.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from rolekit.atomic import replaced_file

MLX_VERSIONS = ("0.32.1", "0.32.2", "0.32.3", "0.32.4")  # 0.32.0 named a module without the hash
ENV = "MLX_PTX_CACHE_DIR"
NAME_LIMIT = 245  # MLX's longest file name part

# MLX's pieces of a custom kernel's text (custom_kernel.cpp)
_DEFAULT_HEADER = '\n#include "mlx/backend/cuda/device/utils.cuh"\n\n#include <cooperative_groups.h>\n\n'
_OPEN = "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n"
_CLOSE = "\n}\n\n} // namespace mlx::core::cu\n"
_SEED = 0xC70F6907  # libstdc++'s seed of std::hash<std::string>
# what MLX's compile error says when it compiled a placeholder (`rolekit.cli` reports it cleanly)
MISSING = "its cubin is missing from MLX's kernel cache"


@lru_cache(maxsize=1)
def _hash_bytes() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libstdc++'s `std::_Hash_bytes`, the function behind `std::hash<std::string>` (MLX links it)."""
    try:
        fn = ctypes.CDLL("libstdc++.so.6")._ZSt11_Hash_bytesPKvmm
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t]
    return fn


def std_hash(text: str) -> int:
    """`std::hash<std::string>` of `text` (UTF-8) as MLX computes it. Raises OSError without libstdc++."""
    fn = _hash_bytes()
    if fn is None:
        raise OSError("libstdc++.so.6 with std::_Hash_bytes is not loadable")
    data = text.encode()
    return int(fn(data, len(data), _SEED))


def generated_text(
    kernel: str, header: str, body: str, inputs: Sequence[tuple[str, str]], outputs: Sequence[tuple[str, str]]
) -> str:
    """The text MLX generates for `cuda_kernel(name, ...)` launched with arguments of these
    (CUDA type, name) pairs and no template: `kernel` is `custom_kernel_<name>`. The body must
    not mention `<input>_shape`, `_strides` or `_ndim` (MLX would add those arguments)."""
    text = _DEFAULT_HEADER + header + _OPEN + f"__global__ void {kernel}(\n"
    text += "".join(f"    const {ctype}* {name},\n" for ctype, name in inputs)
    text += ",\n".join(f"    {ctype}* {name}" for ctype, name in outputs) + ") {\n"
    return text + body + _CLOSE


def module_name(kernel: str, text: str) -> str:
    return f"{kernel}_{std_hash(text):x}"


def module_path(folder: Path, module: str) -> Path:
    """Where MLX looks for a module's cubin (`.ptx`; the kernel list beside it is `.txt`)."""
    path = folder
    while len(module) > NAME_LIMIT:
        path, module = path / module[:NAME_LIMIT], module[NAME_LIMIT:]
    return path / f"{module}.ptx"


class Placeholder:
    """The `cuda_kernel` arguments (`name`, `header`, `source`) standing for one cubin, and its module.

    `symbol`: the cubin's kernel function (also the placeholder's name); `key` names the cubin
    (its `nn.cubins` key), so that two cubins never share a module; `inputs` / `outputs`: the
    launch's (CUDA type, name) arguments."""

    def __init__(
        self, symbol: str, key: str, inputs: Sequence[tuple[str, str]], outputs: Sequence[tuple[str, str]]
    ) -> None:
        self.name = self.symbol = symbol
        self.header = (
            f'#error "rolekit kernel {symbol}: {MISSING} ({ENV} changed after MLX first used it, or '
            "the file was removed): set the variable before any GPU work or import rolekit first, "
            'and run again"\n'
            f"// {key}\n"
        )
        self.source = ""
        self.kernel = f"custom_kernel_{symbol}"
        text = generated_text(self.kernel, self.header, self.source, inputs, outputs)
        self.module = module_name(self.kernel, text)

    def place(self, folder: Path, cubin: bytes) -> bool:
        """Make MLX find `cubin` for this placeholder in `folder`; False when the folder cannot
        be written (then launch the cubin otherwise). Files already right are left alone."""
        ptx = module_path(folder, self.module)
        txt = ptx.with_suffix(".txt")
        listing = f"mlx::core::cu::{self.kernel}\t{self.symbol}\n".encode()
        try:
            if _holds(txt, listing) and _holds(ptx, cubin):
                return True
            # the list first: MLX reads it only once the cubin exists
            for path, data in ((txt, listing), (ptx, cubin)):
                with replaced_file(path) as tmp:
                    tmp.write_bytes(data)
        except OSError:
            return False
        return True


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


_TRUSTED = False  # MLX reads the MLX_PTX_CACHE_DIR in effect (`trust_variable`)


def trust_variable(trusted: bool) -> None:
    """Whether MLX reads the `MLX_PTX_CACHE_DIR` now in effect (`rolekit.kernelcache` decides:
    the user's own, or set by rolekit before mlx was imported)."""
    global _TRUSTED
    _TRUSTED = trusted
    folder.cache_clear()


@lru_cache(maxsize=1)
def folder() -> Path | None:
    """MLX's kernel cache folder when rolekit may place cubins in it: MLX (and its CUDA library)
    of `MLX_VERSIONS`, `MLX_PTX_CACHE_DIR` trusted (`trust_variable`) and absolute (MLX resolves
    a relative one against the working folder of each read), libstdc++ loadable; else None.
    Decided once per process, as MLX reads its variable once."""
    value = os.environ.get(ENV)
    if not _TRUSTED or not value or not os.path.isabs(value) or _hash_bytes() is None:
        return None
    if not all(v in MLX_VERSIONS for v in _mlx_versions()):
        return None
    return Path(value)


def _mlx_versions() -> list[str]:
    """Versions of the installed MLX packages whose `libmlx` may run the kernels ("?" for mlx
    without metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("mlx", "mlx-cuda-13", "mlx-cuda-12", "mlx-cuda"):
        try:
            found.append(version(name))
        except PackageNotFoundError:
            if name == "mlx":
                found.append("?")
    return found
