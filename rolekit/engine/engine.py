"""The 12.5 Hz full-duplex loop: Mimi encode -> LM (temporal + depformer) -> Mimi decode, B at once.

`Engine` holds every piece of state explicitly (LM ring KV cache, token ring, Mimi streams, RNG
keys, per-conversation offsets) so that it can snapshot/restore it. Prompts of unequal length share
a batch by left padding: the LM cache masks each row's padding, the token ring runs per-row offsets. Arrays in, arrays out: no files, no devices, no YAML
(disk caching of prefill snapshots lives in `engine.snapshot`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import mlx.core as mx
import numpy as np

from rolekit.codec.compiled import CompiledMimi
from rolekit.engine import ring as R
from rolekit.engine.compiled import CompiledStep
from rolekit.engine.prefill import PrefillInputs, prefill_inputs
from rolekit.engine.step import EagerStep, StepConstants
from rolekit.errors import ConfigError
from rolekit.frames import (
    FRAME_SAMPLES,
    MAX_DELAY,
    N_CODEBOOKS,
    PAD,
    PrefillPlan,
    StepOutput,
)
from rolekit.lm import depformer_cuda, temporal_cuda
from rolekit.lm.precision import free_memory_bytes
from rolekit.lm.sampling import SamplingParams, row_params
from rolekit.nn.cuda import AheadBuild, compiling_ahead
from rolekit.nn.kernels import Kernels


class Bundle(Protocol):
    """What the engine needs of `models.ModelBundle` (the models layer is a sibling, not imported)."""

    lm: Any
    mimi: Any
    model_id: str


@dataclass
class EngineSnapshot:
    """The whole engine state at one instant (arrays are immutable, so this is a cheap copy)."""

    offsets: tuple[int, ...]  # per conversation: LMGen calls so far
    lm: dict[str, mx.array]
    ring_cache: mx.array  # [B, 17, CT]
    ring_provided: mx.array  # [B, 17, CT]
    keys: mx.array  # [B, 2] uint32 RNG keys
    mimi: dict | None = None  # None: a fresh Mimi stream (as after NVIDIA's prompt phases)
    meta: dict[str, str] = field(default_factory=dict)


def device_columns(offsets: np.ndarray) -> mx.array:
    """[B, R.PACKED, CT] bool: the packed `R.step_columns` of rows at these LMGen offsets [B],
    made on the host once per `R.same_columns` key (a run cycles through CT of them) and kept on
    the device (a step only reads it)."""
    return _packed_step_columns(tuple(int(o) for o in R.same_columns(offsets)))


@lru_cache(maxsize=64)
def _packed_step_columns(offsets: tuple[int, ...]) -> mx.array:
    return mx.array(R.pack(np, R.step_columns(np, np.array(offsets))))


class Engine:
    """B independent conversations stepped together, one 80 ms frame per `step`."""

    def __init__(
        self,
        bundle: Bundle,
        batch: int = 1,
        params: list[SamplingParams] | SamplingParams | None = None,
        seed: int | list[int] = 0,
        compiled: bool = True,
        dep_stop: bool = True,
        compiled_mimi: bool = True,
        kernels: Kernels | None = None,
    ) -> None:
        """`kernels`: which of rolekit's CUDA kernels run (default `Kernels.for_device()`: all of
        the default ones on a CUDA GPU, none elsewhere); fixed for the engine's life."""
        self.lm = bundle.lm
        self.mimi = bundle.mimi
        self.kernels = Kernels.for_device() if kernels is None else kernels
        # Mimi's encode/decode steps as two mx.compile graphs (codec.compiled): equal outputs,
        # fewer launches; eager: op by op.
        self.mimi_steps = CompiledMimi(self.mimi, self.kernels) if compiled_mimi else self.mimi
        self.model_id = bundle.model_id
        self.batch = batch
        cfg = self.lm.cfg
        if tuple(cfg.delays) != tuple(R.DELAYS):
            raise ConfigError(f"model delays {cfg.delays} differ from PersonaPlex's {R.DELAYS}")
        if params is None:
            params = SamplingParams()
        self.params = list(params) if isinstance(params, list) else [params] * batch
        seeds = list(seed) if isinstance(seed, list) else [seed] * batch
        if len(self.params) != batch or len(seeds) != batch:
            raise ConfigError(f"batch {batch} needs {batch} sampling params and seeds")
        self.seeds = seeds
        self.greedy = all(p.greedy for p in self.params)
        self._sampling = row_params(params)  # [B] values: rows sample together, each from its key
        # Depformer steps 8..15 predict the user stream, which is always provided in `step`.
        self.dep_steps = N_CODEBOOKS if dep_stop else cfg.dep_q
        self.initial = R.initial_tokens(mx, cfg.text_card, cfg.card)
        self._initial_np = R.initial_tokens(np, cfg.text_card, cfg.card)
        self.constants = StepConstants(
            self.lm,
            batch,
            self.initial,
            self._sampling,
            self.greedy,
            self.dep_steps,
            self.kernels,
        )
        # The LM step (`engine.step.lm_step`: ring, temporal with a device position, sampling,
        # depformer). compiled (default): one graph per attended ring prefix (`engine.compiled`);
        # eager: called op by op. Equal outputs.
        self.lm_step = CompiledStep(self.constants) if compiled else EagerStep(self.constants)
        # The one-kernel depformer frame and temporal step read their weights stacked per family:
        # stacked once here (the modules keep views of the stacks), outside any compiled trace.
        if self.kernels.depformer:
            depformer_cuda.pack(self.lm)
        if self.kernels.temporal:
            temporal_cuda.pack(self.lm)
        self.compiled = compiled
        # the compiles the last prefill started (`prefill`); the warm-up cancels what it does not need
        self.kernel_build: AheadBuild | None = None
        self.reset()

    # ---- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Fresh state: empty caches, offsets 0 (nothing primed)."""
        self.offsets = np.zeros(self.batch, np.int64)  # [B] LMGen calls per conversation
        self.lm_cache = self.lm.make_cache(self.batch)
        self.ring = R.new_ring(mx, self.batch)
        self.mimi_state = self.mimi.make_state(self.batch)
        self.keys = mx.stack([mx.random.key(s) for s in self.seeds])  # [B, 2]
        self.last_user_codes: np.ndarray | None = None

    @property
    def offset(self) -> int:
        """LMGen calls so far of the longest conversation (all of them at batch 1)."""
        return int(self.offsets.max())

    @property
    def frames_left(self) -> int:
        """Frames before the temporal context of the longest conversation is full (the ring cache
        keeps running after that)."""
        return max(0, int(self.lm.cfg.context) - int(self.lm_cache.positions.max()))

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot(
            offsets=tuple(int(o) for o in self.offsets),
            lm=self.lm_cache.snapshot(),
            ring_cache=self.ring.cache,
            ring_provided=self.ring.provided,
            keys=self.keys,
            mimi=self.mimi_state.snapshot(),
        )

    def restore(self, snap: EngineSnapshot) -> None:
        if snap.ring_cache.shape[0] != self.batch:
            raise ConfigError(f"snapshot holds {snap.ring_cache.shape[0]} conversations, engine {self.batch}")
        self.offsets = np.array(snap.offsets, np.int64)
        self.lm_cache.restore(snap.lm)
        self.ring = R.Ring(cache=snap.ring_cache, provided=snap.ring_provided)
        self.keys = snap.keys
        self.mimi_state = self.mimi.make_state(self.batch)
        if snap.mimi is not None:
            self.mimi_state.restore(snap.mimi)
        self.last_user_codes = None

    def prepare(self, frames: int | None = None, evaluate: bool | None = None) -> int:
        """Build now every step graph that the next `frames` steps run (None: the whole
        conversation, past the ring's wrap), so no step traces or compiles mid-conversation: each
        ring size and attended prefix of the LM step is traced and run once on scratch rings of
        its size, which builds its kernels (`CompiledStep.prepare`), and so are Mimi's graphs of
        full transformer caches (`CompiledMimi.prepare`). `evaluate` None: run those whose scratch
        rings fit in half the free memory (else traced only); True: run all; False: trace only.
        State unchanged; returns the number of graphs built (0 for the eager step)."""
        horizon, args = self._ahead(frames)
        if evaluate is None:
            budget: int | None = int(0.5 * free_memory_bytes())
        else:
            budget = (1 << 62) if evaluate else None
        built = self.lm_step.prepare(self.lm_cache, args, horizon, budget)
        cfg = self.mimi.cfg  # Mimi's graphs of full caches, if the stream gets there
        reaches = frames is None or self.mimi_state.enc_offset + frames * cfg.downsample_stride >= cfg.context
        if isinstance(self.mimi_steps, CompiledMimi) and budget is not None and reaches:
            built += self.mimi_steps.prepare(self.batch)
        return built

    def compile_kernels_ahead(
        self, frames: int | None = None, begin: int | None = None, mlx_kernels: bool = False
    ) -> AheadBuild | None:
        """Start compiling, all at once (`nn.cuda.compiling_ahead`: a process each), rolekit's CUDA
        kernels that the next `frames` steps launch (None: a whole conversation; Mimi's and those
        of every LM step graph `prepare` builds), instead of one after another as steps first
        reach them; steps may run meanwhile (a launch waits for its own kernel). `begin`: the LM
        position of the first of those steps (default: the cache's; the prefill passes the
        prompt's length before its pass). Later processes read them from the kernel cache. Builds
        throwaway graphs, evaluated only on scratch state (`mlx_kernels`); state unchanged.
        Returns the build (`wait()` gives the kernel count), None when no rolekit kernel runs.

        `mlx_kernels` (the prefill's): when some of those kernels compile now (a machine that
        lacks them), also build MLX's own kernels of a step meanwhile, instead of after them: the
        next step graph and Mimi's run once on scratch state with rolekit's kernels as
        placeholders (`run_placeholders`; skipped where the scratch would take more than half the
        free memory; the first graph from `begin` on, so no kernel the conversation does not
        launch is asked for). MLX compiles each of its fused kernels when a graph first runs it,
        one at a time, and names them by ops, dtypes and layout, so the real graphs find them."""
        if not self.kernels.any or not self.compiled:
            return None
        horizon, args = self._ahead(frames)
        with compiling_ahead() as ahead:
            if isinstance(self.mimi_steps, CompiledMimi):
                self.mimi_steps.build_lazily(self.batch, N_CODEBOOKS)
            self.lm_step.build_lazily(self.lm_cache, args, horizon, begin)  # type: ignore[union-attr]
            if mlx_kernels and ahead.futures:
                budget = int(0.5 * free_memory_bytes())
                outs = self.lm_step.run_placeholders(self.lm_cache, args, begin, budget)  # type: ignore[union-attr]
                if isinstance(self.mimi_steps, CompiledMimi):
                    outs += self.mimi_steps.run_placeholders(self.batch, N_CODEBOOKS)
                mx.eval(outs)
                outs = None
                mx.clear_cache()  # the scratch state goes back to the device
        return ahead

    def _ahead(self, frames: int | None) -> tuple[int | None, tuple[mx.array, ...]]:
        """(global position the next `frames` steps end before (None: no end), the LM step's
        (ring cache, ring provided, cols, user, keys) of a scratch step from the current state)."""
        horizon = None if frames is None else self.lm_cache.offset + frames
        user = mx.zeros((self.batch, N_CODEBOOKS), mx.int32)  # [B, 8]
        return horizon, (self.ring.cache, self.ring.provided, self.columns(), user, self.keys)

    def columns(self) -> mx.array:
        """[B, R.PACKED, CT] bool: the ring columns of each row's next call (`device_columns`);
        `write` limited to the user's streams, the only ones a step provides."""
        return device_columns(self.offsets)

    # ---- prefill -------------------------------------------------------------------------
    def prefill_inputs(self, plans: list[PrefillPlan], voices: list[Any]) -> list[PrefillInputs]:
        if len(plans) != self.batch or len(voices) != self.batch:
            raise ConfigError(
                f"prefill needs {self.batch} plans and voices, got {len(plans)} and {len(voices)}"
            )
        rows = [prefill_inputs(p, v, self._initial_np) for p, v in zip(plans, voices, strict=True)]
        check_offsets([r.offset for r in rows])
        for r in rows:
            if len(r.embeddings) and r.embeddings.shape[1] != self.lm.cfg.dim:
                raise ConfigError(
                    f"voice embeddings have width {r.embeddings.shape[1]}, model dim {self.lm.cfg.dim}"
                )
        return rows

    def prefill(self, plans: list[PrefillPlan], voices: list[Any], stepwise: bool = False) -> None:
        """Run the prompt phases of every conversation: one batched temporal pass (or stepwise).

        Prompts of unequal length are left-padded to the longest: row b's LM positions start at
        `lm_cache.start[b]` (masked before), its token ring at its own offset.

        `voices[i]` has `.embeddings` [E, D] + `.cache` [17, 4] (a preset) or `.codes` [8, T].

        First it starts compiling rolekit's CUDA kernels of the conversation after the prompt
        (`compile_kernels_ahead`), so that they compile beside the prompt pass and beside MLX's
        own kernels of a step (built then, on a machine that lacks rolekit's) instead of after
        them; the warm-up's build finds them compiled or compiling (`nn.cubins`), waits for those
        it needs and cancels the rest not yet started (`kernel_build`). An interrupt cancels
        those not started.

        The prompt pass's block products take `Kernels.prompt_blocks` (on CUDA: a quantized
        checkpoint's weights dequantized into MLX's dense product, which needs no kernel compiled
        at run time).
        """
        rows = self.prefill_inputs(plans, voices)
        self.reset()
        longest = max(r.calls for r in rows)
        start = longest - np.array([r.calls for r in rows], np.int64)  # [B] left padding
        self.lm_cache.start = start if start.any() else None
        ahead = self.kernel_build = self.compile_kernels_ahead(begin=longest, mlx_kernels=True)
        try:
            x = self._prefill_embeddings(rows, longest)  # [B, L, D], left-padded with zeros
            if x is not None:
                if stepwise:
                    self._prefill_stepwise(x)
                else:  # the text head's logits of the prompt are never read: left unevaluated
                    hidden, _ = self.lm.temporal(x, self.lm_cache, self.kernels.prompt_blocks)
                    mx.eval(hidden, *self.lm_cache.arrays())
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise
        self.ring = R.Ring(
            cache=mx.array(np.concatenate([r.ring.cache for r in rows])),
            provided=mx.array(np.concatenate([r.ring.provided for r in rows])),
        )
        self.offsets = np.array([r.offset for r in rows], np.int64)
        self.mimi_state = self.mimi.make_state(self.batch)  # NVIDIA resets Mimi after the prompts
        mx.eval(self.ring.cache, self.ring.provided)

    def _prefill_embeddings(self, rows: list[PrefillInputs], longest: int) -> mx.array | None:
        if longest == 0:
            return None
        seqs = []
        for r in rows:
            parts = [mx.zeros((longest - r.calls, self.lm.cfg.dim), dtype=self.lm.dtype)]  # padding
            if len(r.embeddings):
                parts.append(mx.array(r.embeddings).astype(self.lm.dtype))
            if len(r.tokens):
                parts.append(self.lm.embed(mx.array(r.tokens.T[None]), self.kernels)[0])  # [N, D]
            seqs.append(mx.concatenate(parts, axis=0))  # [longest, D]
        return mx.stack(seqs)

    def _prefill_stepwise(self, x: mx.array) -> None:
        """NVIDIA's way: one temporal call (and a discarded depformer pass) per prompt frame."""
        greedy = SamplingParams(greedy=True)
        for t in range(x.shape[1]):
            h, logits = self.lm.temporal(x[:, t : t + 1], self.lm_cache)
            text = mx.argmax(logits[:, 0], axis=-1).astype(mx.int32)
            provided = mx.full((self.batch, self.lm.cfg.dep_q), -1, dtype=mx.int32)
            audio = self.lm.depformer(
                h[:, 0], text, provided, greedy, None, steps=self.dep_steps, kernels=self.kernels
            )
            mx.eval(audio, *self.lm_cache.arrays())

    # ---- one step ------------------------------------------------------------------------
    def step(self, user_pcm: np.ndarray) -> StepOutput:
        """user_pcm [B, 1920] float32 -> agent pcm [B, 1920], text [B], audio [B, 8]; one host sync."""
        pcm_in = np.ascontiguousarray(user_pcm, dtype=np.float32)
        if pcm_in.shape != (self.batch, FRAME_SAMPLES):
            raise ConfigError(
                f"step needs user audio [{self.batch}, {FRAME_SAMPLES}], got {list(pcm_in.shape)}"
            )
        codes = self.mimi_steps.encode_step(mx.array(pcm_in)[:, None, :], self.mimi_state)  # [B, K, 1]
        # the device encodes while the host builds the LM step (on a GPU: ~0.7 ms of the codec
        # hidden under ~1.6 ms of graph building); no host sync
        mx.async_eval(codes)
        user = codes[:, :N_CODEBOOKS, 0].astype(mx.int32)  # [B, 8]
        cols = self.columns()
        if not self.offsets.any():  # LMGen's first call only primes: no forward pass
            tokens = mx.concatenate([mx.zeros((self.batch, 1 + N_CODEBOOKS), mx.int32), user], axis=1)
            ring = R.provide(mx, self.ring, tokens, None, R.unpack(cols), self.initial)
            self.ring = R.prime(mx, ring, self.initial)
            self.offsets = self.offsets + 1
            return self._not_ready(user)
        cache, provided, out, self.keys = self.lm_step(
            self.ring.cache, self.ring.provided, cols, user, self.keys, self.lm_cache
        )
        self.ring = R.Ring(cache=cache, provided=provided)
        ready = bool((self.offsets > MAX_DELAY).all())  # uniform: see check_offsets
        self.offsets = self.offsets + 1
        if not ready:
            return self._not_ready(user)
        mx.async_eval(out)  # the LM runs while the host builds the decode step
        pcm = self.mimi_steps.decode_step(out[:, 1:, None], self.mimi_state)  # [B, 1, 1920]
        mx.eval(pcm, out, user, self.keys, cache, *self.lm_cache.arrays())  # the one host sync
        out_np = np.array(out)
        self.last_user_codes = np.array(user)
        return StepOutput(pcm=np.array(pcm[:, 0]), text=out_np[:, 0], audio=out_np[:, 1:], ready=True)

    def _not_ready(self, user: mx.array) -> StepOutput:
        mx.eval(self.ring.cache, user, *self.lm_cache.arrays())
        self.last_user_codes = np.array(user)
        return StepOutput(
            pcm=np.zeros((self.batch, FRAME_SAMPLES), np.float32),
            text=np.full(self.batch, PAD, np.int64),
            audio=np.full((self.batch, N_CODEBOOKS), -1, np.int64),
            ready=False,
        )


def check_offsets(offsets: list[int]) -> None:
    """Conversations of one batch must agree on whether frames are ready (LMGen's first
    MAX_DELAY + 1 calls give none): equal offsets, or every prompt longer than that."""
    if len(set(offsets)) > 1 and min(offsets) <= MAX_DELAY:
        raise ConfigError(
            f"a prompt of {min(offsets)} frames cannot share a batch with longer ones: "
            f"prompts in a mixed-length batch need more than {MAX_DELAY} frames (prefill frames: "
            + ", ".join(str(o) for o in offsets)
            + ")"
        )
