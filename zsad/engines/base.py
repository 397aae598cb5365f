"""The engine contract: where the model runs, and the two kinds of work it runs.

An :class:`Engine` is chosen once per workflow call (``engine="local"`` or ``"ray"``); :meth:`Engine.runner`
gives a :class:`Runner` for one detector configuration (built once, prototypes cached). A runner does the *model
side* of the work only, always through the same functions: :func:`zsad.evaluation.batch.iter_scored` for
evaluation, :func:`zsad.prediction.shards.predict_shard` for prediction. Everything that turns their outputs into
metrics and files (the per-class scorer :class:`zsad.evaluation.scorer.ClassScorer`, the report writers, the part
files and their merge) runs in the calling process, the same for every engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.data import Sample
    from zsad.evaluation.batch import ClassPlan, ScoredBatch
    from zsad.prediction.shards import PredictOptions, Shard, ShardResult

__all__ = ["Engine", "Runner"]


class Runner(ABC):
    """Runs the model of one configuration (``config``). ``device`` describes where (for manifests);
    ``backbone_source`` is the local folder the backbone was loaded from, when known (for checkpoint hashes);
    ``runtime_options`` the runtime options of its detectors (:meth:`zsad.runtime.RuntimeOptions.describe`), when
    they have them."""

    config: DetectorConfig
    device: str = "?"
    backbone_source: str | None = None
    runtime_options: dict | None = None

    @abstractmethod
    def score_class(self, samples: Sequence[Sample], cls: str, plan: ClassPlan, *, batch_size: int | None,
                    label: str, progress: bool) -> Iterator[ScoredBatch]:
        """Score every sample of one class; yield the scored batches in class order.

        The detector that scores must hold exactly ``plan.references`` as the class's normal references
        (few-shot; none for zero-shot): the runner puts them in place with a
        :class:`~zsad.evaluation.batch.ReferenceSlot` and removes them when the class is done.
        """

    @abstractmethod
    def predict_shards(self, shards: Iterable[Shard], options: PredictOptions, *,
                       progress: Callable[[int], object] | None = None) -> Iterator[ShardResult]:
        """Run :func:`~zsad.prediction.shards.predict_shard` on every shard; yield each result when it is done
        (in any order); ``progress(n)`` is called as images are done."""

    @abstractmethod
    def overlay_scale(self, paths: Sequence[str], class_name: str,
                      batch_size: int | None) -> tuple[float, float] | None:
        """:func:`~zsad.prediction.shards.overlay_scale` of the run's first images."""


class Engine(ABC):
    """Where a workflow's model runs (see the module docstring)."""

    name: str = "?"

    @abstractmethod
    def runner(self, config: DetectorConfig) -> Runner:
        """The runner for ``config`` (created on first use, then reused)."""

    def connect(self) -> None:
        """Check now that the engine can run (e.g. reach its cluster), before a workflow writes anything."""

    def describe(self) -> dict:
        """What the manifest records about the engine."""
        return {"name": self.name}

    def close(self) -> None:
        """Release what the engine started (workers, a local Ray runtime)."""

    def __enter__(self) -> Engine:  # noqa: PYI034 - subclasses need no narrower type
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
