"""rolekit.ptfile.read_pt: the one .pt reader, for voices (untrusted input) and for conversion."""

from __future__ import annotations

import io
import pickle
import sys

import numpy as np
import pytest

from rolekit.errors import ModelError
from rolekit.ptfile import read_pt


def _voice_bytes():
    import torch

    data = {
        "embeddings": torch.arange(12, dtype=torch.float32).reshape(3, 1, 1, 4).to(torch.bfloat16),
        "cache": torch.arange(68, dtype=torch.int64).reshape(1, 17, 4),
        "half": torch.ones(2, dtype=torch.float16),
    }
    buf = io.BytesIO()
    torch.save(data, buf)
    return buf.getvalue()


@pytest.mark.torch
def test_path_and_bytes_give_the_same_arrays(tmp_path):
    data = _voice_bytes()
    (tmp_path / "v.pt").write_bytes(data)
    for got in (read_pt(tmp_path / "v.pt"), read_pt(data, "voices.tgz:v.pt")):
        assert set(got) == {"embeddings", "cache", "half"}
        assert got["embeddings"].dtype == np.float32 and got["embeddings"].shape == (3, 1, 1, 4)
        assert got["embeddings"].ravel().tolist() == list(range(12))  # bf16 -> fp32 is exact
        assert got["cache"].dtype == np.int64 and got["cache"][0, 16, 3] == 67
        assert got["half"].dtype == np.float16


@pytest.mark.torch
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "not a readable .pt file"),
        (b"PK\x03\x04garbage", "not a readable .pt file"),
        ("truncated", "not a readable .pt file"),
        ("list", "expected a dict of named tensors, found a list"),
        ("dict of ints", "expected a dict of named tensors"),
    ],
)
def test_damaged_files_name_the_file(tmp_path, payload, message):
    import torch

    if payload == "truncated":
        payload = _voice_bytes()[:-200]
    elif payload == "list":
        buf = io.BytesIO()
        torch.save([torch.zeros(2)], buf)
        payload = buf.getvalue()
    elif payload == "dict of ints":
        buf = io.BytesIO()
        torch.save({"embeddings": 3}, buf)
        payload = buf.getvalue()
    path = tmp_path / "NATF2.pt"
    path.write_bytes(payload)
    with pytest.raises(ModelError, match=message) as info:
        read_pt(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    with pytest.raises(ModelError, match=message) as info:
        read_pt(payload, "voices.tgz:NATF2.pt")
    assert str(info.value).startswith("voices.tgz:NATF2.pt: ")


@pytest.mark.torch
def test_pickled_code_never_runs(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"embeddings": Evil()}, protocol=2))
    with pytest.raises(ModelError, match="not a readable .pt file"):
        read_pt(path)
    assert not (tmp_path / "pwned").exists()


def test_without_torch_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ModelError, match=r"needs torch .*rolekit\[convert\].*rolekit convert") as info:
        read_pt(tmp_path / "v.pt")
    assert str(info.value).startswith(str(tmp_path / "v.pt"))
