"""The one result type: :class:`AnomalyResult` (higher score = more anomalous, everywhere).

Field names follow the vocabulary anomalib users know (``pred_score``, ``anomaly_map``, ``pred_label``,
``pred_mask``).

Example:
    >>> import numpy as np
    >>> r = AnomalyResult(pred_score=1.2, scores={"S5": 1.2}, anomaly_map=np.zeros((4, 5), np.float32))
    >>> r.anomaly_map.shape, r.pred_label is None
    ((4, 5), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from zsad.errors import NumericalError

__all__ = ["AnomalyResult", "batch_results", "bilinear_axis", "check_finite_outputs", "resize_map"]


def check_finite_outputs(scores: dict[str, float], anomaly_map: np.ndarray, source: str) -> None:
    """Raise :class:`~zsad.errors.NumericalError` when a score or map value of *source* is NaN or infinite.

    Example:
        >>> check_finite_outputs({"S5": 0.4}, np.zeros((2, 2), np.float32), "a.png")  # finite: nothing happens
        >>> try:
        ...     check_finite_outputs({"S5": float("nan")}, np.zeros((2, 2), np.float32), "a.png")
        ... except NumericalError as e:
        ...     print(str(e).split(":")[0])
        The model produced non-finite values (NaN or Inf) for a.png
    """
    bad = [k for k, v in scores.items() if not np.isfinite(v)]
    pixels = int(anomaly_map.size - np.count_nonzero(np.isfinite(anomaly_map)))
    if bad or pixels:
        parts = [f"scores {', '.join(bad)}" if bad else "", f"{pixels} map pixels" if pixels else ""]
        what = ", ".join(p for p in parts if p)
        raise NumericalError(
            f"The model produced non-finite values (NaN or Inf) for {source}: {what}. Its weights or prompt tokens "
            "hold NaN/Inf (check them with `zsad weights verify NAME`), or a bfloat16 backbone overflowed "
            "(use dtype='float32')."
        )


@dataclass(frozen=True)
class AnomalyResult:
    """Prediction for one image.

    Attributes:
        pred_score: the configured image score (e.g. S5 in [0, 2] for Tipsomaly).
        scores: every computed image score by name (``"S1"`` ... ``"S5"``).
        anomaly_map: ``float32`` ``H x W`` map, at the original image size (``map_size="original"``) or the model
            input size (``map_size="input"``).
        pred_label: ``True`` = anomalous, when a threshold was applied (see :mod:`zsad.thresholds`), else None.
        pred_mask: boolean ``H x W`` mask, when a pixel threshold was applied, else None.
        class_name: the class the prompts were built for.
        image_path: the source file, when the input was a path.
        original_size: ``(height, width)`` of the input before resizing.
    """

    pred_score: float
    scores: dict[str, float]
    anomaly_map: np.ndarray
    pred_label: bool | None = None
    pred_mask: np.ndarray | None = None
    class_name: str = ""
    image_path: str | None = None
    original_size: tuple[int, int] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def with_threshold(self, image_threshold: float | None = None, pixel_threshold: float | None = None) -> "AnomalyResult":
        """A copy with ``pred_label`` (score >= image_threshold) and/or ``pred_mask`` (map >= pixel_threshold)."""
        return replace(
            self,
            pred_label=None if image_threshold is None else bool(self.pred_score >= image_threshold),
            pred_mask=None if pixel_threshold is None else self.anomaly_map >= pixel_threshold,
        )

    def to_dict(self, include_map: bool = False) -> dict[str, Any]:
        """JSON-friendly dict (the map only on request, as a nested list)."""
        out: dict[str, Any] = {
            "image_path": self.image_path,
            "class_name": self.class_name,
            "pred_score": self.pred_score,
            "scores": dict(self.scores),
            "pred_label": self.pred_label,
            "original_size": list(self.original_size) if self.original_size else None,
            "map_max": float(self.anomaly_map.max()) if self.anomaly_map.size else None,
        }
        if include_map:
            out["anomaly_map"] = self.anomaly_map.tolist()
        return out


def batch_results(
    scores: Mapping[str, np.ndarray],
    maps: Sequence[np.ndarray],
    batch: Any,
    class_names: Sequence[str],
    image_score: str,
) -> list[AnomalyResult]:
    """One :class:`AnomalyResult` per image of a scored batch (every predictor builds its results here).

    Args:
        scores: score name -> ``(B,)`` array.
        maps: ``B`` float32 maps, already at the size the caller wants.
        batch: the :class:`zsad.io.PreparedBatch` (original sizes and paths).
        class_names: one per image.
        image_score: the score reported as ``pred_score``.

    Example:
        >>> from zsad.io import PreparedBatch
        >>> r = batch_results({"S5": np.array([0.5])}, [np.zeros((2, 3), np.float32)],
        ...                   PreparedBatch(None, [(2, 3)], ["a.png"]), ["screw"], "S5")
        >>> r[0].pred_score, r[0].image_path
        (0.5, 'a.png')
    """
    results = []
    for i, (hw, path) in enumerate(zip(batch.original_sizes, batch.paths)):
        row = {name: float(values[i]) for name, values in scores.items()}
        check_finite_outputs(row, maps[i], path or f"input {i} of the batch")
        results.append(
            AnomalyResult(pred_score=row[image_score], scores=row, anomaly_map=maps[i], class_name=class_names[i],
                          image_path=path, original_size=hw)
        )
    return results


def bilinear_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, frac)`` of bilinear resizing (``align_corners=False``) along one axis: output ``i`` is
    ``x[lo[i]] * (1 - frac[i]) + x[hi[i]] * frac[i]``, with the float32 source coordinates of torch's CPU kernel
    (``scale * (i + 0.5) - 0.5`` rounded once, as a fused multiply-add).

    Example:
        >>> [a.tolist() for a in bilinear_axis(2, 4)]
        [[0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.25]]
    """
    scale = np.float64(np.float32(size_in / size_out))
    src = np.maximum(((np.arange(size_out) + 0.5) * scale - 0.5).astype(np.float32), np.float32(0))
    lo = np.minimum(src.astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``H x W`` float32 map to ``size`` (rows, cols) without antialiasing.

    The rule of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, which the PyTorch
    detector applies on its device, in numpy for predictors that run without torch.

    Example:
        >>> resize_map(np.array([[0.0, 1.0]], np.float32), (1, 4)).tolist()
        [[0.0, 0.25, 0.75, 1.0]]
    """
    r0, r1, wr = bilinear_axis(amap.shape[0], size[0])
    c0, c1, wc = bilinear_axis(amap.shape[1], size[1])
    rows = amap[r0] * (1 - wr)[:, None] + amap[r1] * wr[:, None]
    return (rows[:, c0] * (1 - wc) + rows[:, c1] * wc).astype(np.float32, copy=False)
