"""The engine contract: where the model runs, and the two kinds of work it runs.

An :class:`Engine` is chosen once per workflow call (``engine="local"`` or ``"ray"``); :meth:`Engine.runner`
gives a :class:`Runner` for one detector configuration (built once, prototypes cached). A runner does the *model
side* of the work only, always through the same per-batch function (:func:`zsad.evaluation.batch.iter_scored`
for evaluation); everything that turns its outputs into files and metrics (the per-class scorer
:class:`zsad.evaluation.scorer.ClassScorer`, the report writers) runs in the calling process, the same for every
engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.data import Sample
    from zsad.evaluation.batch import ClassPlan, ScoredBatch

__all__ = ["Engine", "Runner"]


class Runner(ABC):
    """Runs the model of one configuration (``config``). ``device`` describes where (for manifests);
    ``backbone_source`` is the local folder the backbone was loaded from, when known (for checkpoint hashes)."""

    config: DetectorConfig
    device: str = "?"
    backbone_source: str | None = None

    @abstractmethod
    def score_class(self, samples: Sequence[Sample], cls: str, plan: ClassPlan, *, batch_size: int | None,
                    label: str, progress: bool) -> Iterator[ScoredBatch]:
        """Score every sample of one class; yield the scored batches in class order."""


class Engine(ABC):
    """Where a workflow's model runs (see the module docstring)."""

    name: str = "?"

    @abstractmethod
    def runner(self, config: DetectorConfig) -> Runner:
        """The runner for ``config`` (created on first use, then reused)."""

    def describe(self) -> dict:
        """What the manifest records about the engine."""
        return {"name": self.name}

    def close(self) -> None:
        """Release what the engine started (workers, a local Ray runtime)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
