"""The in-process engine: the model runs here, batch by batch, the next batch decoded ahead in threads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zsad.engines.base import Engine, Runner
from zsad.engines.detectors import DetectorCache

if TYPE_CHECKING:  # pragma: no cover
    from zsad.export import ExportedDetector
    from zsad.config import DetectorConfig
    from zsad.data import Sample
    from zsad.detector import Detector
    from zsad.evaluation.batch import ClassPlan, ScoredBatch
    from zsad.prediction.shards import PredictOptions, Shard, ShardResult
    from zsad.runtime import RuntimeOptions

__all__ = ["LocalEngine", "LocalRunner"]


class LocalRunner(Runner):
    """One detector in this process."""

    def __init__(self, detector: Detector | ExportedDetector):
        self.detector = detector
        self.config = detector.config
        self.device = str(detector.device)
        self.backbone_source = detector.weights_source
        from zsad.detector import Detector

        if isinstance(detector, Detector):  # an exported model has no runtime options
            self.runtime_options = detector.runtime_options.describe()

    def score_class(self, samples: Sequence[Sample], cls: str, plan: ClassPlan, *, batch_size: int | None,
                    label: str, progress: bool) -> Iterator[ScoredBatch]:
        from tqdm.auto import tqdm

        from zsad.evaluation.batch import ReferenceSlot, iter_scored

        slot = ReferenceSlot(self.detector)  # type: ignore[arg-type]
        try:
            slot.use(cls, plan.references, batch_size)
            with tqdm(total=len(samples), desc=f"{label}/{cls}", unit="img", disable=not progress,
                      leave=False) as bar:
                for sb in iter_scored(self.detector, samples, cls, plan, batch_size):
                    bar.update(len(sb))
                    yield sb
        finally:
            slot.release()  # the detector is left without the evaluation's references

    def predict_shards(self, shards: Iterable[Shard], options: PredictOptions, *,
                       progress: Callable[[int], object] | None = None) -> Iterator[ShardResult]:
        from zsad.prediction.shards import predict_shard

        for shard in shards:
            yield predict_shard(self.detector, shard, options, progress=progress)

    def overlay_scale(self, paths: Sequence[str], class_name: str,
                      batch_size: int | None) -> tuple[float, float] | None:
        from zsad.prediction.shards import overlay_scale

        return overlay_scale(self.detector, paths, class_name, batch_size)


class LocalEngine(Engine):
    """Run the model in this process (``engine="local"``, the default).

    Args:
        device, dtype: as for :class:`~zsad.detector.Detector`.
        detector: an already built detector to reuse (see :class:`~zsad.engines.detectors.DetectorCache`).
        runtime: the detectors' runtime options (compile, TF32, input pipeline; see :mod:`zsad.runtime`).
    """

    name = "local"

    def __init__(self, device: Any = None, dtype: Any = None, detector: Detector | None = None,
                 runtime: RuntimeOptions | None = None):
        self.detectors = DetectorCache(device, dtype, detector, runtime)

    def runner(self, config: DetectorConfig) -> LocalRunner:
        return LocalRunner(self.detectors.get(config))
