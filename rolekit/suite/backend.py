"""What the suite needs from a model: a tokenizer for persona plans, and a prefilled engine per batch.

`MlxBackend` is the real thing (rolekit.models + rolekit.engine); tests pass a fake with the same shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rolekit.frames import PrefillPlan
from rolekit.session.scripted import StepEngine

# What `MlxBackend.fit_batch` leaves to everything but the ring KV caches (step activations, Mimi
# state, the voice prompts, Whisper, the allocator's fragmentation): this fraction of the free
# memory, plus these bytes.
KEEP_FREE_FRACTION = 0.10
KEEP_FREE_BYTES = 1_000_000_000


@dataclass(frozen=True)
class BatchFit:
    """`MlxBackend.fit_batch`'s answer and its grounds: `count` conversations fit in `free_bytes`
    (device memory not in use after the loaded model), each holding at most `kv_bytes` of ring KV
    cache at once."""

    count: int
    free_bytes: float
    kv_bytes: int

    def describe(self) -> str:
        """E.g. "61.2 GB free; 1.07 GB of KV cache each"."""
        return f"{_size(self.free_bytes)} free; {_size(self.kv_bytes)} of KV cache each"


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def fitting(free_bytes: float, each_bytes: int, wanted: int) -> int:
    """Conversations of `each_bytes` (> 0) that fit in `free_bytes` less the margin
    (`KEEP_FREE_FRACTION` of it and `KEEP_FREE_BYTES`), clamped to 1 .. `wanted`."""
    budget = free_bytes * (1.0 - KEEP_FREE_FRACTION) - KEEP_FREE_BYTES
    return max(1, min(wanted, int(budget // max(1, each_bytes))))


class Backend(Protocol):
    model_id: str
    is_random: bool

    @property
    def tokenizer(self) -> Any: ...

    def piece(self, text_id: int) -> str: ...

    def voice_frames(self, voice: str) -> int | None: ...

    def fit_batch(
        self, prefill: int, positions: int, wanted: int, share: float = 1.0, reserve: int = 0
    ) -> int:
        """How many conversations of a `prefill`-frame prompt and up to `positions` LM positions
        (prompt + conversation frames) one engine can run at once in `share` of the device's free
        memory, less `reserve` bytes (models still to load, e.g. Whisper): 1 <= answer <= `wanted`."""
        ...

    def start(
        self, plans: list[PrefillPlan], seeds: list[int], frames: int | None = None
    ) -> tuple[StepEngine, int | None]:
        """A prefilled engine for len(plans) conversations (one seed each) and the frames of context
        left; `frames`: the longest script's frames (the warm-up builds the step graphs that far)."""
        ...


class MlxBackend:
    """rolekit.models.load(spec) once; a fresh Engine per batch of runs."""

    def __init__(
        self, spec: str, loader: Callable[[str], Any] | None = None, warm: Callable[..., Any] | None = None
    ) -> None:
        """`loader(spec) -> ModelBundle` (default `models.load` with default options; the CLI passes
        its `--dtype` / `--quant` / `--compat` and progress display); `warm(engine, frames=N)` runs
        after each prefill, before the first timed step (the CLI's warm-up with a status line)."""
        from rolekit.text import Tokenizer, tokenizer_path

        self.spec = spec
        self._loader = loader
        self._warm = warm
        self._tokenizer = Tokenizer(tokenizer_path(spec))
        self._bundle: Any = None
        self._voices: dict[str, Any] = {}
        self.model_id = spec
        self.is_random = spec in ("tiny", "random-7b")
        self.last_fit: BatchFit | None = None  # the latest `fit_batch` answer with its grounds

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def piece(self, text_id: int) -> str:
        return self._tokenizer.piece(text_id)

    @property
    def bundle(self) -> Any:
        if self._bundle is None:
            from rolekit import models

            self._bundle = (self._loader or models.load)(self.spec)
            self.model_id = self._bundle.model_id
            self.is_random = bool(self._bundle.is_random)
        return self._bundle

    def _voice(self, voice: str) -> Any:
        if voice not in self._voices:
            from rolekit import models

            self._voices[voice] = models.load_voice(self.bundle, voice)
        return self._voices[voice]

    def voice_frames(self, voice: str) -> int | None:
        return self._voice(voice).frames

    def fit_batch(
        self, prefill: int, positions: int, wanted: int, share: float = 1.0, reserve: int = 0
    ) -> int:
        """Conversations whose ring KV caches (`LM.kv_bytes`) fit in `share` (0 < share <= 1:
        workers sharing a GPU) of the device memory free now, after the loaded model
        (`precision.free_memory_bytes`), less `reserve` bytes (models still to load, e.g.
        Whisper), less `KEEP_FREE_FRACTION` of it and `KEEP_FREE_BYTES`:
        1 <= answer <= `wanted`. A conversation holds its rings at `positions` at most, and twice
        at the size they have after the `prefill`-frame prompt and the warm-up (whose snapshot
        copies them). Loads the model first and empties MLX's buffer cache (what loading left
        there goes back to the device); `last_fit` keeps the answer with its grounds."""
        import mlx.core as mx

        from rolekit.engine.warmup import WARMUP_STEPS
        from rolekit.lm.precision import free_memory_bytes

        lm = self.bundle.lm
        mx.clear_cache()
        free = max(0.0, free_memory_bytes() * share - reserve)
        each = max(lm.kv_bytes(1, positions), 2 * lm.kv_bytes(1, prefill + WARMUP_STEPS))
        self.last_fit = BatchFit(fitting(free, each, wanted), free, each)
        return self.last_fit.count

    @property
    def model_info(self) -> dict[str, Any]:
        """The loaded model as reports show it (`ModelBundle.describe`: id, dtype, quant, compat,
        random weights and their label)."""
        return self.bundle.describe()

    def start(
        self, plans: list[PrefillPlan], seeds: list[int], frames: int | None = None
    ) -> tuple[StepEngine, int | None]:
        from rolekit.engine.engine import Engine
        from rolekit.lm.sampling import SamplingParams

        params = [SamplingParams(**p.sampling) for p in plans]
        plans = [dataclasses.replace(p, voice_frames=self.voice_frames(p.voice)) for p in plans]
        engine = Engine(
            self.bundle, batch=len(plans), params=params, seed=list(seeds), kernels=self.bundle.kernels
        )
        self._prefill(engine, plans, [self._voice(p.voice) for p in plans])
        if self._warm is not None:
            self._warm(engine, frames=frames)
        return engine, int(engine.frames_left)

    def _prefill(self, engine: Any, plans: list[PrefillPlan], voices: list[Any]) -> None:
        """Prefill `engine` with one plan and voice prompt per row (subclasses may cache it)."""
        engine.prefill(plans, voices)
