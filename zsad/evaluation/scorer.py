"""The per-class scorer: the scored batches of one class (maps, masks, image scores) -> its metrics. No model.

Every engine feeds it the same :class:`~zsad.evaluation.batch.ScoredBatch` es, in class order, whether they were
computed in this process or by Ray workers, so the numbers cannot depend on where the model ran.

Example (two images, no model):
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from zsad.data import Sample
    >>> from zsad.evaluation.batch import ClassPlan, ScoredBatch
    >>> samples = [Sample(Path("n.png"), None, "c", "good", 0), Sample(Path("a.png"), Path("m.png"), "c", "x", 1)]
    >>> plan = ClassPlan("tipsomaly", size=4, keep_maps=True, read_masks=True)
    >>> maps = np.zeros((2, 4, 4), np.float32); maps[1, :2] = 1.0
    >>> mask = np.zeros((4, 4), np.uint8); mask[:2] = 1
    >>> scorer = ClassScorer("c", samples, plan, heads=["S5"], image_score="S5")
    >>> scorer.add(ScoredBatch(0, ["n.png", "a.png"], [(4, 4)] * 2, {"S5": np.array([0.1, 0.9])}, maps, [None, mask]))
    >>> ce = scorer.finish(root=Path("."))
    >>> ce.metrics["image_auroc"], ce.metrics["pixel_auroc"]
    (1.0, 1.0)
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsad.errors import ConfigError
from zsad.evaluation.batch import ClassPlan, ScoredBatch
from zsad.evaluation.results import ClassEvaluation
from zsad.evaluation.tables import IMAGE_METRICS, METRIC_KEYS, PIXEL_METRICS

if TYPE_CHECKING:  # pragma: no cover
    from zsad.data import Sample

__all__ = ["FPR_LIMIT", "ClassScorer", "ragged_pixel_metrics", "relpath", "undefined_fill"]

FPR_LIMIT = 0.3
"""The false-positive-rate limit of AUPRO."""


def undefined_fill(undefined: str) -> float:
    """The value of an undefined metric: 0 for ``"zero"`` (official zero-filling), NaN (n/a) otherwise."""
    return 0.0 if undefined == "zero" else math.nan


def relpath(path: str | os.PathLike, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX separators) when it lies inside it, else as given."""
    try:
        return Path(os.path.relpath(path, root)).as_posix() if Path(path).is_relative_to(root) else str(path)
    except ValueError:  # other drive on Windows
        return str(path)


def ragged_pixel_metrics(maps: list[np.ndarray], masks: list[np.ndarray], aupro: str, undefined: str) -> dict[str, float]:
    """:func:`zsad.metrics.pixel_metrics` for maps of different sizes (protocol ``original``).

    All pixels of all images are pooled exactly as ``pixel_metrics`` pools an (N, H, W) stack; regions are
    labelled per image. Built from the metrics module's own steps, so the numbers are identical to stacking.
    """
    from zsad.metrics import pixel_metrics
    from zsad.metrics.aupro import PixelStream, check_pixel_args, prepare_pixels
    from zsad.metrics.pixel import metrics_from_stream

    if len({m.shape for m in maps}) == 1:
        return pixel_metrics(np.stack(maps), np.stack(masks), aupro=aupro, fpr_limit=FPR_LIMIT, undefined=undefined)
    parts, offset = [], 0
    pos, region, areas = [], [], []
    for m, k in zip(maps, masks):
        s, b = check_pixel_args(m[None], k[None], aupro, FPR_LIMIT, undefined, mode_name="aupro")
        ps = prepare_pixels(s, b)
        parts.append(ps.sorted_all)
        pos.append(ps.pos_values)
        region.append(ps.region + offset)
        areas.append(ps.areas)
        offset += ps.areas.size
    ps = PixelStream(
        sorted_all=np.sort(np.concatenate(parts), kind="stable"),  # sorted runs: timsort merges them
        pos_values=np.concatenate(pos),
        region=np.concatenate(region).astype(np.int64),
        areas=np.concatenate(areas).astype(np.int64),
    )
    return metrics_from_stream(ps, aupro, FPR_LIMIT, undefined)


class ClassScorer:
    """Collect the scored batches of one class and compute its metrics.

    Args:
        cls: the class key.
        samples: the class's samples, in order (the batches must cover them, in order).
        plan: what the batches hold (:class:`~zsad.evaluation.batch.ClassPlan`).
        heads: the image scores computed (``["S1", ..., "S5"]``).
        image_score: the recipe's image score (the ``image_*`` metrics and the ``score`` column).
        aupro, undefined: as :func:`zsad.evaluation.evaluate` takes them.

    Memory: maps are kept as float32 at the evaluation resolution (150 images at 518x518 are ~160 MB), masks as
    uint8; a class without masks keeps no maps unless the plan asks for them.
    """

    def __init__(self, cls: str, samples: Sequence[Sample], plan: ClassPlan, *, heads: Sequence[str],
                 image_score: str, aupro: str = "exact", undefined: str = "nan"):
        self.cls = cls
        self.samples = list(samples)
        self.plan = plan
        self.heads = list(heads)
        self.image_score = image_score
        self.aupro = aupro
        self.undefined = undefined
        n, size = len(self.samples), plan.size
        tipsomaly = not plan.original
        self._maps_arr = np.empty((n, size, size), np.float32) if plan.keep_maps and tipsomaly else None
        self._masks_arr = np.zeros((n, size, size), np.uint8) if plan.read_masks and tipsomaly else None
        self._maps_list: list[np.ndarray] = []
        self._masks_list: list[np.ndarray] = []
        self.scores = {h: np.empty(n, np.float64) for h in self.heads}
        self.grey: list[str] = []
        self.resized: list[str] = []
        self.vanished: list[str] = []
        self.done = 0

    # -- collecting ------------------------------------------------------------------------------------------
    def add(self, sb: ScoredBatch) -> None:
        """Take the next batch (``sb.start`` must be the number of samples taken so far)."""
        if sb.start != self.done:
            raise ConfigError(f"Class {self.cls!r}: batch starting at sample {sb.start} given after {self.done} "
                              "samples; batches must arrive in class order.")
        k = len(sb)
        i0 = self.done
        for h in self.heads:
            self.scores[h][i0 : i0 + k] = sb.scores[h]
        if self.plan.keep_maps:
            if self.plan.original:
                self._maps_list.extend(sb.maps)
            else:
                self._maps_arr[i0 : i0 + k] = sb.maps  # type: ignore[index]
        if self.plan.read_masks:
            for j, mask in enumerate(sb.masks or [None] * k):
                if self.plan.original:
                    self._masks_list.append(mask if mask is not None else np.zeros(sb.sizes[j], np.uint8))
                elif mask is not None:
                    self._masks_arr[i0 + j] = mask  # type: ignore[index]
        self.grey += sb.grey
        self.resized += sb.resized
        self.vanished += sb.vanished
        self.done += k

    @property
    def maps(self) -> Any:
        """The maps kept: ``(N, S, S)`` float32 (``tipsomaly``) or a list of per-image maps (``original``)."""
        return self._maps_list if self.plan.original else self._maps_arr

    @property
    def masks(self) -> Any:
        """The masks at the evaluation resolution (``None`` when the class has none)."""
        if not self.plan.read_masks:
            return None
        return self._masks_list if self.plan.original else self._masks_arr

    # -- metrics ---------------------------------------------------------------------------------------------
    def _image_metrics(self, notes: list[str]) -> dict[str, dict[str, float]]:
        from zsad.metrics import image_metrics

        labels = [s.anomaly for s in self.samples]
        if any(y is None for y in labels):
            notes.append("image metrics n/a: some images have no normal/anomalous label")
            fill = undefined_fill(self.undefined)
            return {h: dict.fromkeys(IMAGE_METRICS, fill) for h in self.heads}
        y = np.asarray(labels, np.int64)
        main = self.image_score
        image_scores: dict[str, dict[str, float]] = {}
        for h in [main] + [x for x in self.heads if x != main]:
            with warnings.catch_warnings():
                if h != main:
                    warnings.simplefilter("ignore")  # the main score already reported why a metric is undefined
                r = image_metrics(self.scores[h], y, undefined=self.undefined)
            image_scores[h] = {f"image_{k}": v for k, v in r.items()}
        return image_scores

    def _pixel_metrics(self, notes: list[str]) -> dict[str, float]:
        if not self.plan.read_masks:
            notes.append("pixel metrics n/a: the class has no ground-truth masks")
            return dict.fromkeys(PIXEL_METRICS, undefined_fill(self.undefined))
        if self.plan.original:
            r = ragged_pixel_metrics(self._maps_list, self._masks_list, self.aupro, self.undefined)
        else:
            from zsad.metrics import pixel_metrics

            r = pixel_metrics(self._maps_arr, self._masks_arr, aupro=self.aupro, fpr_limit=FPR_LIMIT,
                              undefined=self.undefined)
        return {f"pixel_{k}": v for k, v in r.items()}

    def mask_notes(self) -> list[str]:
        """What was done to the masks (grey values binarised, sizes that differ, defects lost by resizing)."""
        size = self.plan.size
        extra = []
        if self.grey:
            extra.append(f"{len(self.grey)} mask(s) hold values other than 0/255 or 0/1 and were binarised with > 0 "
                         f"as the official loader does, e.g. {self.grey[0]}")
        if self.resized:
            extra.append(f"{len(self.resized)} mask(s) differ in size from their image and were resized to "
                         f"{size}x{size} like the image (as the official loader does), e.g. {self.resized[0]}")
        if self.vanished:
            extra.append(f"{len(self.vanished)} anomalous mask(s) vanish when resized to {size}x{size} (defect "
                         f"smaller than the resampling), e.g. {self.vanished[0]}; protocol 'original' keeps them")
        return extra

    def finish(self, root: Path) -> ClassEvaluation:
        """The class's metrics and ``scores.csv`` rows (``path`` relative to ``root``, the dataset folder).

        Warnings raised while computing metrics (undefined metrics) are issued normally; the notes of the result
        hold the n/a reasons only (see :func:`zsad.evaluation.evaluate` for how notes are completed).
        """
        if self.done != len(self.samples):
            raise ConfigError(f"Class {self.cls!r}: {self.done} of {len(self.samples)} samples were scored.")
        notes: list[str] = []
        image_scores = self._image_metrics(notes)
        metrics: dict[str, float] = dict(image_scores[self.image_score])
        metrics.update(self._pixel_metrics(notes))
        samples = self.samples
        rows = []
        for i, s in enumerate(samples):
            row = {"path": relpath(s.img_path, root), "class": self.cls, "label": s.anomaly,
                   "score": self.scores[self.image_score][i]}
            row.update({h: self.scores[h][i] for h in self.heads})
            row["specie"] = s.specie_name
            rows.append(row)
        return ClassEvaluation(
            name=self.cls,
            metrics={k: float(metrics[k]) for k in METRIC_KEYS},
            image_scores=image_scores,
            images={"total": len(samples), "normal": sum(s.anomaly == 0 for s in samples),
                    "anomalous": sum(s.anomaly == 1 for s in samples),
                    "with_mask": sum(bool(s.is_anomalous and s.has_mask) for s in samples)},
            notes=notes,
            rows=rows,
            saved={"maps": False, "overlays": False},
        )
