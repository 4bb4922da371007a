"""rolekit.atomic: files and folders appear whole or not at all; nothing temporary is left behind."""

from __future__ import annotations

import os
import stat

import pytest

from rolekit import atomic


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_text_replaces_and_is_world_readable(tmp_path):
    path = tmp_path / "sub" / "a.json"
    assert atomic.write_text(path, "one") == path
    atomic.write_text(path, "twö")
    assert path.read_text(encoding="utf-8") == "twö"
    assert stat.S_IMODE(path.stat().st_mode) == atomic.FILE_MODE
    assert _names(path.parent) == ["a.json"]


def test_failed_file_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "a.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic.replaced_file(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old" and _names(tmp_path) == ["a.bin"]


def test_replaced_file_suffix_reaches_the_temporary_name(tmp_path):
    import numpy as np

    with atomic.replaced_file(tmp_path / "x.npy", suffix=".npy") as tmp:
        assert tmp.name.endswith(".npy") and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))  # np.save would add .npy to any other name
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2] and _names(tmp_path) == ["x.npy"]


def test_folder_replaced_only_when_complete(tmp_path):
    folder = tmp_path / "model"
    with atomic.replaced_folder(folder) as tmp:
        (tmp / "a").write_text("1")
        assert not folder.exists()  # nothing visible until the block ends
    assert _names(folder) == ["a"] and stat.S_IMODE(folder.stat().st_mode) == atomic.FOLDER_MODE
    with pytest.raises(KeyboardInterrupt), atomic.replaced_folder(folder) as tmp:
        (tmp / "b").write_text("2")
        raise KeyboardInterrupt
    assert _names(folder) == ["a"] and _names(tmp_path) == ["model"]
    with atomic.replaced_folder(folder) as tmp:
        (tmp / "c").write_text("3")
    assert _names(folder) == ["c"] and _names(tmp_path) == ["model"]


def test_keep_if_lets_a_finished_concurrent_build_win(tmp_path):
    folder = tmp_path / "cache"
    with atomic.replaced_folder(folder, keep_if=lambda f: (f / "done").is_file()) as tmp:
        (tmp / "ours").write_text("")
        folder.mkdir()
        (folder / "done").write_text("")  # another process finished while we were writing
    assert _names(folder) == ["done"] and _names(tmp_path) == ["cache"]
    (folder / "done").unlink()  # an unfinished folder is not kept: it is replaced
    with atomic.replaced_folder(folder, keep_if=lambda f: (f / "done").is_file()) as tmp:
        (tmp / "ours").write_text("")
    assert _names(folder) == ["ours"]


def test_remove_leftovers_clears_crashed_temporaries_only(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / ".m.partial-abc").mkdir()
    (tmp_path / ".m.old-def").mkdir()
    (tmp_path / ".mm.partial-x").mkdir()  # another folder's: kept
    atomic.remove_leftovers(folder)
    assert _names(tmp_path) == [".mm.partial-x", "m"]


def test_fsync_dir_tolerates_a_missing_folder(tmp_path):
    atomic.fsync_dir(tmp_path / "missing")
    atomic.fsync_dir(tmp_path)
    assert os.path.isdir(tmp_path)
