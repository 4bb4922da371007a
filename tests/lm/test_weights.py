"""Weights: key sets, NVIDIA and MLX layouts, config round trips, errors for corrupt checkpoints."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from rolekit.errors import ModelError
from rolekit.lm.checkpoint import SafetensorsFile
from rolekit.lm.config import LmConfig, from_mlx_config, personaplex_7b, tiny
from rolekit.lm.weights import lm_tensors, load_lm, nvidia_keys, save_lm_mlx


def test_personaplex_7b_sizes():
    cfg = personaplex_7b()
    assert (cfg.hidden, cfg.depformer_hidden, cfg.head_dim) == (11264, 2816, 128)
    assert (cfg.dep_q, cfg.n_q, cfg.context, cfg.norm_eps) == (16, 16, 3000, 1e-8)
    keys = nvidia_keys(cfg)
    assert len(keys) == 475
    assert keys["depformer.layers.0.self_attn.in_proj_weight"] == (49152, 1024)
    assert keys["transformer.layers.31.gating.linear_in.weight"] == (22528, 4096)
    assert keys["out_norm.alpha"] == (1, 1, 4096)
    assert keys["depformer_emb.14.weight"] == (2049, 1024)


@pytest.mark.oracle
def test_7b_key_set_equals_kyutai_meta_model(oracle):
    """Kyutai's LMModel for the 7B config with dep_q 16 (PersonaPlex), on the meta device."""
    oracle.torch()
    from moshi.models.lm import LMModel
    from moshi.models.loaders import _lm_kwargs

    model = LMModel(**{**_lm_kwargs, "dep_q": 16}, device="meta")
    ref = {k: tuple(v.shape) for k, v in oracle.state_dict(model).items()}
    assert len(ref) == 475
    assert ref == nvidia_keys(personaplex_7b())
    assert LmConfig.from_kyutai({**_lm_kwargs, "dep_q": 16}) == personaplex_7b()


def test_kyutai_config_round_trip():
    cfg = tiny(context=7, num_layers=3)
    assert LmConfig.from_kyutai(cfg.to_kyutai()) == cfg
    blocks = {
        "temporal": {"dim": 4096, "num_layers": 32},
        "depformer": {"num_steps": 16, "dim_feedforward": 2816, "context": 8},
    }
    assert from_mlx_config(blocks) == personaplex_7b()


def test_aufklarer_config_json_reads_as_personaplex_7b():
    # config.json exactly as aufklarer/PersonaPlex-7B-MLX-4bit's converter writes it
    # (soniqo/speech-swift scripts/convert_personaplex.py, make_config): note `temporal.n_q: 8`,
    # the codebooks of one stream, and the gated hidden size as `dim_feedforward`.
    config = {
        "model_type": "personaplex",
        "version": "personaplex-7b-v1",
        "base_model": "kyutai/moshiko-pytorch-bf16",
        "temporal": {
            "dim": 4096,
            "num_layers": 32,
            "num_heads": 32,
            "hidden_scale": 4.125,
            "n_q": 8,
            "card": 2048,
            "text_card": 32000,
            "context": 3000,
            "max_period": 10000,
        },
        "depformer": {
            "dim": 1024,
            "num_layers": 6,
            "num_heads": 16,
            "dim_feedforward": 2816,
            "num_steps": 16,
            "card": 2048,
            "text_card": 32000,
            "context": 8,
            "weights_per_step": True,
            "multi_linear": True,
        },
        "mimi": {"sample_rate": 24000, "frame_rate": 12.5, "num_codebooks": 16, "codebook_size": 2048},
        "sampling": {"audio_temp": 0.8, "audio_top_k": 250, "text_temp": 0.7, "text_top_k": 25},
        "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
        "quantization": {"bits": 4, "group_size": 64, "quantized_components": ["temporal", "depformer"]},
        "voices": ["NATF0", "NATF1"],
    }
    assert from_mlx_config(config) == personaplex_7b()


def test_unsupported_kyutai_config_names_the_field():
    with pytest.raises(ModelError) as err:
        LmConfig.from_kyutai({**tiny().to_kyutai(), "gating": "gelu", "norm": "layer_norm"})
    fields = {p.field for p in err.value.problems}
    assert fields == {"gating", "norm"}


def _params(lm) -> dict[str, np.ndarray]:
    return {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(lm.parameters())}


@pytest.fixture(scope="module")
def saved(tiny_oracle):
    return tiny_oracle


def test_mlx_layout_round_trip_exact(saved, tmp_path):
    sizes = save_lm_mlx(lm_tensors(saved.lm), tmp_path, saved.cfg, bits=None)
    assert set(sizes) == {"temporal.safetensors", "depformer.safetensors", "embeddings.safetensors"}
    temporal = SafetensorsFile(tmp_path / "temporal.safetensors").shapes
    assert temporal["layers.0.norm1.alpha"] == (1, 1, 64)
    assert "layers.1.self_attn.in_proj_weight" in temporal and "out_norm.alpha" in temporal
    dep = SafetensorsFile(tmp_path / "depformer.safetensors").shapes
    assert dep["layers.0.self_attn.in_proj_weight"] == (16 * 3 * 64, 64)
    assert "depformer_in.15.weight" in dep and "layers.1.gating.15.linear_out.weight" in dep
    emb = SafetensorsFile(tmp_path / "embeddings.safetensors").shapes
    assert {"text_emb.weight", "linears.15.weight", "depformer_text_emb.weight", "text_linear.weight"} <= set(
        emb
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "personaplex" and "quantization" not in config
    a, b = _params(saved.lm), _params(load_lm(tmp_path))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_mlx_layout_16_bit_is_close(saved, tmp_path):
    save_lm_mlx(lm_tensors(saved.lm), tmp_path, saved.cfg, bits=16)
    assert (
        SafetensorsFile(tmp_path / "temporal.safetensors").dtype("layers.0.gating.linear_in.weight") == "BF16"
    )
    a, b = _params(saved.lm), _params(load_lm(tmp_path))
    assert all(np.allclose(a[k], b[k], rtol=1e-2, atol=1e-2) for k in a)


def test_quantized_mlx_layout_names(saved, tmp_path):
    save_lm_mlx(lm_tensors(saved.lm), tmp_path, saved.cfg, bits=4)
    t = SafetensorsFile(tmp_path / "temporal.safetensors")
    assert t.dtype("layers.0.self_attn.in_proj_weight") == "U32"
    assert t.shapes["layers.0.self_attn.in_proj_weight"] == (192, 64 * 4 // 32)
    assert t.dtype("layers.0.self_attn.in_proj_scales") == "F16"
    assert t.shapes["layers.0.self_attn.out_proj.biases"] == (64, 1)
    d = SafetensorsFile(tmp_path / "depformer.safetensors")
    assert d.shapes["layers.0.self_attn.in_proj_weight"] == (16 * 192, 8)  # one stacked matrix
    assert d.dtype("depformer_in.3.weight") == "U32" and "layers.1.gating.15.linear_in.scales" in d.shapes
    e = SafetensorsFile(tmp_path / "embeddings.safetensors")
    assert all(e.dtype(k) != "U32" for k in e.keys())  # embeddings and heads stored 16-bit
    q = json.loads((tmp_path / "config.json").read_text())["quantization"]
    assert q == {"bits": 4, "group_size": 64, "quantized_components": ["temporal", "depformer"]}
    lm = load_lm(tmp_path)
    names = {k for k, _ in tree_flatten(lm.parameters())}
    assert "depformer.layers.0.self_attn.in_proj.scales" in names
    assert "text_linear.scales" in names and lm.text_linear.bits == 8  # 8-bit at load off CUDA


# ---------------------------------------------------------------- corrupt checkpoints


def _copy_nvidia(saved, tmp_path, edit) -> None:
    from safetensors.numpy import load_file, save_file

    sd = load_file(str(saved.folder / "model.safetensors"))
    edit(sd)
    save_file(sd, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((saved.folder / "config.json").read_text())


def test_missing_unexpected_and_misshaped_keys_are_all_named(saved, tmp_path):
    def edit(sd):
        del sd["depformer_in.15.weight"]
        del sd["transformer.layers.1.norm2.alpha"]
        sd["bogus.weight"] = np.zeros(3, np.float32)
        sd["linears.0.weight"] = sd["linears.0.weight"][:10]

    _copy_nvidia(saved, tmp_path, edit)
    with pytest.raises(ModelError) as err:
        load_lm(tmp_path)
    by_field = {p.field: p.message for p in err.value.problems}
    assert by_field["depformer_in.15.weight"] == "missing tensor"
    assert by_field["transformer.layers.1.norm2.alpha"] == "missing tensor"
    assert by_field["bogus.weight"] == "unexpected tensor"
    assert "shape [10, 64], expected [64, 64]" in by_field["linears.0.weight"]
    assert "depformer_in.15.weight" in str(err.value)


def test_wrong_config_for_checkpoint_is_a_model_error(saved, tmp_path):
    _copy_nvidia(saved, tmp_path, lambda sd: None)
    (tmp_path / "config.json").write_text(json.dumps({"lm_kwargs": tiny(num_layers=3).to_kyutai()}))
    with pytest.raises(ModelError, match="transformer.layers.2.norm1.alpha"):
        load_lm(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a safetensors file"), (b"garbage!" * 4, "not a safetensors file"), (None, "truncated")],
)
def test_unreadable_files(saved, tmp_path, content, message):
    path = tmp_path / "model.safetensors"
    if content is None:
        data = (saved.folder / "model.safetensors").read_bytes()
        path.write_bytes(data[: len(data) - 100])
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_lm(tmp_path)


def test_missing_folder_files_and_bad_json(saved, tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        load_lm(tmp_path / "nope")
    with pytest.raises(ModelError, match="no LM weights"):
        load_lm(tmp_path)
    save_lm_mlx(lm_tensors(saved.lm), tmp_path, saved.cfg)
    (tmp_path / "depformer.safetensors").unlink()
    with pytest.raises(ModelError, match="depformer.safetensors"):
        load_lm(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="invalid JSON"):
        load_lm(tmp_path)


def test_mlx_layout_missing_tensor(saved, tmp_path):
    save_lm_mlx(lm_tensors(saved.lm), tmp_path, saved.cfg, bits=8)
    d = mx.load(str(tmp_path / "depformer.safetensors"))
    del d["layers.0.gating.7.linear_in.scales"]
    mx.save_safetensors(str(tmp_path / "depformer.safetensors"), d)
    with pytest.raises(ModelError) as err:
        load_lm(tmp_path)
    # Without its scales the layer is read as unquantized: both views are reported, no KeyError.
    assert any(
        p.field and p.field.startswith("depformer.layers.0.gating.7.linear_in") for p in err.value.problems
    )
