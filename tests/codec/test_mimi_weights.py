"""Mimi checkpoint naming: the real key set (318), error reporting, file / folder resolution."""

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file

from rolekit.bench.kyutai_mimi import build_reference, reference_state_dict
from rolekit.codec.config import mimi_202407, tiny
from rolekit.codec.mimi import Mimi
from rolekit.codec.weights import export_kyutai, kyutai_key_shapes, load_mimi, save_mimi
from rolekit.errors import ModelError


def test_real_key_set_equals_kyutai_mimi(oracle):
    from moshi.models.loaders import get_mimi

    ref = get_mimi(None)  # real config, no weights
    ref_shapes = {k: tuple(v.shape) for k, v in reference_state_dict(ref).items()}
    ours = kyutai_key_shapes(Mimi(mimi_202407()))
    assert len(ours) == 318
    assert ours == ref_shapes
    assert "encoder_transformer.transformer.layers.0.self_attn.in_proj_weight" in ours
    assert ours["upsample.convtr.convtr.convtr.weight"] == (512, 1, 4)


@pytest.fixture(scope="module")
def tiny_tensors(oracle):
    return reference_state_dict(build_reference(tiny(), seed=3))


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path, tiny_tensors):
    bad = dict(tiny_tensors)
    del bad["downsample.conv.conv.conv.weight"]
    bad["extra.weight"] = np.zeros(3, dtype=np.float32)
    bad["encoder.model.0.conv.conv.bias"] = np.zeros(5, dtype=np.float32)
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(ModelError) as err:
        load_mimi(path, num_codebooks=4, cfg=tiny())
    msg = str(err.value)
    assert "missing keys (1): downsample.conv.conv.conv.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "encoder.model.0.conv.conv.bias: expected [4], found [5]" in msg


def test_real_config_rejects_a_tiny_checkpoint(tmp_path, tiny_tensors):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_tensors, str(path))
    with pytest.raises(ModelError, match="wrong shape keys"):
        load_mimi(path)


def test_file_and_folder_errors(tmp_path):
    with pytest.raises(ModelError, match="no such Mimi weights file"):
        load_mimi(tmp_path / "nope.safetensors")
    with pytest.raises(ModelError, match="no mimi.safetensors"):
        load_mimi(tmp_path)
    junk = tmp_path / "mimi.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read safetensors"):
        load_mimi(tmp_path)


def test_folder_mlx_name_and_saved_config_round_trip(tmp_path, tiny_tensors, oracle):
    cfg = tiny()
    src = tmp_path / "src.safetensors"
    save_file(tiny_tensors, str(src))
    mimi = load_mimi(src, num_codebooks=4, cfg=cfg)
    # save_mimi writes Kyutai naming plus the config, so load_mimi needs no cfg for a tiny model
    save_mimi(mimi, tmp_path / "model" / "mimi.safetensors")
    again = load_mimi(tmp_path / "model", num_codebooks=4)
    assert again.cfg == cfg
    exported = export_kyutai(again)
    assert set(exported) == set(tiny_tensors)
    for k, v in tiny_tensors.items():
        if k.endswith("_initialized"):  # an unused training flag; we write 1 like real checkpoints
            continue
        np.testing.assert_array_equal(exported[k], v, err_msg=k)
    pcm = mx.array(oracle.make_pcm(1, 2))
    codes = again.encode(pcm)
    np.testing.assert_array_equal(np.array(mimi.encode(pcm)), np.array(codes))
    again.decode(codes)
    # running the model caches derived GEMM weights; they are never exported as checkpoint keys
    assert set(export_kyutai(again)) == set(tiny_tensors)
