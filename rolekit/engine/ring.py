"""The token ring of PersonaPlex's LMGen: 17 streams, per-stream delays, a provided-mask.

NVIDIA's semantics (personaplex `LMGen.prepare_step_input` / `process_transformer_output`):
- a call at `offset` writes provided tokens at column `(offset + delay) % CT` and marks them provided;
  streams with `offset <= delay` get the initial token at column `offset % CT`;
- the call at offset 0 only primes (column 0 := initial tokens, no forward pass);
- a call at offset s >= 1 feeds column s-1 to the model and targets column s: text and audio are
  sampled unless provided there (the depformer is teacher-forced on the provided ones);
- the output of call s (s > max_delay) is column `s - max_delay + delay` per stream: delays undone.

Every function takes the array module `xp` (numpy or mlx.core) so that one implementation serves
the numpy prefill simulation and the compiled MLX step. `offset` may be a Python int, a 0-d array
or a [B] array (one offset per conversation: batches of prompts of unequal length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rolekit.frames import DELAYS, MAX_DELAY, N_CODEBOOKS, N_STREAMS, UNGENERATED_TOKEN

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


def provide(xp: Any, ring: Ring, tokens: Any, mask: Any, offset: Any, initial: Any) -> Ring:
    """Write provided tokens [B, 17] where mask [B, 17] at (offset + delay) % CT; initial-fill."""
    delays = _delays(xp)[None, :, None]  # [1, 17, 1]
    cols = _cols(xp)[None, None, :]  # [1, 1, CT]
    off = _per_row(xp, offset, 2)  # [B|1, 1, 1]
    write = cols == (off + delays) % CT  # [B|1, 17, CT]
    sel = mask[:, :, None] & write  # [B, 17, CT]
    cache = xp.where(sel, tokens[:, :, None].astype(xp.int32), ring.cache)
    provided = ring.provided | sel
    # The very beginning: delayed streams have no token yet, feed the initial one.
    init = (off <= delays) & (cols == off % CT)  # [B|1, 17, CT]
    cache = xp.where(init, initial[None, :, None], cache)
    return Ring(cache=cache, provided=provided | init)


def prime(xp: Any, ring: Ring, initial: Any) -> Ring:
    """The call at offset 0: column 0 := initial tokens of every stream, no forward pass."""
    col0 = (_cols(xp) == 0)[None, None, :]  # [1, 1, CT]
    return Ring(cache=xp.where(col0, initial[None, :, None], ring.cache), provided=ring.provided)


def column(xp: Any, arr: Any, col: Any) -> Any:
    """arr[:, :, col] for an int, 0-d or per-row [B] col: [B, 17]."""
    onehot = _cols(xp)[None, None, :] == _per_row(xp, col, 2)  # [B|1, 1, CT]
    if arr.dtype == xp.bool_:
        return (arr & onehot).any(axis=-1)
    return (arr * onehot.astype(arr.dtype)).sum(axis=-1).astype(arr.dtype)


def model_input(xp: Any, ring: Ring, offset: Any) -> Any:
    """[B, 17]: the tokens fed to the temporal transformer by the call at `offset` (>= 1)."""
    return column(xp, ring.cache, (offset - 1) % CT)


def targets(xp: Any, ring: Ring, offset: Any) -> tuple[Any, Any]:
    """(target tokens [B, 17], provided [B, 17]) of the call at `offset`."""
    t = offset % CT
    return column(xp, ring.cache, t), column(xp, ring.provided, t)


def forced_text(xp: Any, ring: Ring, offset: Any, sampled_text: Any) -> Any:
    """[B]: the text token the depformer conditions on (provided one wins over the sample)."""
    target, prov = targets(xp, ring, offset)
    return xp.where(prov[:, 0], target[:, 0], sampled_text.astype(xp.int32))


def depformer_provided(xp: Any, ring: Ring, offset: Any, dep_q: int) -> Any:
    """[B, dep_q]: the audio tokens forced on the depformer (-1 = sample it)."""
    target, prov = targets(xp, ring, offset)
    return xp.where(prov[:, 1 : 1 + dep_q], target[:, 1 : 1 + dep_q], -1)


def commit(xp: Any, ring: Ring, offset: Any, text: Any, audio: Any) -> Ring:
    """After the call at `offset`: store sampled text [B] / audio [B, n] where not provided."""
    cols = _cols(xp)[None, None, :]  # [1, 1, CT]
    off = _per_row(xp, offset, 2)  # [B|1, 1, 1]
    t = offset % CT
    provided = ring.provided & ~(cols == (off - 1) % CT)
    target = column(xp, ring.cache, t)
    prov_t = column(xp, provided, t)
    n = audio.shape[1]
    sampled = xp.concatenate(
        [text.astype(xp.int32)[:, None], audio.astype(xp.int32), target[:, 1 + n :]], axis=1
    )  # [B, 17]
    new_t = xp.where(prov_t, target, sampled)
    at_t = cols == off % CT  # [B|1, 1, CT]
    return Ring(cache=xp.where(at_t, new_t[:, :, None], ring.cache), provided=provided)


def output(xp: Any, ring: Ring, offset: Any) -> Any:
    """[B, 9] text + agent tokens of one consistent frame, for a call at offset > max_delay."""
    delays = _delays(xp)[None, :OUT_STREAMS]  # [1, 9]
    idx = (_per_row(xp, offset, 1) - MAX_DELAY + delays) % CT  # [B|1, 9]
    onehot = (_cols(xp)[None, None, :] == idx[:, :, None]).astype(xp.int32)  # [B|1, 9, CT]
    return (ring.cache[:, :OUT_STREAMS] * onehot).sum(axis=-1).astype(xp.int32)
