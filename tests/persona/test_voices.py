"""Voice presets, voice files in a model folder, and voice frame counts read without mlx."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from safetensors.numpy import save_file

from rolekit.errors import ModelError
from rolekit.frames import VOICES as FRAME_VOICES
from rolekit.persona.voices import VOICES, safetensors_header, voice_file, voice_frames


def test_eighteen_presets_with_descriptions() -> None:
    assert tuple(VOICES) == FRAME_VOICES and len(VOICES) == 18
    assert VOICES["NATF2"].gender == "female" and VOICES["NATF2"].style == "natural"
    assert VOICES["VARM4"].gender == "male" and VOICES["VARM4"].style == "varied"
    assert sum(v.gender == "female" for v in VOICES.values()) == 9
    assert all(v.gender in v.description and v.style in v.description for v in VOICES.values())


def test_voice_file_prefers_safetensors(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "NATF2.pt").write_bytes(b"pt")
    assert voice_file(tmp_path, "NATF2") == voices / "NATF2.pt"
    (voices / "NATF2.safetensors").write_bytes(b"st")
    assert voice_file(tmp_path, "natf2") == voices / "NATF2.safetensors"
    mine = tmp_path / "mine.wav"
    mine.write_bytes(b"")
    assert voice_file(tmp_path, str(mine)) == mine


def test_voice_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="no such preset"):
        voice_file(tmp_path, "NATM0")
    (tmp_path / "voices.tgz").write_bytes(b"not a tar archive")
    with pytest.raises(ModelError, match="cannot unpack the voice presets"):
        voice_file(tmp_path, "NATM0")
    assert not list((tmp_path / "cache" / "voices").iterdir())  # nothing half-unpacked is left
    with pytest.raises(ModelError, match="NATF0, NATF1"):
        voice_file(tmp_path, "NOPE1")
    with pytest.raises(ModelError, match="not found"):
        voice_file(tmp_path, str(tmp_path / "gone.pt"))


def test_presets_are_unpacked_from_nvidia_voices_tgz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import tarfile

    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    with tarfile.open(model / "voices.tgz", "w:gz") as tar:
        for name, data in (
            ("voices/NATF2.pt", b"natf2"),
            ("voices/._NATF2.pt", b"junk"),
            ("../evil.pt", b"x"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = voice_file(model, "NATF2")
    assert path.name == "NATF2.pt" and path.read_bytes() == b"natf2"
    assert path.is_relative_to(tmp_path / "cache" / "voices")
    assert sorted(p.name for p in path.parent.iterdir()) == ["NATF2.pt", "evil.pt"]  # names only, no paths
    assert voice_file(model, "natf2") == path  # unpacked once, then reused
    with pytest.raises(ModelError, match="no such preset"):
        voice_file(model, "NATM0")


def test_frames_from_safetensors_header(tmp_path: Path) -> None:
    path = tmp_path / "v.safetensors"
    save_file(
        {"embeddings": np.zeros((48, 1, 1, 16), np.float32), "cache": np.zeros((1, 17, 4), np.int64)},
        str(path),
    )
    assert safetensors_header(path)["embeddings"]["shape"] == [48, 1, 1, 16]
    assert voice_frames(path) == 49  # 48 stored embeddings + the priming call
    codes = tmp_path / "c.safetensors"
    save_file({"codes": np.zeros((8, 37), np.int32)}, str(codes))
    assert voice_frames(codes) == 37
    other = tmp_path / "o.safetensors"
    save_file({"weights": np.zeros((3,), np.float32)}, str(other))
    with pytest.raises(ModelError, match="no 'embeddings'"):
        voice_frames(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ModelError, match="not a valid .safetensors"):
        voice_frames(junk)


def test_frames_from_wav(tmp_path: Path) -> None:
    path = tmp_path / "v.wav"
    soundfile.write(str(path), np.zeros(16000, np.float32), 16000)  # 1 s -> 24000 samples at 24 kHz
    assert voice_frames(path) == 13  # ceil(24000 / 1920), last frame zero-padded


@pytest.mark.torch
def test_frames_from_pt(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "NATF1.pt"
    torch.save(
        {"embeddings": torch.zeros(48, 1, 1, 8), "cache": torch.zeros(1, 17, 4, dtype=torch.long)}, str(path)
    )
    assert voice_frames(path) == 49  # 48 stored embeddings + the priming call
    bad = tmp_path / "bad.pt"
    torch.save({"something": torch.zeros(2)}, str(bad))
    with pytest.raises(ModelError, match="not a PersonaPlex voice"):
        voice_frames(bad)


def test_pt_without_torch_says_how_to_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ModelError, match="rolekit convert"):
        voice_frames(tmp_path / "x.pt")
