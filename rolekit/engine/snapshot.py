"""Prefill snapshots on disk: the engine state after the prompt phases, keyed by persona + model.

A second run of the same persona (same voice, prompt ids, silence, model loaded the same way:
`state_id`) restores the state
instead of running the prefill. One file per conversation (batch row) holding its unpadded batch-1
state, so any batch can be assembled from cached rows: rows of different lengths are left-padded at
assembly (`lm.temporal.pad_rows`). Written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from rolekit.atomic import replaced_file
from rolekit.engine.engine import Engine, EngineSnapshot, check_offsets
from rolekit.frames import PrefillPlan
from rolekit.lm.temporal import pad_rows, unpad_row
from rolekit.nn.attention import grow_slots

FORMAT = "rolekit-prefill-v2"


def prefill_key(model_id: str, plan: PrefillPlan, voice: Any) -> str:
    """sha256 of everything that determines the post-prefill state."""
    doc = {
        "format": FORMAT,
        "model": model_id,
        "persona_hash": plan.content_hash,
        "voice": getattr(voice, "identity", plan.voice),
        "text_ids": list(plan.text_ids),
        "silence": plan.silence_frames,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def state_id(engine: Engine) -> str:
    """The model as the prefill state depends on it: its id (which names the weight format), the
    activation dtype (`--dtype`) and the ring's context (`--compat nvidia` keeps one slot less)."""
    from rolekit.lm.precision import dtype_name

    return f"{engine.model_id}-{dtype_name(engine.lm.dtype)}-ctx{engine.lm.cfg.context}"


def snapshot_path(cache_dir: Path, model_id: str, plan: PrefillPlan, voice: Any) -> Path:
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
    return Path(cache_dir) / safe_model / f"{prefill_key(model_id, plan, voice)[:32]}.safetensors"


def row_arrays(snap: EngineSnapshot, row: int) -> dict[str, mx.array]:
    """One conversation's slice of a snapshot, unpadded (LM cache, token ring; no Mimi, no RNG)."""
    lm = unpad_row(snap.lm, row)
    out = {f"lm.{k}": v for k, v in lm.items() if k.startswith("layers.")}
    out["ring.cache"] = snap.ring_cache[row : row + 1]
    out["ring.provided"] = snap.ring_provided[row : row + 1].astype(mx.uint8)
    out["offset"] = mx.array(snap.offsets[row], dtype=mx.int32)
    out["lm_offset"] = lm["offset"]
    return out


def save_row(path: Path, snap: EngineSnapshot, row: int, meta: dict[str, str] | None = None) -> Path:
    with replaced_file(path, suffix=".safetensors") as tmp:
        mx.save_safetensors(str(tmp), row_arrays(snap, row), metadata={"format": FORMAT, **(meta or {})})
    return Path(path)


def load_rows(paths: list[Path], engine: Engine) -> EngineSnapshot:
    """Assemble a batch snapshot from per-conversation files (fresh Mimi streams, seeded RNG);
    rows of different prompt lengths are left-padded here."""
    rows = [mx.load(str(p)) for p in paths]
    mx.eval(*[a for r in rows for a in r.values()])  # read now: the file may be replaced later
    offsets = [int(r["offset"].item()) for r in rows]
    check_offsets(offsets)
    lm_rows = []
    for r in rows:
        lm_row = {k[3:]: v for k, v in r.items() if k.startswith("lm.")}
        lm_row["offset"] = r["lm_offset"]
        lm_rows.append(lm_row)
    lm = pad_rows(lm_rows)
    engine.reset()
    return EngineSnapshot(
        offsets=tuple(offsets),
        lm=lm,
        ring_cache=mx.concatenate([r["ring.cache"] for r in rows], axis=0),
        ring_provided=mx.concatenate([r["ring.provided"] for r in rows], axis=0).astype(mx.bool_),
        keys=engine.keys,
        mimi=None,
    )


def prefill_cached(
    engine: Engine, plans: list[PrefillPlan], voices: list[Any], cache_dir: Path | None
) -> bool:
    """Restore every conversation's prefill from `cache_dir` if all are there (True), else run and save."""
    if cache_dir is None:
        engine.prefill(plans, voices)
        return False
    paths = [snapshot_path(cache_dir, state_id(engine), p, v) for p, v in zip(plans, voices, strict=True)]
    if all(p.is_file() for p in paths):
        try:
            engine.restore(load_rows(paths, engine))
            return True
        except (ValueError, KeyError, RuntimeError):
            pass  # unreadable or stale: recompute below
    engine.prefill(plans, voices)
    snap = engine.snapshot()
    for row, path in enumerate(paths):
        save_row(path, snap, row, {"model": engine.model_id, "persona": plans[row].persona})
    return False


def state_equal(a: EngineSnapshot, b: EngineSnapshot, atol: float = 0.0) -> bool:
    """True when two snapshots hold the same conversations: token rings, and each row's unpadded LM
    cache within atol (the padding itself, which no real position attends, is not compared)."""
    if a.offsets != b.offsets or a.lm.keys() != b.lm.keys():
        return False
    if not np.array_equal(np.array(a.ring_cache), np.array(b.ring_cache)):
        return False
    for row in range(len(a.offsets)):
        ra, rb = unpad_row(a.lm, row), unpad_row(b.lm, row)
        if int(ra["offset"].item()) != int(rb["offset"].item()):
            return False
        for k in ra:
            x, y = ra[k], rb[k]
            if k.startswith("layers.") and x.shape[2] != y.shape[2]:  # growing rings of two sizes
                cap = max(x.shape[2], y.shape[2])  # (the smaller never wrapped: same slots)
                x, y = grow_slots(x, cap), grow_slots(y, cap)
            if not np.allclose(np.array(x), np.array(y), atol=atol, rtol=0):
                return False
    return True
