"""Threshold policies: turn anomaly scores into decisions (``pred_label``) and maps into masks (``pred_mask``).

A zero-shot detector gives scores, not decisions. A policy learns a threshold from data, sklearn-style
(``fit`` returns the policy, the learned values end with ``_``), and :meth:`ThresholdPolicy.apply` writes
``pred_label`` / ``pred_mask`` into results through :meth:`zsad.results.AnomalyResult.with_threshold`
(anomalous when ``score >= threshold``).

:class:`NormalPercentile` (``q=99``)
    Needs **no labelled anomalies**: the ``q``-th percentile of the image scores of normal images (for pixels:
    of all map values of normal images). Fit it on a few dozen known-good images; about ``100 - q`` % of
    normal images will then be flagged. When ``labels`` are given only the normal ones (0) are used.

:class:`F1Optimal`
    Needs **labelled validation data** with both normal and anomalous images: the threshold that maximises F1
    (image level: over images; pixel level: over all pixels against the ground-truth masks). It refuses data
    without anomalies instead of returning a meaningless threshold (a known anomalib pitfall).

Example (image level, no anomalies needed):
    >>> import numpy as np
    >>> normal_scores = np.linspace(0.10, 0.30, 101)
    >>> policy = NormalPercentile(q=99).fit(normal_scores)
    >>> round(policy.threshold_, 3)
    0.298
    >>> policy.predict([0.2, 0.9]).tolist()
    [False, True]

Example (applied to detector results):
    >>> from zsad.results import AnomalyResult
    >>> rs = [AnomalyResult(pred_score=s, scores={"S5": s}, anomaly_map=np.full((2, 2), s, np.float32))
    ...       for s in (0.1, 0.2, 0.8)]
    >>> f1 = F1Optimal().fit(rs, labels=[0, 0, 1], masks=[np.zeros((2, 2))] * 2 + [np.ones((2, 2))])
    >>> [r.pred_label for r in f1.apply(rs)], bool(f1.apply(rs)[2].pred_mask.all())
    ([False, False, True], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zsad.errors import ConfigError
from zsad.results import AnomalyResult

__all__ = ["F1Optimal", "NormalPercentile", "ThresholdPolicy"]


def _scores_and_maps(scores: Any, maps: Any) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Image scores (1-D float64) and optional maps, from arrays or from AnomalyResult objects."""
    items = [scores] if isinstance(scores, AnomalyResult) else scores
    if isinstance(items, (list, tuple)) and items and all(isinstance(r, AnomalyResult) for r in items):
        s = np.array([r.pred_score for r in items], dtype=np.float64)
        if maps is None:
            maps = [r.anomaly_map for r in items]
    else:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ConfigError("Cannot fit a threshold on zero scores.")
    if not np.all(np.isfinite(s)):
        bad = np.flatnonzero(~np.isfinite(s))[:5].tolist()
        raise ConfigError(f"Scores at positions {bad} are NaN or infinite; a threshold needs finite scores.")
    maps_list = None if maps is None else [np.asarray(m, dtype=np.float32) for m in maps]
    if maps_list is not None and len(maps_list) != s.size:
        raise ConfigError(f"Got {s.size} scores but {len(maps_list)} maps; give one map per image.")
    return s, maps_list


def _labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels).reshape(-1)
    if y.size != n:
        raise ConfigError(f"Got {n} scores but {y.size} labels; give one label (0 normal, 1 anomalous) per image.")
    if not np.isin(y, (0, 1)).all():
        raise ConfigError("labels must be 0 (normal) or 1 (anomalous).")
    return y.astype(bool)


class ThresholdPolicy:
    """Base class: ``fit`` learns ``threshold_`` (image) and ``pixel_threshold_`` (pixel, when maps are given).

    Attributes:
        threshold_: image-score threshold (anomalous when ``pred_score >= threshold_``), or None before ``fit``.
        pixel_threshold_: map threshold for ``pred_mask``, or None when no maps were fitted.
    """

    threshold_: float | None = None
    pixel_threshold_: float | None = None

    def fit(self, scores: Any, labels: Any = None, *, maps: Any = None, masks: Any = None) -> ThresholdPolicy:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if self.threshold_ is None and self.pixel_threshold_ is None:
            raise ConfigError(f"{type(self).__name__} is not fitted yet: call .fit(...) first.")

    def predict(self, scores: Any) -> np.ndarray:
        """Boolean decisions ``scores >= threshold_``.

        Example:
            >>> NormalPercentile(q=50).fit([1.0, 2.0, 3.0]).predict([1.0, 2.5]).tolist()
            [False, True]
        """
        self._check_fitted()
        if self.threshold_ is None:
            raise ConfigError(f"{type(self).__name__} has no image threshold (it was fitted on maps only).")
        return np.asarray(scores, dtype=np.float64) >= self.threshold_

    def predict_mask(self, anomaly_map: Any) -> np.ndarray:
        """Boolean mask ``anomaly_map >= pixel_threshold_``.

        Example:
            >>> p = NormalPercentile(q=100).fit([0.0], maps=[np.array([[0.2, 0.4]])])
            >>> p.predict_mask(np.array([[0.3, 0.5]])).tolist()
            [[False, True]]
        """
        if self.pixel_threshold_ is None:
            raise ConfigError(f"{type(self).__name__} has no pixel threshold: fit it with maps=... (or results).")
        return np.asarray(anomaly_map) >= self.pixel_threshold_

    def apply(self, results: AnomalyResult | Sequence[AnomalyResult]) -> Any:
        """Results with ``pred_label`` (and ``pred_mask`` when a pixel threshold was fitted) set.

        Returns a single result for a single result, else a list (the inputs are not modified).

        Example:
            >>> r = AnomalyResult(pred_score=0.7, scores={"S5": 0.7}, anomaly_map=np.zeros((2, 2), np.float32))
            >>> NormalPercentile(q=50).fit([0.1, 0.5, 0.9]).apply(r).pred_label
            True
        """
        self._check_fitted()
        kw = {"image_threshold": self.threshold_, "pixel_threshold": self.pixel_threshold_}
        if isinstance(results, AnomalyResult):
            return results.with_threshold(**kw)
        return [r.with_threshold(**kw) for r in results]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        fitted = "" if self.threshold_ is None else f", threshold_={self.threshold_:.6g}"
        if self.pixel_threshold_ is not None:
            fitted += f", pixel_threshold_={self.pixel_threshold_:.6g}"
        return f"{type(self).__name__}({params}{fitted})"


class NormalPercentile(ThresholdPolicy):
    """Threshold = the ``q``-th percentile of scores on **normal** images (no anomalies needed).

    Args:
        q: percentile in [0, 100] for image scores (99 = about 1% of normal images flagged).
        pixel_q: percentile of the map values of normal images for ``pred_mask`` (default: ``q``). Pixels are
            many and correlated: a higher value (99.9) gives cleaner masks.

    ``fit(scores, labels=None, maps=None)``: without ``labels`` every image is taken as normal; with labels only
    label-0 images are used. ``scores`` may also be a list of :class:`~zsad.results.AnomalyResult` (their
    ``pred_score`` and ``anomaly_map`` are used).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> good = rng.normal(1.0, 0.1, 500)
        >>> p = NormalPercentile(q=95).fit(good)
        >>> 0.03 < float(np.mean(p.predict(rng.normal(1.0, 0.1, 5000)))) < 0.07  # ~5% false alarms on new normals
        True
    """

    def __init__(self, q: float = 99.0, pixel_q: float | None = None) -> None:
        for name, v in (("q", q), ("pixel_q", pixel_q)):
            if v is not None and not 0.0 <= float(v) <= 100.0:
                raise ConfigError(f"{name} must be a percentile in [0, 100], got {v}.")
        self.q = float(q)
        self.pixel_q = None if pixel_q is None else float(pixel_q)

    def fit(self, scores: Any, labels: Any = None, *, maps: Any = None, masks: Any = None) -> NormalPercentile:
        s, maps_list = _scores_and_maps(scores, maps)
        y = _labels(labels, s.size)
        normal = np.ones(s.size, bool) if y is None else ~y
        if not normal.any():
            raise ConfigError("NormalPercentile needs at least one normal image (label 0) to fit on.")
        self.threshold_ = float(np.percentile(s[normal], self.q))
        if maps_list is not None:
            values = np.concatenate([m.reshape(-1) for m, ok in zip(maps_list, normal) if ok])
            if not np.all(np.isfinite(values)):
                raise ConfigError("The maps hold NaN or infinite values; a pixel threshold needs finite maps.")
            q = self.q if self.pixel_q is None else self.pixel_q
            self.pixel_threshold_ = float(np.percentile(values, q))
        return self


def _f1_threshold(scores: np.ndarray, positive: np.ndarray, what: str) -> float:
    """The score t maximising F1 of ``score >= t`` (exact, over every distinct positive score)."""
    from zsad.metrics._curves import rank_counts

    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        kind = "anomalous" if n_pos == 0 else "normal"
        raise ConfigError(
            f"F1Optimal needs {what} of both kinds, but there is no {kind} one. Use validation data with normal "
            "and anomalous examples, or NormalPercentile(), which needs normal images only."
        )
    rc = rank_counts(np.sort(scores, axis=None), scores[positive])
    f1 = 2.0 * rc.tp / (rc.tp + rc.fp_ge + rc.n_pos)
    return float(rc.thresholds[int(np.argmax(f1))])


class F1Optimal(ThresholdPolicy):
    """Threshold that maximises F1 on labelled validation data (image level and, with masks, pixel level).

    ``fit(scores, labels, maps=None, masks=None)``: ``labels`` (0/1 per image) are required for the image
    threshold; ``maps`` with ``masks`` (one ``H x W`` 0/1 mask per map, ``None`` = all normal) give the pixel
    threshold: the F1-max threshold over all pixels of all maps. The threshold is one of the scores, and
    ``score >= threshold`` is anomalous. Validation data with a single label raises (it has no F1 optimum).

    Example:
        >>> p = F1Optimal().fit([0.1, 0.3, 0.35, 0.8], labels=[0, 0, 1, 1])
        >>> p.threshold_, p.predict([0.34, 0.35]).tolist()
        (0.35, [False, True])
    """

    def fit(self, scores: Any, labels: Any = None, *, maps: Any = None, masks: Any = None) -> F1Optimal:
        s, maps_list = _scores_and_maps(scores, maps)
        y = _labels(labels, s.size)
        if y is None and masks is None:
            raise ConfigError("F1Optimal needs labels (and/or maps with masks); without labels use NormalPercentile().")
        self.threshold_ = None if y is None else _f1_threshold(s, y, "images")
        if masks is not None:
            if maps_list is None:
                raise ConfigError("F1Optimal: masks were given without maps; pass maps=... or results.")
            if len(masks) != len(maps_list):
                raise ConfigError(f"Got {len(maps_list)} maps but {len(masks)} masks; give one mask per map.")
            values, truth = [], []
            for m, k in zip(maps_list, masks):
                k = np.zeros(m.shape, bool) if k is None else np.asarray(k) > 0
                if k.shape != m.shape:
                    raise ConfigError(f"A mask of shape {k.shape} does not match its map of shape {m.shape}.")
                values.append(m.reshape(-1))
                truth.append(k.reshape(-1))
            v = np.concatenate(values)
            if not np.all(np.isfinite(v)):
                raise ConfigError("The maps hold NaN or infinite values; a pixel threshold needs finite maps.")
            self.pixel_threshold_ = _f1_threshold(v, np.concatenate(truth), "pixels")
        return self
