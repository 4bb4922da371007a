"""The token ring of PersonaPlex's LMGen: 17 streams, per-stream delays, a provided-mask.

NVIDIA's semantics (personaplex `LMGen.prepare_step_input` / `process_transformer_output`):
- a call at `offset` writes provided tokens at column `(offset + delay) % CT` and marks them provided;
  streams with `offset <= delay` get the initial token at column `offset % CT`;
- the call at offset 0 only primes (column 0 := initial tokens, no forward pass);
- a call at offset s >= 1 feeds column s-1 to the model and targets column s: text and audio are
  sampled unless provided there (the depformer is teacher-forced on the provided ones);
- the output of call s (s > max_delay) is column `s - max_delay + delay` per stream: delays undone.

Every function takes the array module `xp` (numpy or mlx.core) so that one implementation serves
the numpy prefill simulation and the compiled MLX step. A call's columns come as `Cols`
(`columns(xp, offset)`; `offset` a Python int, a 0-d array or a [B] array: one offset per
conversation, batches of prompts of unequal length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rolekit.frames import DELAYS, MAX_DELAY, N_CODEBOOKS, N_STREAMS, UNGENERATED_TOKEN, USER_STREAMS

CT = MAX_DELAY + 3  # columns of the ring (NVIDIA: max_delay + 3)
OUT_STREAMS = 1 + N_CODEBOOKS  # text + agent audio: what one output frame carries


@dataclass
class Ring:
    """Explicit ring state of B conversations (arrays of numpy or mlx)."""

    cache: Any  # [B, 17, CT] int32 token ids (-2 = not generated yet)
    provided: Any  # [B, 17, CT] bool


def new_ring(xp: Any, batch: int) -> Ring:
    return Ring(
        cache=xp.full((batch, N_STREAMS, CT), UNGENERATED_TOKEN, dtype=xp.int32),
        provided=xp.zeros((batch, N_STREAMS, CT), dtype=xp.bool_),
    )


def initial_tokens(xp: Any, text_card: int, card: int) -> Any:
    """[17] int32: the start-of-sequence token of every stream (text_card, then card x 16)."""
    return xp.array([text_card] + [card] * (N_STREAMS - 1), dtype=xp.int32)


def _cols(xp: Any) -> Any:
    return xp.arange(CT, dtype=xp.int32)


def _delays(xp: Any) -> Any:
    return xp.array(DELAYS, dtype=xp.int32)


def _per_row(xp: Any, offset: Any, trailing: int) -> Any:
    """offset (int, 0-d or [B]) as an int32 array [B or 1, 1 x trailing] for broadcasting."""
    arr = offset if hasattr(offset, "shape") else xp.array(offset, dtype=xp.int32)
    return arr.astype(xp.int32).reshape((-1,) + (1,) * trailing)


@dataclass
class Cols:
    """The ring columns one call touches, as one-hot masks per row (bool, leading dim B or 1).
    They depend on the rows' offsets alone, so the engine computes them on the host
    (`step_columns(np, offsets)`, sent as one array: `pack` / `unpack`) and the device step does
    no index arithmetic."""

    write: Any  # [B, 17, CT]: column (offset + delay) % CT, where provided tokens go
    init: Any  # [B, 17, CT]: column offset % CT of the streams with offset <= delay (start token)
    prev: Any  # [B, 17, CT]: column (offset - 1) % CT, the model's input
    now: Any  # [B, 17, CT]: column offset % CT, the call's targets and commit
    out: Any  # [B, 9, CT]: column (offset - max_delay + delay) % CT, the output frame


PACKED = 4 * N_STREAMS + OUT_STREAMS  # rows of `pack`: write, init, prev, now, out


def columns(xp: Any, offset: Any) -> Cols:
    """The `Cols` of a call at `offset` (int, 0-d or [B])."""
    cols = _cols(xp)[None, None, :]  # [1, 1, CT]
    delays = _delays(xp)[None, :, None]  # [1, 17, 1]
    off = _per_row(xp, offset, 2)  # [B|1, 1, 1]
    every = xp.zeros((1, N_STREAMS, 1), dtype=xp.int32)  # full-size masks: one broadcast pattern
    return Cols(
        write=cols == (off + delays) % CT,
        init=(off <= delays) & (cols == off % CT),
        prev=cols == (off - 1 + every) % CT,
        now=cols == (off + every) % CT,
        out=cols == (off - MAX_DELAY + delays[:, :OUT_STREAMS]) % CT,
    )


def step_columns(xp: Any, offset: Any) -> Cols:
    """The `Cols` of an engine step: `write` limited to the user's streams, the only ones a step
    provides (so `provide(..., None, ...)`)."""
    c = columns(xp, offset)
    user = xp.array([s in USER_STREAMS for s in range(N_STREAMS)])[None, :, None]  # [1, 17, 1]
    return Cols(write=c.write & user, init=c.init, prev=c.prev, now=c.now, out=c.out)


def same_columns(offset: Any) -> Any:
    """numpy offsets -> the smallest offsets with the same `columns`: past MAX_DELAY a call's
    columns repeat every CT calls (so a step's columns can be cached by this key)."""
    off = np.asarray(offset, dtype=np.int64)
    base = MAX_DELAY + 1
    return np.where(off < base, off, base + (off - base) % CT)


def pack(xp: Any, c: Cols) -> Any:
    """[B, PACKED, CT] bool: the masks of `c` stacked along the stream axis."""
    return xp.concatenate([c.write, c.init, c.prev, c.now, c.out], axis=1)


def unpack(packed: Any) -> Cols:
    """The inverse of `pack` (slices of `packed`)."""
    n = N_STREAMS
    return Cols(
        write=packed[:, :n],
        init=packed[:, n : 2 * n],
        prev=packed[:, 2 * n : 3 * n],
        now=packed[:, 3 * n : 4 * n],
        out=packed[:, 4 * n :],
    )


def provide(xp: Any, ring: Ring, tokens: Any, mask: Any | None, at: Cols, initial: Any) -> Ring:
    """Write provided tokens [B, 17] where mask [B, 17] at column (offset + delay) % CT (mask
    None: `at.write` is already limited, as by `step_columns`); the very beginning (offset <=
    delay) feeds a delayed stream the initial token instead."""
    sel = at.write if mask is None else mask[:, :, None] & at.write  # [B, 17, CT]
    cache = xp.where(sel, tokens[:, :, None].astype(xp.int32), ring.cache)
    cache = xp.where(at.init, initial[None, :, None], cache)
    return Ring(cache=cache, provided=ring.provided | sel | at.init)


def prime(xp: Any, ring: Ring, initial: Any) -> Ring:
    """The call at offset 0: column 0 := initial tokens of every stream, no forward pass."""
    col0 = (_cols(xp) == 0)[None, None, :]  # [1, 1, CT]
    return Ring(cache=xp.where(col0, initial[None, :, None], ring.cache), provided=ring.provided)


def column(xp: Any, arr: Any, onehot: Any) -> Any:
    """arr [B, S, CT] at the column of `onehot` [B|1, S, CT] (one True per row): [B, S]."""
    if arr.dtype == xp.bool_:
        return (arr & onehot).any(axis=-1)
    return (arr * onehot.astype(arr.dtype)).sum(axis=-1).astype(arr.dtype)


def model_input(xp: Any, ring: Ring, at: Cols) -> Any:
    """[B, 17]: the tokens fed to the temporal transformer by the call (offset >= 1)."""
    return column(xp, ring.cache, at.prev)


def targets(xp: Any, ring: Ring, at: Cols) -> tuple[Any, Any]:
    """(target tokens [B, 17], provided [B, 17]) of the call."""
    return column(xp, ring.cache, at.now), column(xp, ring.provided, at.now)


def forced_text(xp: Any, ring: Ring, at: Cols, sampled_text: Any) -> Any:
    """[B]: the text token the depformer conditions on (provided one wins over the sample)."""
    target, prov = targets(xp, ring, at)
    return xp.where(prov[:, 0], target[:, 0], sampled_text.astype(xp.int32))


def depformer_provided(xp: Any, ring: Ring, at: Cols, dep_q: int) -> Any:
    """[B, dep_q]: the audio tokens forced on the depformer (-1 = sample it)."""
    target, prov = targets(xp, ring, at)
    return xp.where(prov[:, 1 : 1 + dep_q], target[:, 1 : 1 + dep_q], -1)


def commit(xp: Any, ring: Ring, at: Cols, text: Any, audio: Any) -> Ring:
    """After the call: store sampled text [B] / audio [B, n] where not provided."""
    provided = ring.provided & ~at.prev
    target = column(xp, ring.cache, at.now)
    prov_t = column(xp, provided, at.now)
    n = audio.shape[1]
    sampled = xp.concatenate(
        [text.astype(xp.int32)[:, None], audio.astype(xp.int32), target[:, 1 + n :]], axis=1
    )  # [B, 17]
    new_t = xp.where(prov_t, target, sampled)
    return Ring(cache=xp.where(at.now, new_t[:, :, None], ring.cache), provided=provided)


def output(xp: Any, ring: Ring, at: Cols) -> Any:
    """[B, 9] text + agent tokens of one consistent frame, for a call at offset > max_delay."""
    return column(xp, ring.cache[:, :OUT_STREAMS], at.out)
