"""TTS with the real espeak-ng: 24 kHz audio, rate changes length, cache by hash, missing backend hint."""

import numpy as np
import pytest

from rolekit.audio import tts
from rolekit.audio.tts import TtsError, TtsRequest, cache_dir, synthesize
from rolekit.scenario.schema import load_scenario
from rolekit.scenario.timeline import build_timeline, render_static
from rolekit.session.scripted import is_voiced


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLEKIT_CACHE", str(tmp_path / "cache"))


def test_espeak_renders_24k_speech_and_caches(monkeypatch):
    req = TtsRequest("Hello, I would like a refund for my order.", backend="espeak-ng", rate=170)
    a = synthesize(req)
    assert a.dtype == np.float32 and 1.5 < len(a) / 24000 < 5.0
    assert np.abs(a).max() > 0.05
    files = list(cache_dir().glob("*.wav"))
    assert len(files) == 1 and files[0].stem == req.resolved().cache_key()
    monkeypatch.setattr(tts, "_render", lambda *a, **k: pytest.fail("cache miss"))
    assert np.array_equal(synthesize(req), a)


def test_rate_voice_and_text_change_the_key_and_audio():
    slow = synthesize(TtsRequest("one two three four five six", backend="espeak-ng", rate=100))
    fast = synthesize(TtsRequest("one two three four five six", backend="espeak-ng", rate=300))
    assert len(slow) > 1.8 * len(fast)
    keys = {
        TtsRequest(t, "espeak-ng", v, r).resolved().cache_key()
        for t, v, r in [("a", None, 170), ("b", None, 170), ("a", "en-gb", 170), ("a", None, 171)]
    }
    assert len(keys) == 4


def test_missing_backend_names_the_package(monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    monkeypatch.setattr(tts, "_espeak_library", lambda: None)
    with pytest.raises(TtsError, match="pip install espeakng-loader.*apt-get install espeak-ng"):
        synthesize(TtsRequest("hi", backend="espeak-ng"))
    with pytest.raises(TtsError, match="macOS only"):
        synthesize(TtsRequest("hi", backend="say"))


def test_bad_voice_is_a_clear_error():
    with pytest.raises(TtsError, match="espeak-ng has no voice"):
        synthesize(TtsRequest("hi", backend="espeak-ng", voice="no-such-voice-xyz"))


def test_timeline_speaks_say_turns_with_espeak(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "persona: p\nlead_in: 0.5\ntail: 0.5\ntts: {backend: espeak-ng, rate: 200}\n"
        'user:\n  - say: "Good morning."\n  - pause: 0.6\n  - say: "Bye."\n    rate: 120\n'
    )
    pcm, events = render_static(build_timeline(load_scenario(p)))
    assert [e["kind"] for e in events] == ["say", "pause", "say"]
    assert (
        events[0]["source"] == "tts:espeak-ng:en-us:200" and events[2]["source"] == "tts:espeak-ng:en-us:120"
    )
    s, e = int(events[0]["start"] * 24000), int(events[0]["end"] * 24000)
    assert is_voiced(pcm[s:e]) and not pcm[: int(0.5 * 24000)].any()
    ps, pe = int(events[1]["start"] * 24000), int(events[1]["end"] * 24000)
    assert not pcm[ps:pe].any()


def _variant_changes_the_voice() -> None:
    plain = synthesize(TtsRequest("hello there", backend="espeak-ng", voice="en-gb"), use_cache=False)
    f3 = synthesize(TtsRequest("hello there", backend="espeak-ng", voice="en-gb+f3"), use_cache=False)
    assert is_voiced(f3)
    assert len(f3) != len(plain) or not np.allclose(f3, plain, atol=1e-3)


def test_espeak_variants_are_accepted():
    """A language with a variant (`en-gb+f3`, as `espeak-ng -v` takes it) speaks, and the variant
    changes the voice (the espeak-ng program where installed, else the library)."""
    _variant_changes_the_voice()


def test_without_the_espeak_ng_program_the_pypi_library_speaks(monkeypatch):
    """espeakng-loader's libespeak-ng (no system package): reproducible 24 kHz speech, voices checked."""
    from rolekit.audio import espeak

    monkeypatch.setattr(tts.shutil, "which", lambda name: None)  # no espeak-ng program on PATH
    assert espeak.library() is not None and espeak.library().sample_rate == 22050
    req = TtsRequest("Hello, I would like a refund for my order.", backend="espeak-ng", rate=170)
    a = synthesize(req, use_cache=False)
    assert a.dtype == np.float32 and 1.5 < len(a) / 24000 < 5.0 and np.abs(a).max() > 0.05
    # one child process per utterance: the same request gives the same samples every time
    assert np.array_equal(synthesize(req, use_cache=False), a)
    slow = synthesize(TtsRequest("one two three four five six", backend="espeak-ng", rate=100))
    fast = synthesize(TtsRequest("one two three four five six", backend="espeak-ng", rate=300))
    assert len(slow) > 1.8 * len(fast)
    assert {"en-us", "en-gb", "f3"} <= tts.espeak_voices()
    assert len(synthesize(TtsRequest("hi there", backend="espeak-ng", voice="en-us+f3"))) > 0
    _variant_changes_the_voice()  # a language + variant: the library resolves it as the program does
    with pytest.raises(TtsError, match="espeak-ng has no voice"):
        synthesize(TtsRequest("hi", backend="espeak-ng", voice="no-such-voice-xyz"))
