"""GPU only (`-m gpu`, deselected elsewhere): on the full-size random model (random-7b, built once
under $ROLEKIT_CACHE, ~17 GB), rolekit's CUDA kernel path against the plain MLX op path.

Teacher-forced: both paths step from the same engine state every frame (the op-path engine is
restored to the kernel engine's state before each step), greedy, so each step's tokens are the
top-1 of that step's logits: the text token must agree >= 99 %. The 8 agent codebooks of a frame
are drawn one after another, each from the code before, so one flipped near-tie changes the rest
of the frame: their frame agreement is printed, and the depformer is compared teacher-forced
inside the frame too (both paths given the op path's codes; `depformer_cuda.launch` keeps its
logits): top-1 must agree >= 99 % on the codebooks whose op-path top-2 margin exceeds two bf16
steps of the largest logit (random weights leave the rest near-ties), with the logits' relative
error printed. So is the relative error of one step's text logits (embedding kernel on vs off,
same cache, eager temporal path).

Run on the GPU machine: `python -m pytest -q -s -m gpu tests/engine/test_gpu_kernel_path.py`.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

STEPS = 120
DEP_FRAMES = 32  # depformer frames compared teacher-forced
BF16_STEP = 2.0**-8  # bf16's relative spacing (8 bits of significand)


@pytest.mark.parametrize("quant", ["q4", "bf16"])
def test_kernel_path_equals_op_path_teacher_forced_on_random_7b(quant):
    import mlx.core as mx

    from rolekit import models
    from rolekit.engine.engine import Engine
    from rolekit.lm.sampling import SamplingParams
    from rolekit.nn.kernels import Kernels
    from rolekit.persona.compile import compile_persona
    from rolekit.persona.schema import Persona

    assert mx.default_device() != mx.cpu and not mx.metal.is_available(), "needs a CUDA GPU"
    bundle = models.load("random-7b", models.LoadOptions(quant=quant))
    assert bundle.lm.dtype == mx.bfloat16
    plan = compile_persona(
        Persona(name="gpu", prompt="You enjoy having a good conversation."), {}, bundle.tokenizer
    )
    voice = models.load_voice(bundle, plan.voice)
    greedy = SamplingParams(greedy=True)
    policy = Kernels.for_device()
    assert policy.temporal and policy.depformer, policy
    kern = Engine(bundle, batch=1, params=greedy, seed=0, kernels=policy)
    kern.prefill([plan], [voice])
    ops = Engine(bundle, batch=1, params=greedy, seed=0, kernels=Kernels())  # the MLX op path
    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal((STEPS, 1, 1920))).astype(np.float32)
    agree_text, agree_audio = [], []
    for i in range(STEPS):
        ops.restore(kern.snapshot())
        b = ops.step(pcm[i])
        a = kern.step(pcm[i])
        if i >= 2:  # the first two calls only prime the delays
            agree_text.append(int(a.text[0]) == int(b.text[0]))
            agree_audio.append(np.mean(np.asarray(a.audio[0]) == np.asarray(b.audio[0])))
    text, audio = float(np.mean(agree_text)), float(np.mean(agree_audio))
    # the text logits of one step from one cache state: embedding kernel on and off, eager temporal
    toks = mx.array(rng.integers(0, 2048, (1, 17, 1)).astype(np.int32))
    logits = {}
    for on, k in ((True, policy), (False, Kernels())):
        cache = bundle.lm.make_cache(1)
        cache.restore(kern.snapshot().lm)
        logits[on] = np.array(bundle.lm.temporal(bundle.lm.embed(toks, k), cache)[1].astype(mx.float32))
    rel = float(np.abs(logits[True] - logits[False]).max() / np.abs(logits[False]).max())
    dep = _depformer_teacher_forced(bundle, kern, rng)
    print(
        f"\nrandom-7b {quant}: teacher-forced top-1 text {text:.4f}, agent codes per frame {audio:.4f}, "
        f"text logit rel err {rel:.2e}; depformer forced inside the frame: top-1 {dep['all']:.4f} "
        f"over {dep['n']} codebooks, {dep['decisive']:.4f} over the {dep['n_decisive']} with a margin "
        f"> 2 bf16 steps, logit rel err {dep['rel']:.2e} (max), first codebook {dep['first']:.4f}"
    )
    assert text >= 0.99 and dep["decisive"] >= 0.99
    assert rel < 0.05


def _depformer_teacher_forced(bundle, kern, rng) -> dict:
    """The depformer kernel against the op path on DEP_FRAMES frames of hidden states from the
    real model (random input tokens over the kernel engine's cache), both given the op path's
    greedy codes: per codebook top-1 agreement, overall and where the op path's top-2 margin
    exceeds 2 bf16 steps of its largest logit, and the logits' largest relative error."""
    import mlx.core as mx

    from rolekit.lm import depformer_cuda
    from rolekit.lm.sampling import SamplingParams
    from rolekit.nn.kernels import Kernels

    lm, n = bundle.lm, 8
    greedy = SamplingParams(greedy=True)
    cache = lm.make_cache(1)
    cache.restore(kern.snapshot().lm)
    agree, decisive, first, rels = [], [], [], []
    for _ in range(DEP_FRAMES):
        toks = mx.array(rng.integers(0, 2048, (1, 17, 1)).astype(np.int32))
        hidden, text_logits = lm.temporal(lm.embed(toks, Kernels()), cache)
        hidden, text = hidden[:, -1], mx.argmax(text_logits[:, -1], axis=-1)
        free = mx.full((1, lm.cfg.dep_q), -1, dtype=mx.int32)
        codes = lm.depformer(hidden, text, free, greedy, None, n, Kernels())  # [1, dep_q], the op path's
        ops = np.array(lm.depformer_logits(hidden, text, codes)[0, :n].astype(mx.float32))  # [n, card]
        _, scratch = depformer_cuda.launch(lm, hidden, text, codes[:, :n], greedy, None, n)
        kern_logits = np.array(depformer_cuda.logits_of(lm, scratch, 1, n)[0])
        top2 = np.sort(ops, axis=-1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        same = np.argmax(kern_logits, axis=-1) == np.argmax(ops, axis=-1)
        agree += list(same)
        decisive += list(same[margin > 2 * BF16_STEP * np.abs(ops).max(axis=-1)])
        first.append(bool(same[0]))
        rels.append(float(np.abs(kern_logits - ops).max() / np.abs(ops).max()))
    return {
        "n": len(agree),
        "all": float(np.mean(agree)),
        "n_decisive": len(decisive),
        "decisive": float(np.mean(decisive)) if decisive else 0.0,
        "first": float(np.mean(first)),
        "rel": max(rels),
    }
