"""hub.resolve_model: local folders, the offline HF cache and clear errors; never the network."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

from rolekit import hub
from rolekit.errors import ModelError

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def fake_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    return snap


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_local_folder(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert hub.resolve_model(str(tmp_path)) == tmp_path.resolve()
    assert hub.resolve_model(str(tmp_path), ["model.safetensors", "*.json"]) == tmp_path.resolve()
    with pytest.raises(ModelError, match="missing tokenizer.model"):
        hub.resolve_model(str(tmp_path), ["tokenizer.model"])


def test_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model folder"):
        hub.resolve_model(str(tmp_path / "nope"))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        hub.resolve_model(str(tmp_path / "f.txt"))
    with pytest.raises(ModelError, match="owner/name"):
        hub.resolve_model("not a repo id")


def test_offline_snapshot_from_cache(offline_cache: Path) -> None:
    snap = fake_cache(
        offline_cache, "acme/tiny-voice", {"config.json": b"{}", "voices/NATF2.safetensors": b"v"}
    )
    folder = hub.resolve_model("acme/tiny-voice", ["config.json", "voices/*"])
    assert folder.resolve() == snap.resolve()
    assert hub.download_file("acme/tiny-voice", "config.json").read_bytes() == b"{}"


def test_offline_missing_repo_names_the_fix(offline_cache: Path) -> None:
    with pytest.raises(ModelError) as err:
        hub.resolve_model("acme/absent")
    message = str(err.value)
    assert "HF_HUB_OFFLINE=1" in message and "acme/absent" in message and "local model folder" in message


def test_partial_cache_is_reported(offline_cache: Path) -> None:
    fake_cache(offline_cache, "acme/partial", {"config.json": b"{}"})
    with pytest.raises(ModelError, match="missing model.safetensors"):
        hub.resolve_model("acme/partial", ["config.json", "model.safetensors"])


def test_gated_repo_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    import huggingface_hub

    def gated(*args: object, **kwargs: object) -> str:
        response = httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co"))
        raise GatedRepoError("gated", response=response)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(ModelError, match="HF_TOKEN"):
        hub.resolve_model("nvidia/personaplex-7b-v1")


def test_no_network_and_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreachable(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("connection error and not in cache")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelError, match="cannot be reached"):
        hub.resolve_model("acme/anything")


def test_offline_flag_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert hub.is_offline()
