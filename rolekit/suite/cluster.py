"""`rolekit test --cluster ADDRESS`: a planned suite's batches run on Ray actors, results land here.

The driver plans and prepares every run as a local suite does (bad input stops before anything
starts), then hands whole batches (`--jobs` conversations each) to `SuiteWorker` actors, each of
which loads the model once. Each finished batch comes back as records (and Whisper transcripts made
on the worker); the driver saves, evaluates and appends them exactly as a local run does, so the suite
folder holds the same files. Rows reach results.jsonl in the order batches finish.

Faults: a batch whose worker dies (process killed, node lost) goes back to the queue and runs on
another worker, up to `max_attempts` losses (then its runs become error rows); a replacement worker
is started for each one lost. Ctrl-C (or any exception) kills every worker; finished runs stay.
Nothing is written for a batch until it has come back whole, so results.jsonl has each run once.

Ray is optional (`pip install 'rolekit[cluster]'`) and imported only here, at run time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rolekit.errors import ConfigError, RolekitError
from rolekit.suite.execute import GroupFinisher, GroupResult
from rolekit.suite.prepare import PreparedRun
from rolekit.suite.worker import ClusterBackend, SuiteWorker

INSTALL_HINT = "--cluster needs Ray: pip install 'rolekit[cluster]' (or pip install ray)"
JOIN_ATTEMPTS = 3  # ray.init tries on a transient Ray Client "Initialization failure"
JOIN_RETRY_S = 2.0


class ClusterError(RolekitError):
    """The cluster cannot be reached or cannot host the workers asked for (exit code 2)."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how the workers run.

    address: `auto` (the cluster `ray start` runs on this machine), `HOST:PORT` (a head's GCS port,
    6379 by default) or `ray://HOST:PORT` (Ray Client, port 10001).
    gpus_per_actor: GPUs each worker reserves; None = 1 on a cluster with GPUs, else 0.
    actors_per_node: workers per node; None = the node's GPUs // gpus_per_actor, or 1 on a CPU node.
    """

    address: str = "auto"
    gpus_per_actor: float | None = None
    actors_per_node: int | None = None
    max_attempts: int = 3  # worker losses one batch may suffer before its runs become error rows
    start_timeout_s: float = 900.0  # no worker ready for this long: the remaining runs become errors
    prefill_cache: bool = True
    kernels: str = ""  # `--kernels` text, turned into a policy by each worker for its own device


def import_ray() -> Any:
    use_token_if_present()  # Ray reads its auth mode when it is first imported
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def bootstrap_address(address: str) -> str:
    """HOST:PORT that `address` names: `auto` is $RAY_ADDRESS, else the cluster `ray start` last
    started on this machine (Ray's own lookup); `ray://HOST:PORT` is the Ray Client port."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address or address == "auto":
            current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
            address = current.read_text().strip() if current.is_file() else ""
        if not address:
            raise ClusterError(
                "--cluster auto: no Ray cluster runs on this machine; start one with `ray start --head` "
                "or name it: --cluster HOST:PORT"
            )
    return address.removeprefix("ray://")


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ClusterError naming --cluster unless something listens at the cluster's address."""
    target = bootstrap_address(address)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--cluster {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(
            f"--cluster {address}: no Ray cluster at {target} ({exc.strerror or exc}); "
            "start one with `ray start --head` (see README: Scale-out)"
        ) from None


def use_token_if_present() -> None:
    """Clusters of Ray >= 2.5x check a token (`ray start` turns it on when ~/.ray/auth_token exists,
    or RAY_AUTH_TOKEN is set); the driver does the same unless RAY_AUTH_MODE says otherwise."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


@dataclass
class _Slot:
    """One worker actor and what the driver knows about it."""

    handle: Any
    node_id: str
    resources: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


def memory_share(plan: list[tuple[str, dict[str, float]]]) -> float:
    """The part of its device's free memory each worker of `plan` ((node id, Ray resources) per
    worker) may fill: its `num_gpus` where workers share a GPU (below 1); without GPUs, an equal
    part of the node's RAM among the workers of the most crowded node; else all of it."""
    gpus = max((res.get("num_gpus", 0.0) for _, res in plan), default=0.0)
    if gpus > 0.0:
        return min(gpus, 1.0)
    per_node = Counter(node for node, _ in plan)
    return 1.0 / max(per_node.values(), default=1)


class RayCluster:
    """Connect, place the workers, run batches. Use as a context manager: leaving it kills the workers
    (and disconnects when it connected)."""

    def __init__(self, options: ClusterOptions, model: str, load: Any = None) -> None:
        """`load`: the driver's `models.LoadOptions` (--dtype / --quant / --compat), used by every worker."""
        self.options = options
        self.model = model
        self.load = load
        self.ray: Any = None
        self._connected_here = False
        self.slots: list[_Slot] = []
        self.starting: dict[Any, _Slot] = {}  # ready() ref -> worker still loading its model
        self.idle: deque[_Slot] = deque()
        self.inflight: dict[Any, tuple[_Slot, int]] = {}  # run() ref -> (worker, batch index)
        self.lost = 0  # workers that died under a batch
        self.retried: list[int] = []  # batch indexes handed to another worker
        self._plan: list[tuple[str, dict[str, float]]] = []  # (node id, resources) per worker slot
        self._backend: ClusterBackend | None = None
        self.start_errors: list[str] = []  # why workers died before they were ready (last line each)

    # ---- connection and placement ------------------------------------------------------------
    def __enter__(self) -> RayCluster:
        ray = self.ray = import_ray()
        if not ray.is_initialized():
            check_reachable(self.options.address)  # Ray itself retries a dead address for minutes
            try:
                self._init(ray)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                why = str(exc.__cause__ or exc).strip().splitlines() or [type(exc).__name__]
                raise ClusterError(
                    f"--cluster {self.options.address}: cannot join the Ray cluster there "
                    f"({why[0][:300]}); if the head uses token authentication, give this "
                    "machine its token (~/.ray/auth_token or RAY_AUTH_TOKEN) and RAY_AUTH_MODE=token"
                ) from None
            self._connected_here = True
        try:
            self._plan = self._placement()
            for node_id, res in self._plan:
                self._start_worker(node_id, res)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _init(self, ray: Any) -> None:
        """`ray.init`, retried a few times when a Ray Client server reports a transient
        "Initialization failure" (its per-client server did not start in time on a busy head)."""
        for attempt in range(JOIN_ATTEMPTS):
            try:
                ray.init(address=self.options.address, logging_level=logging.WARNING, log_to_driver=False)
                return
            except ConnectionError as exc:
                transient = "Initialization failure" in str(
                    exc.__cause__ or exc
                ) or "Initialization failure" in str(exc)
                if not transient or attempt + 1 == JOIN_ATTEMPTS:
                    raise
                ray.shutdown()
                time.sleep(JOIN_RETRY_S)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._connected_here and self.ray is not None:
            self.ray.shutdown()
            self._connected_here = False

    def stop(self) -> None:
        """Kill every worker (running batches are dropped; nothing of theirs was written)."""
        for slot in self.slots:
            try:
                self.ray.kill(slot.handle, no_restart=True)
            except Exception:  # already dead
                pass
        self.slots, self.starting, self.inflight = [], {}, {}
        self.idle.clear()

    def _placement(self) -> list[tuple[str, dict[str, float]]]:
        opts = self.options
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        any_gpu = any(n["Resources"].get("GPU", 0) for n in nodes)
        gpus = opts.gpus_per_actor if opts.gpus_per_actor is not None else (1.0 if any_gpu else 0.0)
        plan = []
        for n in nodes:
            res = n["Resources"]
            if opts.actors_per_node is not None:
                count = opts.actors_per_node
            elif gpus > 0:
                count = int(res.get("GPU", 0) // gpus)
            else:
                count = 1
            cpus = min(1.0, res.get("CPU", 0) / count) if count else 0.0
            plan += [(n["NodeID"], {"num_gpus": gpus, "num_cpus": cpus})] * count
        if not plan:
            have = sum(n["Resources"].get("GPU", 0) for n in nodes)
            raise ClusterError(
                f"--cluster {opts.address}: no node can host a worker with --gpus-per-actor {gpus:g} "
                f"({len(nodes)} nodes, {have:g} GPUs)"
            )
        return plan

    def worker_args(self) -> tuple[str, bool, dict[str, Any] | None]:
        """`SuiteWorker`'s arguments, none of whose classes live in a module that imports mlx: the load
        options as a dict of their fields (see SuiteWorker; a field's value is kept as it is), with
        `ClusterOptions.kernels`' text as `kernels` when given."""
        load = None
        if self.load is not None:
            load = {f.name: getattr(self.load, f.name) for f in dataclasses.fields(self.load)}
        if self.options.kernels:
            load = {**(load or {}), "kernels": self.options.kernels}
        return self.model, self.options.prefill_cache, load

    def _start_worker(self, node_id: str, res: dict[str, float]) -> _Slot:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cls = self.ray.remote(SuiteWorker)
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=True)  # elsewhere if that node is gone
        handle = cls.options(scheduling_strategy=strategy, max_restarts=0, **res).remote(*self.worker_args())
        slot = _Slot(handle, node_id, res)
        self.slots.append(slot)
        self.starting[handle.ready.remote()] = slot
        return slot

    # ---- the driver's view of the model --------------------------------------------------------
    @property
    def backend(self) -> ClusterBackend:
        """Tokenizer here; voice lengths and model id from the first worker that is ready."""
        if self._backend is None:
            self._backend = ClusterBackend(
                self.model, self._ask, memory_share=memory_share(self._plan), ask_all=self._ask_all
            )
        return self._backend

    def _ask(self, method: str, *args: Any) -> Any:
        slot = self._wait_ready()
        return self.ray.get(getattr(slot.handle, method).remote(*args))

    def _ask_all(self, method: str, *args: Any) -> list[Any]:
        """The answers of every worker, asked once none is still starting (workers sharing a GPU
        have then all loaded their model: the free memory one reports is what is really left)."""
        self._wait_ready()
        deadline = time.monotonic() + self.options.start_timeout_s
        while self.starting and time.monotonic() < deadline:
            self._collect_ready(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        return self.ray.get([getattr(slot.handle, method).remote(*args) for slot in self.idle])

    def _wait_ready(self) -> _Slot:
        deadline = time.monotonic() + self.options.start_timeout_s
        while not self.idle:
            if not self.starting:
                why = f": {self.start_errors[-1]}" if self.start_errors else ""
                raise ClusterError(f"--cluster {self.options.address}: no worker could start{why}")
            self._collect_ready(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() > deadline and not self.idle:
                raise ClusterError(
                    f"--cluster {self.options.address}: no worker was ready after "
                    f"{self.options.start_timeout_s:g} s (are the requested GPUs / CPUs free?)"
                )
        return self.idle[0]

    def _collect_ready(self, timeout: float) -> None:
        refs = list(self.starting)
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in done:
            self._on_ready(ref)

    def _on_ready(self, ref: Any) -> None:
        slot = self.starting.pop(ref)
        try:
            slot.info = self.ray.get(ref)
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RolekitError):  # e.g. the model is missing on that node
                raise ClusterError(f"a worker could not load --model {self.model}: {cause}") from None
            self.start_errors.append(str(cause or exc).strip().splitlines()[-1][:300])
            self._forget(slot)
            return
        self.idle.append(slot)

    def _forget(self, slot: _Slot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)

    # ---- the executor (rolekit.suite.execute.run_suite's `executor`) ---------------------------
    def __call__(
        self, groups: list[list[PreparedRun]], finish: GroupFinisher
    ) -> Iterator[list[dict[str, Any]]]:
        """Run every batch on the workers; yield each batch's rows (from `finish`) as it comes back."""
        ray = self.ray
        transcribe = finish.whisper_dir is not None  # Whisper runs on the workers (next to the audio)
        queue: deque[int] = deque(range(len(groups)))
        losses = [0] * len(groups)
        ls = finish.listener
        stopped_cleanly = False
        try:
            while queue or self.inflight:
                while queue and self.idle:
                    slot, gid = self.idle.popleft(), queue.popleft()
                    if ls.on_run_start:
                        ls.on_run_start([p.spec for p in groups[gid]])
                    ref = slot.handle.run.remote(groups[gid], finish.whisper, finish.asr, transcribe)
                    self.inflight[ref] = (slot, gid)
                if queue and not self.idle and not self.inflight:
                    if not self.starting:  # every worker is gone and none can replace them
                        yield from (self._unrunnable(groups[g], finish, "no worker left") for g in queue)
                        queue.clear()
                        break
                    try:
                        self._wait_ready()
                    except ClusterError as exc:
                        yield from (self._unrunnable(groups[g], finish, str(exc)) for g in queue)
                        queue.clear()
                        break
                    continue
                waiting = list(self.inflight) + list(self.starting)
                done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)  # 1 s: Ctrl-C stays responsive
                for ref in done:
                    if ref in self.starting:
                        self._on_ready(ref)
                        continue
                    slot, gid = self.inflight.pop(ref)
                    result = self._result(ref)
                    if result is None:  # the worker died under this batch
                        self.lost += 1
                        losses[gid] += 1
                        self._forget(slot)
                        self._replace(slot)
                        if losses[gid] >= self.options.max_attempts:
                            why = f"lost {losses[gid]} workers while running this batch"
                            yield self._unrunnable(groups[gid], finish, why)
                        else:
                            self.retried.append(gid)
                            queue.appendleft(gid)
                        continue
                    self.idle.append(slot)
                    if result.usage:
                        raise ClusterError(f"on worker {slot.info.get('host', '?')}: {result.error}")
                    yield finish(groups[gid], result)
            stopped_cleanly = True
        finally:
            if not stopped_cleanly:  # Ctrl-C, a usage error, or the caller stopped reading: stop all
                self.stop()

    def _result(self, ref: Any) -> GroupResult | None:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return self.ray.get(ref)
        except RayActorError:  # includes the worker's process or node dying
            return None
        except RayTaskError as exc:
            detail = str(getattr(exc, "cause", exc)).splitlines()[0]
            return GroupResult(None, 0.0, error=f"worker failed: {detail}")

    def _replace(self, lost: _Slot) -> None:
        self._start_worker(lost.node_id, lost.resources)

    @staticmethod
    def _unrunnable(group: list[PreparedRun], finish: GroupFinisher, why: str) -> list[dict[str, Any]]:
        return finish(group, GroupResult(None, 0.0, error=f"not run: {why}"))
