"""Audio input for the codec: any rate, stereo, int / float WAV; clear errors for bad audio."""

import numpy as np
import pytest
import soundfile as sf

from rolekit.audio.loudness import normalize_lufs
from rolekit.audio.wav import check_audio, prepare, read_audio, write_wav
from rolekit.errors import AudioInputError


def _sine(sr: int, seconds: float = 0.5, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 24000, 44100, 48000])
def test_any_rate_is_resampled_to_24k(tmp_path, sr):
    path = tmp_path / "a.wav"
    sf.write(path, _sine(sr), sr)
    pcm = read_audio(path)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert abs(len(pcm) - 12000) <= 2
    # still a 440 Hz tone of amplitude ~0.5 after resampling
    spec = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spec) * 24000 / len(pcm) - 440) < 5
    assert 0.45 < np.abs(pcm[1000:-1000]).max() < 0.55


@pytest.mark.parametrize(
    "subtype, atol",
    [("PCM_U8", 1e-2), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-6), ("FLOAT", 0), ("DOUBLE", 0)],
)
def test_int_and_float_wav(tmp_path, subtype, atol):
    path = tmp_path / "a.wav"
    x = _sine(24000)
    sf.write(path, x, 24000, subtype=subtype)
    assert sf.info(path).subtype == subtype
    np.testing.assert_allclose(read_audio(path), x, atol=atol)


def test_stereo_is_downmixed(tmp_path):
    path = tmp_path / "st.wav"
    left, right = _sine(24000, f=300), _sine(24000, f=500)
    sf.write(path, np.stack([left, right], axis=1), 24000, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(path), (left + right) / 2, atol=1e-6)
    kept = read_audio(path, mono=False)
    assert kept.shape == (12000, 2)


def test_empty_nan_inf_and_unreadable_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 24000)
    with pytest.raises(AudioInputError, match="empty"):
        read_audio(empty)
    for bad in (np.nan, np.inf, -np.inf):
        x = _sine(24000)
        x[100] = bad
        path = tmp_path / "bad.wav"
        sf.write(path, x, 24000, subtype="FLOAT")
        with pytest.raises(AudioInputError, match="NaN or Inf"):
            read_audio(path)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF nonsense")
    with pytest.raises(AudioInputError, match="cannot read audio"):
        read_audio(junk)
    with pytest.raises(AudioInputError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioInputError, match="mic: the audio is empty"):
        check_audio(np.zeros(0, np.float32), "mic")


def test_prepare_buffers_and_write_round_trip(tmp_path):
    x = np.stack([_sine(48000), _sine(48000)], axis=1)
    y = prepare(x, 48000)
    assert y.shape == (12000,) and y.dtype == np.float32
    out = write_wav(tmp_path / "sub" / "o.wav", y)
    assert out.exists() and not list(out.parent.glob(".*tmp"))
    np.testing.assert_allclose(read_audio(out), y, atol=1e-4)


def test_normalize_lufs_hits_target():
    import pyloudnorm

    x = _sine(24000, seconds=2.0) * 0.05
    y = normalize_lufs(x, 24000, -24.0)
    assert pyloudnorm.Meter(24000).integrated_loudness(y.astype(np.float64)) == pytest.approx(-24.0, abs=0.1)
    short = _sine(24000, seconds=0.1)
    np.testing.assert_array_equal(normalize_lufs(short), short)
