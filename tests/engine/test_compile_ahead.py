"""`Engine.compile_kernels_ahead` (the warm-up's first phase) compiles, in parallel, exactly the
rolekit CUDA kernels that a conversation's steps and its later step graphs launch, without
running anything: here on CPU, launchers pretending an H100, a recording stand-in for NVRTC."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from rolekit.engine.engine import Engine
from rolekit.nn import cubins, cuda, mlxcache
from rolekit.nn.kernels import Kernels
from tests.nn.nvrtc import ALL, capture_kernels, pretend_cuda


class Recording:
    def __init__(self) -> None:
        self.sources: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, source: str, name: str, arch: str) -> bytes:
        with self.lock:
            self.sources.append(source)
        return b"cubin"


def _engine(quant: str, batch: int, context: int, kernels: Kernels = ALL) -> Engine:
    from rolekit.codec.config import tiny as tiny_mimi
    from rolekit.codec.mimi import Mimi
    from rolekit.lm.config import tiny
    from rolekit.models import ModelBundle
    from rolekit.randlm import build_lm

    lm = build_lm(tiny(card=2048, context=context, num_heads=1, depformer_num_heads=1), quant)
    mimi = Mimi(tiny_mimi(bins=2048, total_codebooks=8, num_codebooks=8, context=250))
    mimi.prepare()
    return Engine(ModelBundle(lm, mimi, None, Path("."), "tiny-h1", True), batch=batch, kernels=kernels)


@pytest.mark.parametrize(("quant", "batch"), [("q4", 1), ("bf16", 2)])
def test_the_kernels_compiled_ahead_are_those_the_conversation_launches(monkeypatch, tmp_path, quant, batch):
    pretend_cuda(monkeypatch)
    compiler = Recording()
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path, compiler))
    monkeypatch.setattr(mlxcache, "folder", lambda: tmp_path / "mlx")  # cubins launch from MLX's cache
    # a context past the attended prefixes 256 and 512: the conversation runs three LM graphs
    engine = _engine(quant, batch, context=600)
    offsets = engine.offsets.copy()
    before = [np.array(a) for a in (engine.ring.cache, engine.ring.provided, engine.keys)]
    ahead = engine.compile_kernels_ahead(mlx_kernels=True)  # MLX's own kernels too: scratch state
    assert ahead.wait() == len(set(compiler.sources)) == len(compiler.sources)
    assert (engine.offsets == offsets).all() and engine.lm_cache.offset == 0  # state untouched
    after = [np.array(a) for a in (engine.ring.cache, engine.ring.provided, engine.keys)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert not engine.lm_step.graphs and not engine.lm_step.built  # no trace kept
    # a prompt longer than the context: no step graph starts after it, nothing to run
    assert engine.lm_step.run_placeholders(engine.lm_cache, engine._ahead(None)[1], 10_000, 1 << 40) == []
    with capture_kernels(monkeypatch) as seen:
        for _ in range(4):  # the depformer and the decoder start on the third call
            engine.step(np.zeros((batch, 1920), np.float32))
        assert engine.prepare(None, evaluate=False) >= 2  # the later step graphs, traced
    launched = {k.source for k in seen}
    families = {k.name.split("_")[1] for k in seen}
    assert {"temporal", "depformer", "mimi", "embed"} <= families
    # and the kernel that checks launching from MLX's cache, before the first launch
    assert launched | {cuda._probe()[1]} == set(compiler.sources)


def test_no_rolekit_kernel_no_work():
    from rolekit.codec.config import tiny as tiny_mimi
    from rolekit.codec.mimi import Mimi
    from rolekit.lm.config import tiny
    from rolekit.models import ModelBundle
    from rolekit.randlm import build_lm

    lm = build_lm(tiny(card=2048, context=40, num_heads=1, depformer_num_heads=1), "fp32")
    bundle = ModelBundle(
        lm, Mimi(tiny_mimi(bins=2048, total_codebooks=8, num_codebooks=8)), None, Path("."), "t", True
    )
    assert Engine(bundle, batch=1, kernels=Kernels()).compile_kernels_ahead() is None


def test_the_prefill_starts_the_conversation_kernels_before_its_prompt_pass(monkeypatch, tmp_path):
    """On a machine that lacks them, rolekit's kernels compile beside the prompt pass: every
    kernel the conversation after the prompt launches is submitted before the pass, and only
    those (the prompt passes the first attended prefix: its step kernel is not built); the
    warm-up's build finds them there (each compiled once)."""
    from types import SimpleNamespace

    from rolekit.frames import PrefillPlan

    pretend_cuda(monkeypatch)
    compiler = Recording()
    cache = cubins.BinaryCache(tmp_path, compiler)
    monkeypatch.setattr(cubins, "CACHE", cache)
    monkeypatch.setattr(mlxcache, "folder", lambda: tmp_path / "mlx")
    submitted: list[str] = []
    prefetch = cache.prefetch
    monkeypatch.setattr(
        cache, "prefetch", lambda source, *a: submitted.append(source) or prefetch(source, *a)
    )
    engine = _engine("q4", 1, context=600)
    before_pass: list[set[str]] = []
    temporal = engine.lm.temporal

    def prompt_pass(x, lm_cache, *blocks):  # noqa: ANN001, ANN002, ANN202
        before_pass.append(set(submitted))
        return temporal(x, lm_cache, *blocks)

    embed = engine.lm.embed
    placeholders = engine.lm_step.run_placeholders
    ran: list[int] = []

    def run_placeholders(*a):  # noqa: ANN002, ANN202
        ran.append(len(before_pass))
        return placeholders(*a)

    monkeypatch.setattr(engine.lm_step, "run_placeholders", run_placeholders)
    monkeypatch.setattr(engine.lm, "temporal", prompt_pass)
    # the prompt's tokens (T > 1) embedded by the ops: their kernel cannot run here
    monkeypatch.setattr(
        engine.lm,
        "embed",
        lambda tokens, kernels: embed(tokens, kernels if tokens.shape[-1] == 1 else Kernels()),
    )
    plan = PrefillPlan(voice="x.wav", text_ids=tuple(range(5, 305)), silence_frames=2)  # > 256 calls
    voice = SimpleNamespace(codes=np.random.default_rng(0).integers(0, 2048, (8, 4)).astype(np.int32))
    engine.prefill([plan], [voice])
    monkeypatch.setattr(engine.lm, "temporal", temporal)
    monkeypatch.setattr(engine.lm, "embed", embed)
    assert len(before_pass) == 1 and before_pass[0]  # one prompt pass, after the submits
    assert ran == [0]  # and after MLX's own kernels of a step were built, once
    assert engine.compile_kernels_ahead().wait() >= len(before_pass[0] - {cuda._probe()[1]})
    assert len(compiler.sources) == len(set(compiler.sources))  # nothing compiled twice
    with capture_kernels(monkeypatch) as seen:
        for _ in range(4):
            engine.step(np.zeros((1, 1920), np.float32))
        engine.prepare(None, evaluate=False)
    launched = {k.source for k in seen}
    assert engine.lm_cache.offset > 256 and launched
    assert set(compiler.sources) == before_pass[0] == launched | {cuda._probe()[1]}


_MLX_KERNELS = """
import json, os, sys, tempfile
from pathlib import Path
import numpy as np
import pytest
from rolekit.nn import cubins, mlxcache
from dataclasses import replace
from tests.engine.test_compile_ahead import ALL, Recording, _engine
from tests.nn.nvrtc import ALL, capture_kernels, pretend_cuda

def built():  # MLX's CPU JIT keeps each fused kernel it compiles as a library under TMPDIR
    return {p.name for p in Path(os.environ["TMPDIR"]).rglob("*.so")}

mp = pytest.MonkeyPatch()
pretend_cuda(mp)
tmp = Path(tempfile.mkdtemp())
mp.setattr(cubins, "CACHE", cubins.BinaryCache(tmp, Recording()))
mp.setattr(mlxcache, "folder", lambda: tmp / "mlx")
quant, batch, ahead, mimi = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
engine = _engine(quant, batch, context=600, kernels=replace(ALL, mimi=mimi))
engine.compile_kernels_ahead(mlx_kernels=ahead).wait()
before = built()
with capture_kernels(mp):
    for _ in range(4):
        engine.step(np.zeros((batch, 1920), np.float32))
    steps = built() - before
    engine.prepare(None, evaluate=True)
print(json.dumps({"ahead": len(before), "later": sorted(steps), "warmup": sorted(built() - before - steps)}))
"""


@pytest.mark.parametrize(("quant", "batch", "mimi"), [("q4", 1, "1"), ("bf16", 8, "1"), ("q4", 2, "0")])
def test_mlx_fused_kernels_of_the_steps_are_built_beside_rolekits_compiles(tmp_path, quant, batch, mimi):
    """With `mlx_kernels` (the prefill's), the build ahead also runs the next step graph (and
    Mimi's compiled graphs, where its one-kernel steps are off) with rolekit's kernels as
    placeholders: MLX builds every fused kernel the conversation's steps then use, while
    rolekit's compile, instead of one at a time after them (those only later graphs use are
    built by the warm-up, `prepare`, as without the build ahead). Here on CPU, where MLX's
    JIT names fused kernels as on CUDA and keeps each as a file under TMPDIR (a fresh one per
    process: the count is this process's); the later steps' kernels answer with arrays of their
    own, as real kernels do, so a placeholder that changed MLX's fusion would show."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    found = {}
    for ahead in ("1", "0"):
        tmp = tmp_path / f"tmp{ahead}"
        tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(root)}
        res = subprocess.run(
            [sys.executable, "-c", _MLX_KERNELS, quant, str(batch), ahead, mimi],
            capture_output=True, text=True, env=env, cwd=root, timeout=300,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        found[ahead] = json.loads(res.stdout.strip().splitlines()[-1])
    assert found["1"]["ahead"] >= 5 and found["1"]["later"] == []  # all the steps', ahead
    assert found["0"]["ahead"] == 0 and len(found["0"]["later"]) == found["1"]["ahead"]  # else: later
    # the later graphs (other attended prefixes, masks) may add some, built by the warm-up
    assert found["1"]["warmup"] == found["0"]["warmup"]


def test_placeholders_stay_apart_in_a_compiled_graph(tmp_path):
    """Two kernel outputs of one shape are two arrays: their placeholders must not be merged by
    `mx.compile` (equal constants would be, and MLX would then fuse other kernels around them)."""
    import re
    from concurrent.futures import ThreadPoolExecutor

    import mlx.core as mx

    build = cuda.AheadBuild(ThreadPoolExecutor(max_workers=1))

    def f(x):  # noqa: ANN001, ANN202
        a, b = build.placeholders([(4,), (4,)], [mx.float32, mx.float32])
        return x * a + b

    mx.export_to_dot(str(tmp_path / "g.dot"), mx.compile(f)(mx.array([1.0, 2.0, 3.0, 4.0])))
    ops = re.findall(r'label ="(\w+)"', (tmp_path / "g.dot").read_text())
    assert ops.count("Full") == 2
    ints = build.placeholders([(3,)] * 70, [mx.int32] * 70)
    assert len({int(p[0].item()) for p in ints}) == 64 and max(int(p[0].item()) for p in ints) == 63
    build.pool.shutdown()
