"""q8 / q4 (affine, group 64): teacher-forced top-1 agreement and logit error per layer type.

The reference is the fp32 model; each row quantizes one layer type only, `all` quantizes every
linear of temporal and depformer through the real save/load path (embeddings and heads stay 16-bit).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from rolekit.lm.weights import is_quantizable, lm_tensors, load_lm, save_lm_mlx

LAYER_TYPES = {
    "temporal.attn": lambda p: p.startswith("transformer.") and ".self_attn." in p,
    "temporal.ffn": lambda p: p.startswith("transformer.") and ".gating." in p,
    "depformer.attn": lambda p: p.startswith("depformer.") and ".self_attn." in p,
    "depformer.ffn": lambda p: p.startswith("depformer.") and ".gating." in p,
    "depformer_in": lambda p: p.startswith("depformer_in."),
}
# Upper bounds on the relative RMS logit error and lower bounds on top-1 agreement (text, audio).
BOUNDS = {8: (0.03, 0.97), 4: (0.35, 0.65)}


def _logits(lm, seq, hidden_ref):
    b, _, t = seq.shape
    toks = mx.array(seq)
    _, text = lm.temporal(lm.embed(toks), lm.make_cache(b))
    hid = mx.array(hidden_ref.reshape(b * t, -1))
    audio_in = mx.array(seq[:, 1:].transpose(0, 2, 1).reshape(b * t, -1))
    dep = lm.depformer_logits(hid, mx.array(seq[:, 0].reshape(-1)), audio_in)
    return np.array(text), np.array(dep)


def _compare(ref, got):
    err = np.sqrt(np.mean((got - ref) ** 2)) / np.sqrt(np.mean(ref**2))
    return float(err), float((got.argmax(-1) == ref.argmax(-1)).mean())


@pytest.fixture(scope="module")
def setup(tiny_oracle, tokens):
    seq = tokens(tiny_oracle.cfg, batch=2, steps=40).numpy().astype(np.int32)
    lm = tiny_oracle.lm
    hidden, _ = lm.temporal(lm.embed(mx.array(seq)), lm.make_cache(2))
    hidden = np.array(hidden)
    return seq, hidden, _logits(lm, seq, hidden)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_error_per_layer_type(tiny_oracle, setup, bits, tmp_path):
    seq, hidden, (text_ref, dep_ref) = setup
    rows = {}
    for name, pred in LAYER_TYPES.items():
        lm = load_lm(tiny_oracle.folder)
        nn.quantize(
            lm,
            group_size=64,
            bits=bits,
            class_predicate=lambda p, m, pred=pred: pred(p) and hasattr(m, "to_quantized"),
        )
        assert any(k.endswith(".scales") for k, _ in _flat(lm)), name
        rows[name] = _logits(lm, seq, hidden)
    save_lm_mlx(lm_tensors(tiny_oracle.lm), tmp_path, tiny_oracle.cfg, bits=bits)
    rows["all"] = _logits(load_lm(tmp_path), seq, hidden)

    max_err, min_top1 = BOUNDS[bits]
    report = [f"q{bits}: layer type      text err  text top1   audio err  audio top1"]
    for name, (text, dep) in rows.items():
        te, tt = _compare(text_ref, text)
        ae, at = _compare(dep_ref, dep)
        report.append(f"  {name:<16} {te:9.4f} {tt:9.3f} {ae:11.4f} {at:10.3f}")
        # Depformer logits are teacher-forced from the fp32 hidden state, so a temporal layer type
        # only moves text logits and a depformer layer type only audio logits.
        touches_text = not name.startswith("depformer")
        touches_audio = name.startswith("depformer") or name == "all"
        if touches_text:
            assert 0 < te < max_err and tt >= min_top1, (name, te, tt)
        else:
            assert te == 0, name
        if touches_audio:
            assert 0 < ae < max_err and at >= min_top1, (name, ae, at)
        else:
            assert ae == 0, name
    print("\n".join(report))


def test_quantizable_selection():
    assert is_quantizable("transformer.layers.0.self_attn.in_proj.weight", (192, 64))
    assert is_quantizable("depformer_in.3.weight", (64, 64))
    assert not is_quantizable("transformer.layers.0.norm1.weight", (64,))
    assert not is_quantizable("text_linear.weight", (96, 64))
    assert not is_quantizable("emb.0.weight", (65, 64))
    assert not is_quantizable("linears.0.weight", (64, 64))
    assert not is_quantizable("transformer.layers.0.gating.linear_out.weight", (64, 176))


def _flat(lm):
    from mlx.utils import tree_flatten

    return tree_flatten(lm.parameters())
