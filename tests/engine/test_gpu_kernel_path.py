"""GPU only (`-m gpu`, deselected elsewhere): on the full-size random model (random-7b, built once
under $ROLEKIT_CACHE, ~17 GB), rolekit's CUDA kernel path against the plain MLX op path.

Teacher-forced: both paths step from the same engine state every frame (the op-path engine is
restored to the kernel engine's state before each step), greedy, so each step's tokens are the
top-1 of that step's logits: text and the 8 agent codebooks must agree >= 99 %. The relative error
of one step's text logits (embedding kernel on vs off, same cache, eager temporal path) is printed.

Run on the GPU machine: `python -m pytest -q -s -m gpu tests/engine/test_gpu_kernel_path.py`.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

STEPS = 120


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
    print(
        f"\nrandom-7b {quant}: teacher-forced top-1 text {text:.4f}, agent codes {audio:.4f}, text logit rel err {rel:.2e}"
    )
    assert text >= 0.99 and audio >= 0.99
    assert rel < 0.05
