"""Find a model folder: a local path, or a Hugging Face repo downloaded into (or read from) the HF cache.

No mlx here. `"tiny"` (the embedded random model) is handled by `rolekit.models`, not here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rolekit.errors import ModelError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_GLOB_CHARS = set("*?[")


# The model every running command uses unless --model or $ROLEKIT_MODEL says otherwise.
DEFAULT_MODEL = "nvidia/personaplex-7b-v1"
MODEL_ENV = "ROLEKIT_MODEL"


def rolekit_cache() -> Path:
    """Where rolekit keeps what it builds or converts: $ROLEKIT_CACHE, else ~/.cache/rolekit."""
    return Path(os.environ.get("ROLEKIT_CACHE") or Path.home() / ".cache" / "rolekit").expanduser()


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for cache-only access (read at call time, not import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir() -> Path | None:
    """The hub cache folder named by HF_HUB_CACHE or HF_HOME, else None (huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return None


def looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or (os.sep in spec and Path(spec).expanduser().exists())


def resolve_model(spec: str, patterns: list[str] | None = None) -> Path:
    """Return a local folder for `spec`: an existing folder, or a snapshot of the HF repo `spec`.

    `patterns` limits the download (allow_patterns); literal file names among them must exist in
    the result. Offline (HF_HUB_OFFLINE=1, or no network) the HF cache alone is used.
    """
    spec = spec.strip()
    local = Path(spec).expanduser()
    if local.is_dir():
        _check_files(local, patterns, spec)
        return local.resolve()
    if looks_like_path(spec) or not _REPO_ID.match(spec):
        if local.exists():
            raise ModelError(f"{spec}: is a file; expected a model folder or a Hugging Face repo id")
        raise ModelError(
            f"{spec}: no such model folder, and not a Hugging Face repo id (expected owner/name, "
            "e.g. nvidia/personaplex-7b-v1)"
        )
    folder = _snapshot(spec, patterns)
    _check_files(folder, patterns, spec)
    return folder


def _snapshot(repo_id: str, patterns: list[str] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = is_offline()
    try:
        return Path(
            snapshot_download(
                repo_id, allow_patterns=patterns, cache_dir=cache_dir(), local_files_only=offline
            )
        )
    except GatedRepoError as exc:
        raise ModelError(
            f"{repo_id}: this repo is gated (HTTP 401/403). Accept its licence at "
            f"https://huggingface.co/{repo_id}, then set HF_TOKEN (or run `hf auth login`)."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(
            f"{repo_id}: repository not found on Hugging Face (or private: set HF_TOKEN)."
        ) from exc
    except LocalEntryNotFoundError as exc:
        # Offline by request, or the network failed: huggingface_hub then falls back to the cache itself.
        why = "HF_HUB_OFFLINE=1 is set" if offline else "the Hugging Face Hub cannot be reached"
        raise ModelError(
            f"{repo_id}: not in the local Hugging Face cache ({cache_dir() or 'default cache'}) and {why}. "
            "Run once online (without HF_HUB_OFFLINE) to download it, or pass a local model folder."
        ) from exc
    except OSError as exc:
        raise ModelError(f"{repo_id}: download failed: {exc}") from exc


def _check_files(folder: Path, patterns: list[str] | None, spec: str) -> None:
    """Literal names in `patterns` must be present (a cached snapshot may hold only some files)."""
    missing = [
        name for name in (patterns or []) if not (set(name) & _GLOB_CHARS) and not (folder / name).exists()
    ]
    if missing:
        hint = " (downloaded only partly: run again online)" if not Path(spec).expanduser().is_dir() else ""
        raise ModelError(f"{spec}: missing {', '.join(missing)} in {folder}{hint}")


def download_file(spec: str, filename: str) -> Path:
    """One file of a model folder or HF repo (e.g. the tokenizer), fetched alone when remote."""
    return resolve_model(spec, [filename]) / filename


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (0 when it does not exist; files that vanish or cannot be
    read while it is walked count as 0)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except OSError:
                pass
    return total
