"""The load-time precision policy: activation dtype per device, weights never widened, scales kept."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from rolekit.errors import ConfigError
from rolekit.lm import precision as P


@pytest.mark.parametrize(
    ("requested", "device", "expected"),
    [
        ("auto", "cpu", mx.float32),
        ("auto", "cuda", mx.bfloat16),
        ("auto", "metal", mx.bfloat16),
        ("fp16", "cuda", mx.float16),
        ("bf16", "cpu", mx.bfloat16),
        ("fp32", "metal", mx.float32),
    ],
)
def test_activation_dtype_follows_device_and_request(requested, device, expected):
    assert P.activation_dtype(requested, device) == expected


def test_bad_dtype_and_quant_name_the_option():
    with pytest.raises(ConfigError, match="--dtype"):
        P.activation_dtype("float8", "cpu")
    with pytest.raises(ConfigError, match="--quant"):
        P.choose_quant("q3", "cpu", 64.0)


def test_weights_are_never_widened_and_scales_keep_their_dtype():
    # CPU (fp32 activations): 16-bit tables and linears stay 16-bit; norms take fp32.
    assert P.weight_dtype(mx.bfloat16, mx.float32) == mx.bfloat16
    assert P.weight_dtype(mx.bfloat16, mx.float32, norm=True) == mx.float32
    assert P.weight_dtype(mx.float32, mx.float32) == mx.float32
    # GPU (bf16 activations): every float weight in bf16, fp32 ones narrowed.
    assert P.weight_dtype(mx.float32, mx.bfloat16) == mx.bfloat16
    assert P.scales_dtype(mx.float16, mx.float32) == mx.float16
    assert P.scales_dtype(mx.bfloat16, mx.bfloat16) == mx.bfloat16
    # bf16 x fp16 would promote each quantized product to fp32: the scales follow the activations.
    assert P.scales_dtype(mx.float16, mx.bfloat16) == mx.bfloat16


@pytest.mark.parametrize(
    ("device", "memory", "batch", "quant"),
    [
        ("metal", 16.0, 1, "q4"),  # a 16 GB Mac: only q4 fits
        ("cuda", 80.0, 1, "q4"),  # one conversation: bandwidth-bound, q4
        ("cuda", 80.0, 16, "bf16"),  # a batch: bf16 GEMMs beat quantized ones
        ("cuda", 20.0, 16, "q4"),  # ...unless bf16 does not fit with room to spare
        ("cpu", 128.0, 16, "q4"),
    ],
)
def test_quant_auto_decides_from_device_memory_and_batch(device, memory, batch, quant):
    choice = P.choose_quant("auto", device, memory, batch)
    assert choice.quant == quant
    assert device in choice.reason and f"{memory:.0f} GB" in choice.reason
    assert P.choose_quant("q8", device, memory, batch) == P.QuantChoice("q8", "as asked (--quant)")


def _float_dtypes(lm) -> dict[str, mx.Dtype]:
    return {k: v.dtype for k, v in tree_flatten(lm.parameters()) if v.dtype != mx.uint32}


def test_bf16_checkpoint_on_cpu_keeps_bf16_weights_and_runs_fp32(oracle, tmp_path, tokens):
    """fp32 activations from bf16 tables and linears (cast at use), the same numbers as fp32 copies."""
    from rolekit.lm.config import tiny
    from rolekit.lm.weights import load_lm

    cfg = tiny()
    model = oracle.build(cfg, seed=3)
    oracle.save(model, tmp_path, dtype=oracle.torch().bfloat16)
    oracle.write_config(cfg, tmp_path)
    lm = load_lm(tmp_path, mx.float32)
    dtypes = _float_dtypes(lm)
    assert lm.dtype == mx.float32
    assert (
        dtypes["text_emb.weight"] == mx.bfloat16
        and dtypes["transformer.layers.0.gating.linear_in.weight"] == mx.bfloat16
    )
    assert dtypes["out_norm.weight"] == mx.float32
    assert lm.make_cache(1).rings[0].keys.dtype == mx.float32  # unquantized: token-exact vs fp32 references
    seq = mx.array(tokens(cfg, 2, 10).numpy()).astype(mx.int32)
    x = lm.embed(seq)
    assert x.dtype == mx.float32
    h, logits = lm.temporal(x, lm.make_cache(2))
    assert logits.dtype == mx.float32
    # the same weights widened at load give the same activations
    wide = load_lm(tmp_path, mx.float32)
    wide.load_weights([(k, v.astype(mx.float32)) for k, v in tree_flatten(wide.parameters())])
    h2, logits2 = wide.temporal(wide.embed(seq), wide.make_cache(2))
    assert mx.allclose(logits, logits2, atol=1e-5, rtol=1e-5).item()


def test_bf16_activations_keep_every_array_16_bit(tiny_oracle, tokens):
    from rolekit.lm.weights import load_lm

    lm = load_lm(tiny_oracle.folder, mx.bfloat16)
    assert set(_float_dtypes(lm).values()) == {mx.bfloat16}
    cache = lm.make_cache(1)
    assert cache.rings[0].keys.dtype == mx.bfloat16
    h, logits = lm.temporal(
        lm.embed(mx.array(tokens(tiny_oracle.cfg, 1, 10).numpy()).astype(mx.int32)), cache
    )
    assert h.dtype == mx.bfloat16 and logits.dtype == mx.bfloat16


def test_quantized_folder_keeps_fp16_scales_on_cpu_and_bf16_with_bf16_activations(tiny_oracle, tmp_path):
    from rolekit.convert import lm_source
    from rolekit.lm.weights import load_lm, save_lm_mlx

    save_lm_mlx(lm_source(tiny_oracle.folder), tmp_path, tiny_oracle.cfg, bits=4)
    cpu_lm = load_lm(tmp_path, mx.float32)
    cpu = _float_dtypes(cpu_lm)
    scales = [k for k in cpu if k.endswith(".scales")]
    linears = [k for k in scales if k.startswith(("transformer.", "depformer.", "depformer_in."))]
    tables = [k for k in scales if k not in linears]  # quantized at load from the stored bf16 tables
    assert linears and {cpu[k] for k in linears} == {mx.float16}
    assert tables and {cpu[k] for k in tables} == {mx.bfloat16}
    assert cpu_lm.make_cache(1).rings[0].keys.dtype == mx.bfloat16  # quantized, tables stored bf16
    gpu = _float_dtypes(load_lm(tmp_path, mx.bfloat16))
    assert {gpu[k] for k in scales} == {mx.bfloat16} and set(gpu.values()) == {mx.bfloat16}


@pytest.mark.parametrize(
    ("quantized", "device", "bits"),
    [
        (True, "cpu", 8),
        (True, "metal", 8),
        (True, "cuda", None),
        (False, "cpu", None),
        (False, "metal", None),
    ],
)
def test_tables_of_quantized_checkpoints_take_8_bits_off_cuda(quantized, device, bits):
    assert P.table_bits(quantized, device) == bits


def test_quantized_folder_loads_8_bit_embeddings_and_heads_on_cpu(tiny_oracle, tmp_path, tokens):
    """Every embedding and head of a q4 folder is an 8-bit module after a CPU load (the text head's
    product then never widens a 16-bit copy of its weight to fp32); the LM runs in fp32 and stays
    close to the same folder with 16-bit tables (the policy turned off)."""
    import mlx.nn as nn

    from rolekit.convert import lm_source
    from rolekit.lm import weights as W

    save_lm_mlx = W.save_lm_mlx
    save_lm_mlx(lm_source(tiny_oracle.folder), tmp_path, tiny_oracle.cfg, bits=4)
    lm = W.load_lm(tmp_path, mx.float32)
    embeddings = [lm.text_emb, *lm.emb, lm.depformer_text_emb, *lm.depformer_emb]
    heads = [lm.text_linear, *lm.linears]
    assert all(isinstance(e, nn.QuantizedEmbedding) and e.bits == 8 for e in embeddings)
    assert all(isinstance(h, nn.QuantizedLinear) and h.bits == 8 for h in heads)
    seq = mx.array(tokens(tiny_oracle.cfg, 2, 12).numpy()).astype(mx.int32)
    h, logits = lm.temporal(lm.embed(seq), lm.make_cache(2))
    assert h.dtype == mx.float32 and logits.dtype == mx.float32
    original = W.table_bits
    W.table_bits = lambda quantized: None  # the same folder, tables as stored
    try:
        wide = W.load_lm(tmp_path, mx.float32)
    finally:
        W.table_bits = original
    assert not isinstance(wide.text_linear, nn.QuantizedLinear)
    _, ref = wide.temporal(wide.embed(seq), wide.make_cache(2))
    err = float(mx.sqrt(mx.mean((logits - ref) ** 2)) / mx.sqrt(mx.mean(ref**2)))
    agree = float(mx.mean(logits.argmax(-1) == ref.argmax(-1)))
    assert 0 < err < 0.03 and agree >= 0.9, (err, agree)  # the q8 bound of test_quantized


def test_free_memory_is_the_cards_where_mlx_reports_it_else_total_less_active(monkeypatch):
    """On CUDA, MLX reports the card's free memory (other processes' use included): that and MLX's
    own buffer cache; where it does not (Metal), the working set less this process's active memory."""
    gb = P.GB
    monkeypatch.setattr(P.mx, "get_active_memory", lambda: int(10 * gb))
    monkeypatch.setattr(P.mx, "get_cache_memory", lambda: int(2 * gb))
    monkeypatch.setattr(
        P.mx, "device_info", lambda: {"total_memory": int(80 * gb), "free_memory": int(30 * gb)}
    )
    assert P.free_memory_bytes("cuda") == 32 * gb
    monkeypatch.setattr(P.mx, "device_info", lambda: {"max_recommended_working_set_size": int(24 * gb)})
    assert P.free_memory_bytes("metal") == 14 * gb
    monkeypatch.setattr(P, "_available_ram", lambda: 5.0 * gb)
    assert P.free_memory_bytes("cpu") == 5.0 * gb
