"""Mimi's steps as one CUDA kernel each (`codec.mimi_cuda`). No GPU here: the kernel's program (its
stages, run with numpy by `reference_step`, the contract the CUDA source implements) gives the codes,
audio and carries of the MLX ops across the transformer ring's wrap, at batch 2, with the
transformer's linears in either layout; and `CompiledMimi` wired to that program (in place of the
compiled CUDA kernel) steps a stream interchangeably with its MLX graphs."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest

from rolekit.codec import mimi_cuda
from rolekit.codec.compiled import CompiledMimi, _fixed
from rolekit.codec.config import mimi_202407, tiny
from rolekit.codec.mimi import Mimi
from rolekit.codec.transformer import rows_layout
from rolekit.nn.kernels import OPS, Kernels

pytestmark = pytest.mark.oracle


def _frames(oracle, batch: int, n: int, seed: int) -> list[mx.array]:
    pcm = oracle.make_pcm(batch, n, seed=seed)
    return [mx.array(pcm[..., i * 1920 : (i + 1) * 1920]) for i in range(n)]


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / (np.abs(ref).max() + 1e-12))


@pytest.mark.parametrize("layout", ["cols", "rows"])
def test_program_gives_the_mlx_steps(tmp_path_factory, oracle, layout):
    _, mimi = oracle.pair(tmp_path_factory, tiny(), seed=4)
    if layout == "rows":
        rows_layout(mimi.encoder_transformer)
        rows_layout(mimi.decoder_transformer)
    fast = CompiledMimi(mimi)  # on this CPU: the MLX graphs
    batch = 2
    state = fast.make_state(batch)
    enc_shapes, dec_shapes = fast._carry_shapes(batch)
    for i, frame in enumerate(_frames(oracle, batch, 7, seed=5)):  # context 8: wraps at frame 4
        carries, offset = _fixed(state.enc, enc_shapes), state.enc_offset
        prog = mimi_cuda.encoder_program(mimi, batch, carries)
        got = mimi_cuda.reference_step(prog, {**prog.inputs, "pcm": frame.reshape(batch, 1920, 1)}, offset)
        codes = fast.encode_step(frame, state)
        np.testing.assert_array_equal(got["codes"], np.array(codes), err_msg=f"frame {i}")
        assert set(prog.carries_out.values()) == set(enc_shapes)
        for name, key in prog.carries_out.items():
            assert _rel(got[name], np.array(state.enc[key])) < 2e-5, (i, key)

        carries, offset = _fixed(state.dec, dec_shapes), state.dec_offset
        prog = mimi_cuda.decoder_program(mimi, batch, carries, codes.shape[1])
        got = mimi_cuda.reference_step(prog, {**prog.inputs, "codes": codes}, offset)
        pcm = np.array(fast.decode_step(codes, state))
        assert np.abs(pcm).max() > 0
        assert _rel(got["pcm"].reshape(pcm.shape), pcm) < 2e-5, i
        assert set(prog.carries_out.values()) == set(dec_shapes)
        for name, key in prog.carries_out.items():
            assert _rel(got[name], np.array(state.dec[key])) < 2e-5, (i, key)


@pytest.fixture
def program_kernel(monkeypatch):
    """mimi_cuda's kernels replaced by their program run with numpy: the kinds of the calls."""
    calls: list[str] = []

    def make_kernel(prog, kind, parts):
        assert parts == Kernels().mimi_parts  # the policy's default reaches the kernel
        names = mimi_cuda._input_names(prog, kind)
        outs = mimi_cuda._output_names(prog)

        def call(inputs, grid, threadgroup, output_shapes, output_dtypes):
            assert grid[0] == threadgroup[0] * 3
            named = dict(zip(names, inputs, strict=True))
            res = mimi_cuda.reference_step(prog, named, int(named["off"].item()))
            calls.append(kind)
            assert [tuple(s) for s in output_shapes[:-1]] == [tuple(res[n].shape) for n in outs[:-1]]
            return [mx.array(res[n]) for n in outs[:-1]] + [
                mx.zeros(output_shapes[-1], dtype=output_dtypes[-1])
            ]

        return call

    monkeypatch.setattr(mimi_cuda, "make_kernel", make_kernel)
    monkeypatch.setattr(mimi_cuda, "sm_count", lambda: 3)
    return calls


def test_compiled_mimi_steps_through_the_kernel_program(
    tmp_path_factory, oracle, program_kernel, monkeypatch
):
    frames = _frames(oracle, 2, 7, seed=6)
    _, plain = oracle.pair(tmp_path_factory, tiny(), seed=7)
    ref = CompiledMimi(plain, OPS)
    ref_state = ref.make_state(2)
    want = []
    for f in frames:
        c = ref.encode_step(f, ref_state)
        want.append((np.array(c), np.array(ref.decode_step(c, ref_state))))
    assert not program_kernel
    _, mimi = oracle.pair(tmp_path_factory, tiny(), seed=7)
    fast = CompiledMimi(mimi, Kernels(mimi=True))
    graphs = CompiledMimi(mimi, OPS)
    assert fast.kernels is not None and graphs.kernels is None
    state = fast.make_state(2)
    for i, f in enumerate(frames):
        # frames 2 and 3 on the MLX graphs: the same carries serve both paths
        codec = graphs if i in (2, 3) else fast
        c = codec.encode_step(f, state)
        pcm = np.array(codec.decode_step(c, state))
        np.testing.assert_array_equal(np.array(c), want[i][0], err_msg=f"frame {i}")
        assert _rel(pcm, want[i][1]) < 2e-5, i
    assert program_kernel == ["enc", "dec"] * 5
    assert len(fast.kernels._programs) == 2  # one program per direction and batch, reused
    # per-stage timings read from the scratch (zeros from the stand-in), stage descriptions
    enc_prog = fast.kernels.last["enc"][0]
    assert len(fast.kernels.stage_us("enc")) == len(enc_prog.stages)
    slow = fast.kernels.slowest("dec", 3)
    assert len(slow) == 3 and all(isinstance(d, str) and d for _, _, d in slow)
    assert mimi_cuda.describe(enc_prog.stages[0]).startswith("zero carry mat:cols:")
    # a barrier that gave up (flag word 2) voids the results and resets the counters
    assert not fast.kernels.timed_out()
    fast.kernels.bars["dec"] = mx.array([0, 0, 1, 0], dtype=mx.uint32)
    assert fast.kernels.timed_out() and not fast.kernels.timed_out()


def test_supported_covers_the_released_codec():
    mimi = Mimi(mimi_202407())
    assert mimi_cuda.covers(mimi, 1) and mimi_cuda.covers(mimi, mimi_cuda.MAX_BATCH)
    assert not mimi_cuda.covers(mimi, mimi_cuda.MAX_BATCH + 1)
    mimi.set_dtype(mx.bfloat16)
    assert not mimi_cuda.covers(mimi, 1)


def test_released_codec_programs_write_every_carry():
    mimi = Mimi(mimi_202407())
    mimi.prepare()
    fast = CompiledMimi(mimi)
    enc_shapes, dec_shapes = fast._carry_shapes(1)
    enc = mimi_cuda.encoder_program(mimi, 1, _fixed({}, enc_shapes))
    dec = mimi_cuda.decoder_program(mimi, 1, _fixed({}, dec_shapes), 8)
    for prog, shapes in ((enc, enc_shapes), (dec, dec_shapes)):
        assert {k: prog.outputs[n][0] for n, k in prog.carries_out.items()} == shapes
        assert set(prog.carries_in.values()) == set(shapes)
    # stages: SEANet 1 + 4 x 3 + 1 (zeroing with the first), 8 layers x 5, downsample, RVQ
    # projections, 7 searches and the last reduction; decode: RVQ (+ zeroing), upsample, 8 x 5,
    # SEANet 1 + 4 x 3 + 1
    assert len(enc.stages) == 14 + 40 + 1 + 1 + 8
    assert len(dec.stages) == 2 + 40 + 14
    assert enc.outputs["codes"][0] == (1, 8, 1) and dec.outputs["pcm"][0] == (1, 1920, 1)


def _stage_blocks(text: str) -> list[str]:
    return re.split(r"(?=  // stage \d+\n)", text)[1:]


@pytest.mark.parametrize(("parts", "batch"), [(2, 1), (4, 1), (7, 1), (4, 5)])
def test_released_codec_kernels_in_parts_run_every_stage_once_in_order(parts, batch):
    """`Emit.split`: the parts hold the stages of the one-piece body, each once and in order, cut
    about evenly, and the kernel calls the parts in order with the state they declare."""
    from rolekit.codec.mimi_emit import Emit

    mimi = Mimi(mimi_202407())
    mimi.prepare()
    enc_shapes, dec_shapes = CompiledMimi(mimi)._carry_shapes(batch)
    enc = mimi_cuda.encoder_program(mimi, batch, _fixed({}, enc_shapes))
    dec = mimi_cuda.decoder_program(mimi, batch, _fixed({}, dec_shapes), 8)
    for prog in (enc, dec):
        emit = Emit(prog)
        whole = emit.source()
        body, bodies = emit.split(parts)
        assert len(bodies) == parts
        stages = [b for part in bodies for b in _stage_blocks(part)]
        assert stages == _stage_blocks(whole) and len(stages) == len(prog.stages)
        sizes = [sum(map(len, _stage_blocks(part))) for part in bodies]
        assert max(sizes) < 2 * sum(sizes) / parts
        names = ", ".join(n for _, n in emit.part_params())
        assert re.findall(r"rolekit_part_(\d+)\(ROLEKIT_KERNEL_ARGS, ([^)]*)\);", body) == [
            (str(i), names) for i in range(parts)
        ]
        assert body.startswith(whole[: whole.index("  stamp(")])  # the one-piece kernel's opening
        for name in ("res", "wbd", "sel") if prog is enc else ("vq",):
            assert name in names
        # the part's declarations match the kernel's shared arrays (rows of res [B][QD] etc.)
        decls = dict((n, d) for d, n in emit.part_params())
        if prog is enc:
            qd = prog.search["qd"]
            assert f"res[{batch}][{qd}]" in body and decls["res"] == f"float (*res)[{qd}]"
            assert f"wbd[NW][2][{batch}]" in body and decls["wbd"] == f"float (*wbd)[2][{batch}]"


def test_the_kernel_policy_picks_how_many_parts_mimi_kernels_compile_in():
    from rolekit.errors import ConfigError

    assert Kernels().mimi_parts == 4 and Kernels.for_device(overrides="mimi_parts=1").mimi_parts == 1
    for bad in ("0", "17", "two"):
        with pytest.raises(ConfigError, match="mimi_parts"):
            Kernels.for_device(overrides=f"mimi_parts={bad}")


def test_mimi_rows_check_compares_a_batch_with_its_rows_alone():
    """`check_mimi_rows` on the tiny codec: a batch of 3 streams gives each row's codes and audio
    of that row stepped alone (here on MLX's graphs; on a GPU through the kernels)."""
    from tests.codec.check_mimi_kernels import check_mimi_rows

    res = check_mimi_rows(batch=3, frames=3, size="tiny")
    assert res["ok"] and res["codes_agree"] == 1.0 and res["pcm_rel_err_max"] < 1e-5
    assert res["one_kernel_steps"] is False


def test_mimi_kernel_check_runs_and_compares_codes_and_audio():
    """`check_mimi_kernels` on the tiny codec: both sides are MLX's ops here (no CUDA), so the
    codes agree and the audio is identical; on the GPU one side runs the kernels."""
    from tests.codec.check_mimi_kernels import check_mimi_kernels

    res = check_mimi_kernels(frames=3, size="tiny")
    assert res["ok"] and res["codes_agree"] == 1.0 and res["pcm_rel_err_max"] == 0.0
    assert res["one_kernel_steps"] is False and res["stage_us"] == {}  # no CUDA: no Mimi kernel


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 4])
def test_mimi_kernels_on_cuda_match_the_ops(batch, tmp_path, monkeypatch):
    """Full-size Mimi: the one-kernel encode / decode steps against MLX's ops over 30 frames (the
    kernels compiled here, in their default 4 parts, linked)."""
    from rolekit import notices
    from rolekit.nn import cubins, jitlink
    from tests.codec.check_mimi_kernels import check_mimi_kernels

    assert jitlink.library_path() is not None
    monkeypatch.setattr(cubins, "CACHE", cubins.BinaryCache(tmp_path))  # compiled, not read
    notices.reset()
    res = check_mimi_kernels(frames=30, size="full", batch=batch)
    assert res["one_kernel_steps"] and res["ok"], res
    assert "kernel-link" not in notices.said()  # the default kernels in parts were linked


@pytest.mark.gpu
def test_mimi_kernels_in_one_piece_on_cuda_match_the_ops():
    from tests.codec.check_mimi_kernels import check_mimi_kernels

    one_piece = Kernels.for_device(overrides={"mimi_parts": 1})
    res = check_mimi_kernels(frames=30, size="full", batch=1, kernels=one_piece)
    assert res["one_kernel_steps"] and res["ok"], res


@pytest.mark.gpu
def test_mimi_graph_kernels_on_cuda_match_the_ops():
    """Mimi's compiled graphs with `nn.fused` and `codec.conv_cuda` (the one-kernel steps off)."""
    from rolekit.nn.kernels import Kernels
    from tests.codec.check_mimi_kernels import check_mimi_kernels

    res = check_mimi_kernels(frames=30, size="full", kernels=Kernels.for_device(overrides={"mimi": False}))
    assert not res["one_kernel_steps"] and res["ok"], res


@pytest.mark.gpu
def test_mimi_kernels_on_cuda_give_each_row_its_own_result():
    from tests.codec.check_mimi_kernels import check_mimi_rows

    res = check_mimi_rows(batch=16, frames=6, size="full")
    assert res["one_kernel_steps"] and res["ok"], res
