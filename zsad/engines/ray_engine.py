"""The Ray engine: the model runs in Ray actors, one :class:`~zsad.detector.Detector` per worker.

``engine="ray"`` (``--engine ray``) starts ``workers`` actors. Each builds its detector once (prototypes cached)
and runs the same per-batch functions as the in-process engine; the calling process (the *driver*) hands out
work in shards, at most two per worker at a time (memory stays bounded), and turns the results into metrics and
files exactly as it does for the in-process engine.

* **Where**: ``address=None`` starts a local Ray runtime in this process (or uses the one already initialised);
  ``"auto"`` joins the cluster started with ``ray start``; ``"host:6379"`` or ``"ray://host:10001"`` a given one.
  An address that cannot be reached fails at once with one line.
* **Resources**: with GPUs in the cluster, one worker per GPU by default, each holding ``num_gpus=1`` (a share
  when there are more workers than GPUs) and running on CUDA, with as many image-decoding processes as its CPUs
  (unless the runtime options say otherwise); without GPUs, the CPUs are split between the workers (``num_cpus``
  each, and as many PyTorch threads).
* **Runtime options** (``runtime=``: compile, TF32, input pipeline; :class:`~zsad.runtime.RuntimeOptions`) reach
  the detectors every worker builds.
* **Faults**: a worker process that dies is restarted by Ray (``max_restarts``) and its unfinished work is run
  again (``max_task_retries``); outputs are written atomically, so the results are complete and identical.
* **Few-shot**: the reference image paths of a class travel in its :class:`~zsad.evaluation.batch.ClassPlan`;
  a worker adds them to its detector when it gets the class's first shard and keeps them for the class's next
  shards (:class:`~zsad.evaluation.batch.ReferenceSlot`), so each worker encodes the K images once per class and
  seed, exactly as the in-process engine does, and the numbers are the same.
* **Files**: the driver writes every result file; workers write only per-image maps and overlays of ``zsad
  predict``, directly into ``--out``, which on a multi-machine cluster must therefore be storage every node
  can write (NFS, a mounted bucket). Every node needs zsad installed and the checkpoints and images at the same
  paths (or named checkpoints it can download).
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from zsad.engines.base import Engine, Runner
from zsad.errors import ConfigError, ZsadError, require

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.data import Sample
    from zsad.detector import Detector
    from zsad.evaluation.batch import ClassPlan, ScoredBatch
    from zsad.prediction.shards import PredictOptions, Shard, ShardResult
    from zsad.runtime import RuntimeOptions

__all__ = ["RayEngine", "RayRunner"]

IN_FLIGHT_PER_WORKER = 2
"""Shards handed to a worker at a time: one running, one queued (keeps it busy; bounds the driver's memory)."""
CONNECT_TIMEOUT_S = 5.0


def _ray() -> Any:
    return require("ray", "ray", "The Ray engine (engine='ray', --engine ray)")


class _Worker:
    """A Ray actor holding the detectors of one worker (one per configuration, backbone shared)."""

    def __init__(self, device: Any, dtype: Any, threads: int | None, runtime: RuntimeOptions | None = None):
        import torch

        from zsad.engines.detectors import DetectorCache

        if threads:
            torch.set_num_threads(threads)
        self.threads = threads
        self.cache = DetectorCache(device, dtype, runtime=runtime)
        self.slot: Any = None  # the ReferenceSlot of the detector that last scored a class

    def _references(self, det: Detector | None, cls: str = "", paths: tuple[str, ...] = (),
                    batch_size: int | None = None) -> None:
        """Give ``det`` exactly ``paths`` as the normal references of ``cls`` (kept for the class's next shards);
        ``det=None``: remove whatever references the worker put in place (before other work)."""
        from zsad.evaluation.batch import ReferenceSlot

        if self.slot is not None and self.slot.detector is not det:
            self.slot.release()
            self.slot = None
        if det is not None:
            self.slot = self.slot or ReferenceSlot(det)
            self.slot.use(cls, paths, batch_size)

    def _detector(self, config: dict) -> Detector:
        from zsad.config import DetectorConfig

        return self.cache.get(DetectorConfig.from_dict(config))

    def info(self, config: dict) -> dict:
        import os

        det = self._detector(config)
        return {"device": str(det.device), "backbone_source": det.weights_source,
                "runtime_options": det.runtime_options.describe(), "pid": os.getpid(), "host": socket.gethostname()}

    def pid(self) -> int:
        import os

        return os.getpid()

    def score(self, config: dict, samples: list, cls: str, plan: ClassPlan, batch_size: int | None,
              start: int) -> list[ScoredBatch]:
        from zsad.evaluation.batch import iter_scored

        det = self._detector(config)
        self._references(det, cls, plan.references, batch_size)  # encoded once per class and worker
        return list(iter_scored(det, samples, cls, plan, batch_size, start=start, record_warnings=True))

    def predict(self, config: dict, shard: Shard, options: PredictOptions) -> ShardResult:
        from zsad.prediction.shards import predict_shard

        self._references(None)
        return predict_shard(self._detector(config), shard, options, record_warnings=True)

    def overlay_scale(self, config: dict, paths: list[str], class_name: str, batch_size: int | None) -> Any:
        from zsad.prediction.shards import overlay_scale

        self._references(None)
        return overlay_scale(self._detector(config), paths, class_name, batch_size)


def _reachable(address: str) -> None:
    """Fail at once, in one line, when a ``host:port`` / ``ray://host:port`` address does not answer."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.hostname is None or parsed.port is None:
        raise ConfigError(f"--ray-address {address!r} is not 'auto', 'host:port' or 'ray://host:port'.")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"Cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check the address and that the "
            "head node runs (`ray start --head`), or omit --ray-address to start a local Ray runtime."
        ) from None


def _reemit(caught: Sequence[tuple[Any, str]]) -> None:
    for category, message in caught:
        cat = category if isinstance(category, type) and issubclass(category, Warning) else UserWarning
        warnings.warn(message, cat, stacklevel=3)


class RayRunner(Runner):
    """The workers of a :class:`RayEngine`, running one configuration."""

    def __init__(self, engine: RayEngine, config: DetectorConfig):
        self.engine = engine
        self.config = config
        self._config = config.model_dump(mode="json")
        info = engine._get(engine.actors[0].info.remote(self._config))
        self.device = f"{info['device']} x {len(engine.actors)} Ray worker(s)"
        self.runtime_options = info["runtime_options"]  # as the workers' detectors have them
        self.backbone_source = info["backbone_source"] if info["host"] == socket.gethostname() else None

    def _run(self, tasks: Iterable[Any], submit: Callable[[Any, Any], Any], ordered: bool) -> Iterator[tuple[Any, Any]]:
        """Hand ``tasks`` to the workers (at most :data:`IN_FLIGHT_PER_WORKER` each); yield ``(task, result)``
        as results arrive, or in task order with ``ordered``."""
        ray = _ray()
        actors = self.engine.actors
        limit = IN_FLIGHT_PER_WORKER * len(actors)
        load = {i: 0 for i in range(len(actors))}
        in_flight: dict[Any, tuple[int, int, Any]] = {}  # ref -> (task number, actor, task)
        ready: dict[int, tuple[Any, Any]] = {}
        it = iter(tasks)
        submitted = yielded = 0
        exhausted = False
        while True:
            while not exhausted and submitted - yielded < limit:
                task = next(it, None)
                if task is None:
                    exhausted = True
                    break
                a = min(load, key=load.__getitem__)
                in_flight[submit(actors[a], task)] = (submitted, a, task)
                load[a] += 1
                submitted += 1
            if not in_flight and not ready:
                return
            if in_flight and not (ordered and yielded in ready):
                done, _ = ray.wait(list(in_flight), num_returns=1)
                number, a, task = in_flight.pop(done[0])
                load[a] -= 1
                result = self.engine._get(done[0])
                if not ordered:
                    yielded += 1
                    yield task, result
                    continue
                ready[number] = (task, result)
            while yielded in ready:
                yield ready.pop(yielded)
                yielded += 1

    def score_class(self, samples: Sequence[Sample], cls: str, plan: ClassPlan, *, batch_size: int | None,
                    label: str, progress: bool) -> Iterator[ScoredBatch]:
        from tqdm.auto import tqdm

        bs = batch_size or self.config.batch_size
        size = bs * 4
        shards = [(i, list(samples[i : i + size])) for i in range(0, len(samples), size)]

        def submit(actor: Any, task: tuple[int, list]) -> Any:
            return actor.score.remote(self._config, task[1], cls, plan, batch_size, task[0])

        with tqdm(total=len(samples), desc=f"{label}/{cls}", unit="img", disable=not progress, leave=False) as bar:
            for _, batches in self._run(shards, submit, ordered=True):
                for sb in batches:
                    _reemit(sb.warnings)
                    bar.update(len(sb))
                    yield sb

    def predict_shards(self, shards: Iterable[Shard], options: PredictOptions, *,
                       progress: Callable[[int], object] | None = None) -> Iterator[ShardResult]:
        def submit(actor: Any, shard: Shard) -> Any:
            return actor.predict.remote(self._config, shard, options)

        for _, result in self._run(shards, submit, ordered=False):
            _reemit(result.warnings)
            if progress is not None:
                progress(len(result.rows))
            yield result

    def overlay_scale(self, paths: Sequence[str], class_name: str,
                      batch_size: int | None) -> tuple[float, float] | None:
        ref = self.engine.actors[0].overlay_scale.remote(self._config, list(paths), class_name, batch_size)
        return self.engine._get(ref)


class RayEngine(Engine):
    """Run the model on Ray workers (see the module docstring).

    Args:
        workers: number of workers (default: one per GPU of the cluster, else one).
        address: ``None`` (a local Ray runtime, or the one this process already initialised), ``"auto"``, or
            ``"host:port"`` / ``"ray://host:port"``.
        device, dtype: as for :class:`~zsad.detector.Detector` (default: CUDA on workers holding a GPU, else CPU).
        detector: its configuration, dtype and runtime options are used (workers build their own detectors from
            them).
        max_restarts: how often Ray restarts a worker that died (and reruns its unfinished work).
        runtime: the workers' runtime options (:class:`~zsad.runtime.RuntimeOptions` or a dict of its fields).
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, device: Any = None, dtype: Any = None,
                 detector: Detector | None = None, max_restarts: int = 3,
                 runtime: RuntimeOptions | dict | None = None):
        from zsad.runtime import RuntimeOptions

        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}.")
        self.workers = workers
        self.address = address
        self.device = str(device) if device is not None else None
        self.dtype = dtype if dtype is not None or detector is None else detector.dtype
        given = runtime if runtime is not None or detector is None else detector.runtime_options
        self.runtime = RuntimeOptions.coerce(given)
        self.max_restarts = max_restarts
        self.actors: list[Any] = []
        self.resources: dict[str, Any] = {}
        self._started_ray = False
        self._runners: dict[str, RayRunner] = {}

    # -- cluster ---------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join (or start) the Ray runtime; raise one clear :class:`ConfigError` when it cannot be reached."""
        self._connect()

    def _connect(self) -> None:
        ray = _ray()
        if self.address not in (None, "auto"):
            _reachable(self.address)
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level="WARNING")
        except ConnectionError as exc:
            raise ConfigError(
                f"Cannot connect to a Ray cluster at --ray-address {self.address} ({exc}); check that one runs "
                "(`ray start --head`) and that this environment has its settings (for a cluster with token "
                "authentication: RAY_AUTH_MODE=token and its token), or omit --ray-address to start a local Ray "
                "runtime."
            ) from None
        self._started_ray = True

    def _start(self) -> None:
        if self.actors:
            return
        self._connect()
        ray = _ray()
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 1)), float(total.get("GPU", 0))
        use_gpu = gpus >= 1 and (self.device is None or self.device.startswith("cuda"))
        n = self.workers or (int(gpus) if use_gpu else 1)
        runtime = self.runtime
        if use_gpu:
            options = {"num_gpus": min(1.0, gpus / n), "num_cpus": max(1.0, (cpus // n) or 1.0)}
            device, threads = self.device or "cuda", None
            if runtime.pipeline.workers is None:  # decode with the worker's share of the CPUs, not the machine's
                runtime = replace(runtime, pipeline=replace(runtime.pipeline, workers=int(options["num_cpus"])))
        else:
            per = max(1, int(cpus // n))
            options = {"num_cpus": per, "num_gpus": 0}
            device, threads = self.device or "cpu", per
        actor = ray.remote(max_restarts=self.max_restarts, max_task_retries=self.max_restarts, **options)(_Worker)
        self.actors = [actor.remote(device, self.dtype, threads, runtime) for _ in range(n)]
        self.resources = {"workers": n, "per_worker": options, "device": device, "cluster": total}

    def _get(self, ref: Any) -> Any:
        """``ray.get`` that gives zsad's own errors back as they were raised in the worker."""
        ray = _ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ZsadError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as exc:
            raise ZsadError(
                f"A Ray worker died more than {self.max_restarts} times ({type(exc).__name__}); the run stopped. "
                "Check the worker logs (memory, GPU) and rerun: finished work is kept and resumed."
            ) from exc

    def runner(self, config: DetectorConfig) -> RayRunner:
        key = config.model_dump_json()
        if key not in self._runners:
            self._start()
            self._runners[key] = RayRunner(self, config)
        return self._runners[key]

    def worker_pids(self) -> list[int]:
        """The process ids of the workers, started if needed (for monitoring; a test kills one). A worker answers
        after the work queued before the question."""
        self._start()
        return [self._get(a.pid.remote()) for a in self.actors]

    def describe(self) -> dict:
        return {"name": self.name, "address": self.address, "workers": self.resources.get("workers", self.workers),
                "per_worker": self.resources.get("per_worker")}

    def close(self) -> None:
        if self.actors:
            ray = _ray()
            for a in self.actors:
                ray.kill(a)
            self.actors = []
        self._runners.clear()
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False
