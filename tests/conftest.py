"""Suite-wide test settings: never touch the network, keep the torch oracle fast."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Commands default to the real model (nvidia/personaplex-7b-v1); tests run on the embedded random one.
os.environ.setdefault("ROLEKIT_MODEL", "tiny")

# Test folders mirror rolekit's packages; fixtures that tests of several packages share live in
# tests/fixtures/ (imported as `tests.fixtures.*`: the repository root must be importable even when
# pytest starts without `python -m`, since --import-mode=importlib adds nothing to sys.path).
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
pytest_plugins = [
    "tests.fixtures.personas",
    "tests.fixtures.records",
    "tests.fixtures.suites",
    "tests.fixtures.live",
]

# Same as the CLI: MLX on Linux binds to the system OpenBLAS when it is loaded before mlx.
from rolekit.codec.blas import preload_openblas  # noqa: E402

preload_openblas()


import pytest  # noqa: E402

# A test that uses one of these fixtures needs what the marker names (pyproject.toml lists the markers):
# the torch oracle (torch + Kyutai's moshi) or Whisper. Marked here so that no test can forget it.
_FIXTURE_MARKERS = {"oracle": "oracle", "tiny_oracle": "oracle", "tiny_en": "asr", "random_7b_cache": "torch"}


@pytest.fixture(scope="session")
def random_7b_cache(tmp_path_factory):
    """A $ROLEKIT_CACHE whose `random-7b` is random-7b's NVIDIA layout written by its own builder at
    tiny sizes (real vocabulary, card and Mimi frame; .pt voices need torch), so that `--model
    random-7b` runs each command's real path in seconds. Built once per session."""
    from rolekit.lm.config import tiny
    from rolekit.randmodel import RANDOM_7B_VERSION, build_random_7b, tiny_configs

    cache = tmp_path_factory.mktemp("random-7b-cache")
    build_random_7b(
        cache / "models" / RANDOM_7B_VERSION,
        lm_cfg=tiny(text_card=32000, card=2048, context=3000),
        mimi_cfg=tiny_configs()[1],
    )
    return cache


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The embedded tiny model, built once per session in a temporary ROLEKIT_CACHE (the CLI loads
    `tiny` from the same cache while the fixture is alive)."""
    from rolekit import models

    old = os.environ.get("ROLEKIT_CACHE")
    os.environ["ROLEKIT_CACHE"] = str(tmp_path_factory.mktemp("rolekit-cache"))
    try:
        yield models.load("tiny")
    finally:
        if old is None:
            os.environ.pop("ROLEKIT_CACHE", None)
        else:
            os.environ["ROLEKIT_CACHE"] = old


def _torch_missing() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


def pytest_ignore_collect(collection_path, config):
    """`-m "not oracle"` without torch installed: oracle modules that import torch or moshi at import
    time are not even imported (they would be deselected anyway; without the marker expression they
    are collected and fail, never skipped)."""
    import re

    if collection_path.suffix != ".py" or "not oracle" not in (config.option.markexpr or ""):
        return None
    text = collection_path.read_text(encoding="utf-8")
    imports = re.search(r"^(import torch|from torch|import moshi|from moshi)", text, re.M)
    if imports and "mark.oracle" in text and _torch_missing():
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(_FIXTURE_MARKERS):
            item.add_marker(_FIXTURE_MARKERS[fixture])
    # `nvrtc` tests (minutes of NVRTC compiles, an extra wheel) run only when a -m expression names
    # them (`pytest -m nvrtc`); otherwise they are deselected, reported as such, never skipped.
    if "nvrtc" not in (config.getoption("markexpr", "") or ""):
        nvrtc = [i for i in items if i.get_closest_marker("nvrtc")]
        if nvrtc:
            config.hook.pytest_deselected(items=nvrtc)
            items[:] = [i for i in items if not i.get_closest_marker("nvrtc")]


def fused_contract(x, wt, norm=None, gate=False, residual=None, gelu=False, scale=None):
    """What rolekit.nn.fused's CUDA kernel computes, in float32 MLX ops: rows row0 .. row0 + rows
    (x2 gated) of the (dequantized) weight, the RMSNorm / LayerNorm prologue, then the gate, GELU,
    layer-scale and residual epilogues."""
    import mlx.core as mx
    import mlx.nn as nn

    w = wt.w
    if wt.bits:
        w = mx.dequantize(wt.w, wt.scales, wt.biases, group_size=wt.group, bits=wt.bits)
    w = w[wt.row0 : wt.row0 + (2 if gate else 1) * wt.rows].astype(mx.float32)
    xf = x.astype(mx.float32)
    if isinstance(norm, nn.LayerNorm):
        xf = mx.fast.layer_norm(xf, norm.weight.astype(mx.float32), norm.bias.astype(mx.float32), norm.eps)
    elif norm is not None:
        xf = mx.fast.rms_norm(xf, norm.weight.astype(mx.float32), norm.eps)
    y = xf @ w.T
    if gate:
        y = nn.silu(y[..., : wt.rows]) * y[..., wt.rows :]
    if gelu:
        y = nn.gelu(y)
    if scale is not None:
        y = y * scale.astype(mx.float32)
    if residual is not None:
        y = residual.astype(mx.float32) + y
    return y.astype(x.dtype)


@pytest.fixture
def kernel_model(monkeypatch):
    """Stand in for rolekit.nn.fused's CUDA kernel (callers pass `use_kernel=True` or a
    `Kernels(fused=True)` policy), record its calls (x shape, row0, rows, bits, norm?, gate?,
    residual?); it computes `fused_contract`."""
    from rolekit.nn import fused

    calls: list[tuple] = []

    def fake(x, wt, norm=None, gate=False, residual=None, gelu=False, scale=None):
        calls.append((x.shape, wt.row0, wt.rows, wt.bits, norm is not None, gate, residual is not None))
        return fused_contract(x, wt, norm, gate, residual, gelu, scale)

    monkeypatch.setattr(fused, "fused", fake)
    return calls


def depformer_contract(names, shape, bits, eps, inputs, template, output_shapes):
    """What rolekit.lm.depformer_cuda's kernel computes, in float32 MLX ops, reading its inputs by
    name as the CUDA source does (stacked step rows, embedding offsets, gated halves, step caches,
    sampling rule, scratch layout) -> [tokens [B, NS] int32, scratch fp32]."""
    import mlx.core as mx
    import mlx.nn as nn

    from rolekit.lm import depformer_cuda as dc

    d, dd, h, f, card, n_layers = shape
    hd = dd // h
    arr = dict(zip(names, inputs, strict=True))
    t = dict(template)
    b, ns, greedy = t["B"], t["NS"], t["GREEDY"]
    f32 = mx.float32

    def mat(name, rows, s):
        nbits, group = bits[name]
        w = arr[name]
        if nbits:
            w = mx.dequantize(w, arr[name + "_s"], arr[name + "_b"], group_size=group, bits=nbits)
        return w[s * rows : (s + 1) * rows].astype(f32)

    def rms(x, g):
        return mx.fast.rms_norm(x, arr[g].astype(f32), eps)

    hx = arr["h"].astype(f32)  # [B, D]
    cur = arr["text"]
    caches = [[] for _ in range(n_layers)]
    tokens, logits = [], []
    for s in range(ns):
        table = arr["emb_t"] if s == 0 else arr["emb_a"][(s - 1) * (card + 1) : s * (card + 1)]
        e = mx.where((cur >= 0)[:, None], table[mx.maximum(cur, 0)].astype(f32), 0.0)
        x = hx @ mat("win", dd, s).T + e  # [B, Dd]
        for i in range(n_layers):
            qkv = rms(x, f"n1_{i}") @ mat(f"qkv{i}", 3 * dd, s).T
            q, k, v = qkv[:, :dd], qkv[:, dd : 2 * dd], qkv[:, 2 * dd :]
            caches[i].append((k, v))
            keys = mx.stack([c[0] for c in caches[i]], axis=1).reshape(b, s + 1, h, hd)
            vals = mx.stack([c[1] for c in caches[i]], axis=1).reshape(b, s + 1, h, hd)
            scores = mx.einsum("bhd,bjhd->bhj", q.reshape(b, h, hd), keys) * hd**-0.5
            att = mx.einsum("bhj,bjhd->bhd", mx.softmax(scores, axis=-1), vals).reshape(b, dd)
            x = x + att @ mat(f"o{i}", dd, s).T
            gi = rms(x, f"n2_{i}") @ mat(f"gi{i}", 2 * f, s).T
            x = x + (nn.silu(gi[:, :f]) * gi[:, f:]) @ mat(f"go{i}", dd, s).T
        lg = x @ mat("head", card, s).T  # [B, card]
        logits.append(lg)
        temp, topk = arr["temp"], arr["topk"]
        hot = (temp > 0) & (not greedy)
        sv = mx.where(hot[:, None], lg / mx.where(hot, temp, 1.0)[:, None], lg)
        kk = mx.where((topk <= 0) | (topk > card), card, topk)
        thr = mx.take_along_axis(-mx.sort(-sv, axis=-1), (kk - 1)[:, None], axis=-1)
        thr = mx.where((kk < card)[:, None], thr, -mx.inf)
        noisy = sv if greedy else mx.where(sv >= thr, sv + arr["noise"][:, s], -mx.inf)
        drawn = mx.argmax(mx.where(hot[:, None], noisy, sv), axis=-1).astype(mx.int32)
        given = arr["given"][:, s]
        cur = mx.where(given >= 0, given, drawn).astype(mx.int32)
        tokens.append(cur)
    layout = dc._Layout(shape, b, ns)
    flat = mx.stack(logits, axis=1).reshape(-1)
    scratch = mx.concatenate([mx.zeros((layout.logits,)), flat, mx.zeros((output_shapes[1][0] - layout.kv,))])
    return [mx.stack(tokens, axis=1), scratch]


@pytest.fixture
def dep_kernel_model(monkeypatch):
    """Stand in for rolekit.lm.depformer_cuda's kernel (CUDA, resident blocks; callers pass a
    `Kernels(depformer=True)` policy); it computes `depformer_contract`. Yields the list of its
    calls' template values."""
    from rolekit.lm import depformer_cuda as dc

    calls: list[dict] = []

    def kernel(names, shape, bits, eps, smem, nt=256):
        def call(inputs, template, grid, threadgroup, output_shapes, output_dtypes, init_value):
            calls.append(dict(template))
            return depformer_contract(
                names, shape, dict((n, (b, g)) for n, b, g in bits), eps, inputs, template, output_shapes
            )

        return call

    monkeypatch.setattr(dc, "sm_count", lambda: 132)
    monkeypatch.setattr(dc, "_dims_ok", lambda cfg: True)
    monkeypatch.setattr(dc, "_kernel", kernel)
    return calls


# ---- the fuzz suite's summary (tests/hardening/fuzz_summary.py), relayed from an xdist worker ----

_FUZZ_KEY = "rolekit_fuzz_summary"
_FUZZ_LINES = pytest.StashKey[list]()


class _FuzzRelay:
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        node.config.stash.setdefault(_FUZZ_LINES, []).extend(
            getattr(node, "workeroutput", {}).get(_FUZZ_KEY, [])
        )


def pytest_configure(config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_FuzzRelay(), "rolekit-fuzz-relay")


def pytest_sessionfinish(session) -> None:
    from tests.hardening.fuzz_summary import summary_lines

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput[_FUZZ_KEY] = summary_lines()


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.hardening.fuzz_summary import summary_lines

    for line in summary_lines() or terminalreporter.config.stash.get(_FUZZ_LINES, []):
        terminalreporter.write_line(line)
