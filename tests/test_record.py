"""SessionRecord: save/load round trip, file layout, atomic replace, incomplete folders."""

import json
import os

import numpy as np
import pytest

from rolekit.record import RecordError, SessionRecord, is_complete


def _record(n_frames=5, seed=0):
    rng = np.random.default_rng(seed)
    n = n_frames * 1920
    return SessionRecord(
        user_pcm=(rng.standard_normal(n) * 0.1).astype(np.float32),
        agent_pcm=(rng.standard_normal(n) * 0.2).astype(np.float32),
        text_ids=[3, 0, 412, 3, 7][:n_frames],
        text_pieces=["PAD", "EPAD", " Hello", "PAD", "!"][:n_frames],
        agent_codes=rng.integers(0, 2048, (n_frames, 8)),
        step_ms=[10.0, 11.5, 9.0, 10.2, 10.0][:n_frames],
        events=[{"kind": "say", "turn": 0, "start": 0.0, "end": 0.3, "text": "hi"}],
        meta={"scenario": "s", "run_id": "r0", "seed": np.int64(7), "vars": {"company": "Contoso"}},
    )


def test_round_trip_and_files(tmp_path):
    rec = _record()
    folder = rec.save(tmp_path / "s" / "r0")
    assert sorted(os.listdir(folder)) == sorted(
        [
            "conversation.wav",
            "channels.json",
            "monologue.json",
            "events.json",
            "timings.json",
            "meta.json",
            "agent_codes.npy",
        ]
    )
    assert json.loads((folder / "channels.json").read_text()) == {
        "sample_rate": 24000,
        "channels": {"0": "user", "1": "agent"},
    }
    mono = json.loads((folder / "monologue.json").read_text())
    assert mono[2] == {"frame": 2, "time": 0.16, "id": 412, "piece": " Hello"}
    back = SessionRecord.load(folder)
    assert np.abs(back.user_pcm - rec.user_pcm).max() < 1e-4  # 16-bit WAV
    assert np.abs(back.agent_pcm - rec.agent_pcm).max() < 1e-4
    assert back.text_ids == rec.text_ids and back.text_pieces == rec.text_pieces
    assert np.array_equal(back.agent_codes, rec.agent_codes)
    assert back.step_ms == rec.step_ms and back.events == rec.events
    assert back.meta["seed"] == 7 and back.meta["vars"] == {"company": "Contoso"}
    assert back.monologue_text() == "Hello!"
    import soundfile as sf

    info = sf.info(str(folder / "conversation.wav"))
    assert (info.channels, info.samplerate, info.subtype) == (2, 24000, "PCM_16")


def test_save_replaces_atomically_and_keeps_old_on_failure(tmp_path):
    folder = tmp_path / "r0"
    _record(seed=1).save(folder)
    (folder / "transcript.json").write_text("{}")  # a later step's file
    bad = _record(seed=2)
    bad.text_pieces = bad.text_pieces[:-1]  # inconsistent: refused before anything is touched
    with pytest.raises(ValueError):
        bad.save(folder)
    assert (folder / "transcript.json").is_file()
    _record(seed=3).save(folder)
    assert not (folder / "transcript.json").exists()  # the new run replaces the whole folder
    assert [p.name for p in tmp_path.iterdir()] == ["r0"]  # no temporary or old folder left
    assert np.abs(SessionRecord.load(folder).user_pcm - _record(seed=3).user_pcm).max() < 1e-4


def test_interrupted_save_leaves_no_folder(tmp_path, monkeypatch):
    import rolekit.record as record_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(record_mod, "_write_json", boom)  # interrupted halfway through the files
    with pytest.raises(KeyboardInterrupt):
        _record().save(tmp_path / "r0")
    assert list(tmp_path.iterdir()) == [] and not is_complete(tmp_path / "r0")
    monkeypatch.undo()
    (tmp_path / ".r0.partial-crashed").mkdir()  # what a killed process would leave
    _record().save(tmp_path / "r0")
    assert is_complete(tmp_path / "r0") and [p.name for p in tmp_path.iterdir()] == ["r0"]


def test_load_incomplete_folder_is_a_clear_error(tmp_path):
    folder = _record().save(tmp_path / "r0")
    (folder / "events.json").unlink()
    with pytest.raises(RecordError, match="missing events.json"):
        SessionRecord.load(folder)
