"""The suite's remote half on a Ray cluster: a worker process that holds one loaded model and drives
the batches the driver hands it (rolekit.suite.cluster places and schedules them).

Ray is not imported here: `cluster.py` wraps `SuiteWorker` with `ray.remote` at run time, so this
module (and its tests) need no Ray.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from rolekit.errors import ConfigError, RolekitError
from rolekit.frames import PrefillPlan
from rolekit.suite.backend import MlxBackend
from rolekit.suite.execute import GroupResult, drive_group
from rolekit.suite.prepare import PreparedRun


class CachedBackend(MlxBackend):
    """MlxBackend whose prefills go through the on-disk prefill cache (`$ROLEKIT_CACHE/prefill`, as
    `rolekit respond` / `live` use it): a worker that runs the same persona again restores its prompt
    phases instead of recomputing them. A restored row equals a recomputed one bit for bit."""

    cache_hits: int = 0  # batches whose every row came from the cache

    def _prefill(self, engine: Any, plans: list[PrefillPlan], voices: list[Any]) -> None:
        from rolekit.engine.snapshot import prefill_cached
        from rolekit.hub import rolekit_cache

        self.cache_hits += prefill_cached(engine, plans, voices, rolekit_cache() / "prefill")


class SuiteWorker:
    """One Ray actor: loads `model` once (`ready`), then runs whole batches (`run`). Holds no suite
    state: a batch it was running when it died is simply handed to another worker."""

    def __init__(self, model: str, prefill_cache: bool = True, load: dict[str, Any] | None = None) -> None:
        """`load`: the driver's `models.LoadOptions` as a dict of its fields (None: the defaults), so
        workers load as the driver would (a `kernels` text, `--kernels`, becomes the policy of this
        worker's device). A dict, not the dataclass: Ray unpickles the
        arguments before `__init__` runs, and unpickling a LoadOptions imports `rolekit.models`, hence
        mlx, before `preload_openblas`: MLX would then bind the reference BLAS, whose GEMMs round
        differently from the driver's OpenBLAS (the cluster's audio would differ from a local run's)."""
        from rolekit.codec.blas import preload_openblas

        self.blas = preload_openblas()  # before mlx loads, as in the CLI
        fields = dict(load or {})

        def loader(spec: str) -> Any:
            from rolekit import models

            if isinstance(fields.get("kernels"), str):  # `--kernels` text: this worker's device decides
                from rolekit.nn.kernels import Kernels

                fields["kernels"] = Kernels.for_device(None, fields["kernels"])
            return models.load(spec, models.LoadOptions(**fields))

        def warm(engine: Any, frames: int | None = None) -> Any:
            from rolekit.engine.warmup import warmup  # quiet: a worker has no terminal

            return warmup(engine, frames=frames)

        kind = CachedBackend if prefill_cache else MlxBackend
        self.backend: MlxBackend = kind(model, loader, warm)
        self._models: dict[tuple[str | None, str | None], Any] = {}  # resolved Whisper models

    def ready(self) -> dict[str, Any]:
        """Load the model; where this worker runs, what it loaded (`describe`: model id, dtype, quant,
        compat, random weights) and how MLX's CPU BLAS was bound (`blas`)."""
        bundle = self.backend.bundle
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "model_id": bundle.model_id,
            "is_random": bool(bundle.is_random),
            "model": bundle.describe(),
            "blas": self.blas,
        }

    def voice_frames(self, voice: str) -> int | None:
        return self.backend.voice_frames(voice)

    def fit_batch(
        self, prefill: int, positions: int, wanted: int, share: float = 1.0, reserve: int = 0
    ) -> int:
        """`MlxBackend.fit_batch` on this worker's device (its memory free after its model), of which
        this worker may use `share` (workers sharing a GPU: their `--gpus-per-actor`)."""
        return self.backend.fit_batch(prefill, positions, wanted, share, reserve)

    def run(
        self, group: list[PreparedRun], whisper: str | None, asr: str | None, transcribe: bool
    ) -> GroupResult:
        """Drive one batch; transcribe its records here when `transcribe` (Whisper `whisper` with
        backend `asr`, resolved on this node; the driver then only evaluates). A usage error comes
        back as the `error` of a result with `usage=True`."""
        try:
            result = drive_group(group, self.backend)
            if transcribe and result.records is not None:
                from rolekit.transcribe.whisper import transcribe_record

                model = self._asr(whisper, asr)
                result.transcripts = [transcribe_record(r, model) for r in result.records]
        except RolekitError as exc:
            return GroupResult(None, 0.0, error=str(exc), usage=True)
        return result

    def _asr(self, spec: str | None, asr: str | None) -> Any:
        if (spec, asr) not in self._models:
            from rolekit.transcribe.whisper import resolve_asr

            self._models[(spec, asr)] = resolve_asr(spec, asr)
        return self._models[(spec, asr)]


class ClusterBackend:
    """The driver's Backend on a cluster: the tokenizer here (persona plans), the model's facts
    (voice lengths, model id) from a worker; `start` never runs on the driver."""

    def __init__(self, model: str, ask: Any, memory_share: float = 1.0, ask_all: Any = None) -> None:
        """`ask(method_name, *args)`: the answer of one ready worker; `ask_all(method_name, *args)`:
        the answers of every worker once all have started (None: `ask`'s only); `memory_share`: the
        part of a device's free memory each worker may use (workers sharing a GPU: below 1)."""
        from rolekit.text import Tokenizer, tokenizer_path

        self._tokenizer = Tokenizer(tokenizer_path(model))
        self._ask = ask  # ask(method_name, *args) -> the answer of one ready worker
        self.memory_share = memory_share
        self._ask_all = ask_all or (lambda method, *args: [ask(method, *args)])
        self._frames: dict[str, int | None] = {}
        info = ask("ready")
        self.model_id: str = info["model_id"]
        self.is_random: bool = info["is_random"]
        self.model_info: dict[str, Any] = info["model"]  # as the workers loaded it

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def piece(self, text_id: int) -> str:
        return self._tokenizer.piece(text_id)

    def voice_frames(self, voice: str) -> int | None:
        if voice not in self._frames:
            self._frames[voice] = self._ask("voice_frames", voice)
        return self._frames[voice]

    def fit_batch(
        self, prefill: int, positions: int, wanted: int, share: float = 1.0, reserve: int = 0
    ) -> int:
        """The smallest answer of the workers (`SuiteWorker.fit_batch`, each with `memory_share`,
        asked once all have loaded their model): the batches the driver forms fit on every
        worker's device. `share` is the workers' own, not the caller's."""
        answers = self._ask_all("fit_batch", prefill, positions, wanted, self.memory_share, reserve)
        return min(int(a) for a in answers)

    def start(
        self, plans: list[PrefillPlan], seeds: list[int], frames: int | None = None
    ) -> tuple[Any, int | None]:
        raise ConfigError("a cluster suite runs its batches on the workers, not on the driver")
