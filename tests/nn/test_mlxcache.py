"""rolekit's cubins are launched from MLX's kernel cache (`nn.mlxcache`): the placeholder text and
module name MLX derives, the files MLX reads, and `CudaKernel` choosing that path or, where it
cannot, `mx.fast.precompiled_cuda_kernel`. That MLX really loads the placed cubin is checked on a
GPU (tests/nn/test_cubins_gpu.py): here no CUDA back-end runs."""

from __future__ import annotations

import os

import mlx.core as mx
import pytest

from rolekit.nn import cubins, cuda, mlxcache

from .test_cubins import Counting, launch_one

LONG = "".join(chr(ord("a") + (i * 131 + 7) % 26) for i in range(10003))
# `printf("%zx", std::hash<std::string>{}(s))`, built with g++ (libstdc++) on x86-64; the long
# text's prefixes end at every position of the hash's 8-byte loop
GOLDEN = {
    "": 0x553E93901E462A6E,
    "rolekit": 0xFA174AC11CC3601D,
    'custom_kernel_rolekit_axpb\n#error "x"\n': 0xC526A85F5941972,
    LONG[:9995]: 0x5755CCE023575795,
    LONG[:9996]: 0x784F4773DFFE89EA,
    LONG[:9997]: 0x435A4F8BCEE34951,
    LONG[:9998]: 0x8DB260318AA3C166,
    LONG[:9999]: 0x4C300DB1F5392A12,
    LONG[:10000]: 0xD63D71B002264A9B,
    LONG[:10001]: 0x2755FE7239FADD9D,
    LONG[:10002]: 0x4FB4A68963A32A97,
    LONG: 0x14880CD4ED3D1496,
}


def test_std_hash_is_libstdcxx_std_hash_of_a_string():
    assert {text: mlxcache.std_hash(text) for text in GOLDEN} == GOLDEN


def test_the_generated_text_is_mlx_custom_kernel_text():
    # mlx/backend/cuda/custom_kernel.cpp, build_kernel, 0.32.x: default header, the user's header,
    # the namespace, inputs `const T* name,` one a line, outputs joined by ",\n", then the body
    text = mlxcache.generated_text(
        "custom_kernel_k", "H\n", "B", [("float", "x"), ("uint32_t", "w")], [("float", "y"), ("int32_t", "z")]
    )
    assert text == (
        '\n#include "mlx/backend/cuda/device/utils.cuh"\n\n#include <cooperative_groups.h>\n\n'
        "H\n"
        "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n"
        "__global__ void custom_kernel_k(\n"
        "    const float* x,\n    const uint32_t* w,\n"
        "    float* y,\n    int32_t* z) {\n"
        "B\n}\n\n} // namespace mlx::core::cu\n"
    )
    assert mlxcache.module_name("custom_kernel_k", text) == f"custom_kernel_k_{mlxcache.std_hash(text):x}"


def test_a_long_module_name_continues_in_subfolders(tmp_path):
    name = "m" * 245
    assert mlxcache.module_path(tmp_path, name) == tmp_path / f"{name}.ptx"
    longer = "a" * 245 + "b" * 245 + "c" * 7
    assert mlxcache.module_path(tmp_path, longer) == tmp_path / ("a" * 245) / ("b" * 245) / ("c" * 7 + ".ptx")


def _placeholder(key: str = "k1") -> mlxcache.Placeholder:
    return mlxcache.Placeholder("rolekit_axpb_0123", key, [("float", "x")], [("float", "y")])


def test_a_placeholder_names_its_cubin_and_fails_loudly_if_ever_compiled():
    one, again, other = _placeholder("k1"), _placeholder("k1"), _placeholder("k2")
    assert one.module == again.module != other.module  # the cubin's key is in the text
    assert one.module.startswith("custom_kernel_rolekit_axpb_0123_")
    assert one.header.startswith('#error "rolekit kernel rolekit_axpb_0123: its cubin is missing')
    assert one.source == "" and len(one.header) < 400  # MLX hashes this text on every launch


def test_placing_writes_the_files_mlx_reads_and_leaves_right_ones_alone(tmp_path):
    ph = _placeholder()
    assert ph.place(tmp_path, b"\x7fELF-cubin")
    ptx = mlxcache.module_path(tmp_path, ph.module)
    txt = ptx.with_suffix(".txt")
    assert ptx.read_bytes() == b"\x7fELF-cubin"
    assert txt.read_text() == "mlx::core::cu::custom_kernel_rolekit_axpb_0123\trolekit_axpb_0123\n"
    stamp = os.stat(ptx).st_mtime_ns, os.stat(txt).st_mtime_ns
    assert ph.place(tmp_path, b"\x7fELF-cubin")
    assert (os.stat(ptx).st_mtime_ns, os.stat(txt).st_mtime_ns) == stamp  # already right: untouched
    ptx.write_bytes(b"\x7fELF-cub")  # damaged: written again
    assert ph.place(tmp_path, b"\x7fELF-cubin") and ptx.read_bytes() == b"\x7fELF-cubin"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ptx.name, txt.name])  # no temporaries


def test_an_unwritable_folder_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert not _placeholder().place(blocker / "ptx", b"cubin")


@pytest.mark.parametrize(
    ("trusted", "value", "versions", "placed"),
    [
        (True, "ABS", ["0.32.4", "0.32.4"], True),
        (True, "ABS", ["0.32.1"], True),
        (True, "ABS", ["0.33.0"], False),  # an MLX whose source was not read: the precompiled way
        (True, "ABS", ["0.32.4", "0.33.0"], False),  # mlx and its CUDA library disagree
        (True, "ABS", ["0.32.0"], False),  # 0.32.0 names a module without the hash
        (True, "ABS", ["?"], False),
        (True, "rel/mlx-ptx", ["0.32.4"], False),  # MLX resolves it anew at each read
        (True, None, ["0.32.4"], False),
        (False, "ABS", ["0.32.4"], False),  # set after mlx was imported: MLX may not read it
    ],
)
def test_cubins_go_to_mlx_cache_only_where_mlx_reads_them(
    monkeypatch, tmp_path, trusted, value, versions, placed
):
    if value is None:
        monkeypatch.delenv(mlxcache.ENV, raising=False)
    else:
        monkeypatch.setenv(mlxcache.ENV, str(tmp_path) if value == "ABS" else value)
    monkeypatch.setattr(mlxcache, "_mlx_versions", lambda: versions)
    was = mlxcache._TRUSTED
    try:
        mlxcache.trust_variable(trusted)
        assert mlxcache.folder() == (tmp_path if placed else None)
    finally:
        mlxcache.trust_variable(was)


@pytest.mark.parametrize(
    ("setup", "trusted"),
    [
        ("", True),  # rolekit sets the variable before mlx is imported
        ("import mlx.core; ", False),  # mlx first: MLX may have fixed its folder already
        ("import os; os.environ['MLX_PTX_CACHE_DIR'] = os.path.abspath('mine'); import mlx.core; ", True),
    ],
)
def test_importing_rolekit_decides_whether_mlx_reads_the_variable(tmp_path, setup, trusted):
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MLX_PTX_CACHE_DIR", "CUDA_CACHE_PATH")}
    env["ROLEKIT_CACHE"] = "rel-cache"  # relative: the variables are set absolute
    code = setup + (
        "import json, os, rolekit; from rolekit.nn import mlxcache; "
        "print(json.dumps([mlxcache._TRUSTED, os.environ['MLX_PTX_CACHE_DIR']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    got, folder = json.loads(out.stdout)
    assert got is trusted
    expected = tmp_path / ("mine" if "mine" in setup else "rel-cache/kernels/mlx-ptx")
    assert folder == str(expected) and expected.is_dir()  # made at import: MLX never races to create it


def test_a_kernel_launches_its_cubin_from_mlx_kernel_cache(tmp_path, monkeypatch):
    compiler = Counting()
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path / "rolekit", compiler))
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90a")
    monkeypatch.setattr(cuda, "mlx_cache_folder", lambda: tmp_path / "mlx")  # checked: launches work
    monkeypatch.setattr(cuda, "_LAUNCHED", set())
    made, launched = [], []

    def cuda_kernel(**kw):
        made.append(kw)

        def launch(**call):
            launched.append(call)
            return [
                mx.zeros(s, dtype=d)
                for s, d in zip(call["output_shapes"], call["output_dtypes"], strict=True)
            ]

        return launch

    def precompiled(**kw):
        raise AssertionError("launched the precompiled way")

    monkeypatch.setattr(mx.fast, "cuda_kernel", cuda_kernel)
    monkeypatch.setattr(mx.fast, "precompiled_cuda_kernel", precompiled)
    kernel = cuda.build_kernel("axpb", ["x", "w"], ["y"], "y[0] = x[0];", threads=128, shared_memory=49152)
    x, w = mx.zeros((4,), mx.bfloat16), mx.zeros((2,), mx.uint32)
    args = {
        "output_shapes": [(4,)],
        "output_dtypes": [mx.float32],
        "grid": (4, 1, 1),
        "threadgroup": (4, 1, 1),
    }
    for _ in range(3):  # a step after another: one placeholder, three launches
        (y,) = kernel(inputs=[x, w], template=[("N", 4)], init_value=0, **args)
    assert y.shape == (4,) and len(made) == 1 and len(launched) == 3 and len(compiler.calls) == 1
    assert cuda._LAUNCHED == {"mlx-cache"}
    spec = made[0]
    assert spec["name"] == kernel.name and spec["input_names"] == ["x", "w"] and spec["output_names"] == ["y"]
    assert spec["shared_memory"] == 49152 and spec["ensure_row_contiguous"] is True
    source = kernel.translation_unit([mx.bfloat16, mx.uint32], [mx.float32], [("N", 4)])
    key = cubins.CACHE.key(source, "sm_90a")
    ph = mlxcache.Placeholder(kernel.name, key, [("__nv_bfloat16", "x"), ("uint32_t", "w")], [("float", "y")])
    assert (spec["header"], spec["source"]) == (ph.header, ph.source)
    # MLX finds the real kernel's cubin under the placeholder's module, its symbol the cubin's function
    ptx = mlxcache.module_path(tmp_path / "mlx", ph.module)
    assert ptx.read_bytes() == f"sm_90a:{kernel.name}:{source}".encode()
    assert (
        ptx.with_suffix(".txt").read_text() == f"mlx::core::cu::custom_kernel_{kernel.name}\t{kernel.name}\n"
    )
    call = launched[0]
    assert set(call) == {"inputs", "init_value", *args} and call["inputs"][0] is x and call["inputs"][1] is w
    assert call["init_value"] == 0 and all(call[k] == v for k, v in args.items())
    # other dtypes: another cubin, another placeholder
    kernel(inputs=[x.astype(mx.float32), w], template=[("N", 4)], **args)
    assert (
        len(made) == 2 and made[1]["header"] != ph.header and len(list((tmp_path / "mlx").glob("*.ptx"))) == 2
    )


def test_a_cache_folder_that_cannot_be_written_launches_the_precompiled_way(tmp_path, monkeypatch):
    compiler = Counting()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(None, compiler))
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90a")
    monkeypatch.setattr(cuda, "mlx_cache_folder", lambda: blocker / "mlx")
    launched = []

    def cuda_kernel(**kw):
        raise AssertionError("the placeholder needs its cubin in MLX's cache")

    def precompiled(**kw):
        launched.append(kw)
        return [mx.zeros(s, dtype=d) for s, d in zip(kw["output_shapes"], kw["output_dtypes"], strict=True)]

    monkeypatch.setattr(mx.fast, "cuda_kernel", cuda_kernel)
    monkeypatch.setattr(mx.fast, "precompiled_cuda_kernel", precompiled)
    launch_one(cuda.build_kernel("copy", ["x"], ["y"], "y[0] = x[0];"))
    assert len(launched) == 1 and launched[0]["compiled_source"].startswith(b"sm_90a:")


def test_mlx_compiling_a_placeholder_is_one_clear_message(monkeypatch, capsys):
    from rolekit.cli import app as cli_app

    log = (
        "[compile] Failed to compile kernel: custom_kernel_k.cu(3): error: #error directive: "
        f'"rolekit kernel k: {mlxcache.MISSING} (MLX_PTX_CACHE_DIR changed after MLX first used it)"\n'
        "1 error detected in the compilation of custom_kernel_k.cu."
    )

    class Fails:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def main(self, **_: object) -> None:
            raise self.exc

    monkeypatch.setattr(cli_app, "_command", lambda: Fails(RuntimeError(log)))
    with pytest.raises(SystemExit) as exit_:
        cli_app.main(["run"])
    out = capsys.readouterr()
    assert exit_.value.code == 2 and "Traceback" not in out.err
    assert f'"rolekit kernel k: {mlxcache.MISSING} (MLX_PTX_CACHE_DIR changed' in out.err
    assert "1 error detected" not in out.err  # the one line that says it, not NVRTC's whole log
    monkeypatch.setattr(cli_app, "_command", lambda: Fails(RuntimeError("another failure")))
    with pytest.raises(RuntimeError, match="another failure"):  # not ours: not hidden
        cli_app.main(["run"])


@pytest.mark.parametrize("mlx_does", ["load the cubin", "compile the placeholder", "compute wrong values"])
def test_launching_from_mlx_cache_is_checked_once_with_a_small_kernel(tmp_path, monkeypatch, mlx_does):
    from rolekit import notices

    compiler = Counting()
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path / "rolekit", compiler))
    monkeypatch.setattr(cuda, "arch", lambda: "sm_90a")
    monkeypatch.setattr(mlxcache, "folder", lambda: tmp_path / "mlx")
    monkeypatch.setattr(notices, "_said", set())
    said = []
    monkeypatch.setattr(notices, "_sink", said.append)
    cuda.mlx_cache_folder.cache_clear()

    def cuda_kernel(**spec):
        def launch(inputs, output_shapes, output_dtypes, **_):
            module = mlxcache.module_path(
                tmp_path / "mlx",
                mlxcache.Placeholder(
                    spec["name"],
                    cubins.CACHE.key(cuda._probe()[1], "sm_90a"),
                    [("float", "x")],
                    [("float", "out")],
                ).module,
            )
            if mlx_does == "compile the placeholder" or not module.exists():
                raise RuntimeError(
                    f"[compile] Failed to compile kernel: error: {spec['header'].splitlines()[0]}"
                )
            x = inputs[0]
            return [2 * x + (1 if mlx_does == "load the cubin" else 2)]

        return launch

    monkeypatch.setattr(mx.fast, "cuda_kernel", cuda_kernel)
    try:
        folder = cuda.mlx_cache_folder()
        assert cuda.mlx_cache_folder() is folder  # decided once
    finally:
        cuda.mlx_cache_folder.cache_clear()
    if mlx_does == "load the cubin":
        assert folder == tmp_path / "mlx" and said == []
    else:  # every kernel then launches the precompiled way, and a notice says why
        assert folder is None and len(said) == 1 and "launch the precompiled way" in said[0]
    assert compiler.calls == [(cuda._probe()[0].name, "sm_90a")]
