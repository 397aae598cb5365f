"""Exact, fast anomaly-detection metrics (numpy/scipy; torch only for the legacy AUPRO threshold grid).

Per class (one evaluation unit: all test images of a category, normal ones included):

- :func:`image_metrics` — image-level ``auroc``, ``ap``, ``f1_max`` (scikit-learn definitions, exact);
- :func:`pixel_metrics` — pixel-level ``auroc``, ``ap``, ``aupro``, ``f1_max`` from one sort of all pixels;
- :func:`aupro` — AUPRO alone, ``mode="exact"`` (MVTec AD, default) or ``"legacy"`` (Tipsomaly/AnomalyCLIP grid);
- :func:`mean_over_classes` — the dataset number: unweighted mean over the classes where a metric is defined.

All values are fractions in [0, 1] (papers print x100). A metric that is undefined for a class (its labels or
masks hold one value) is NaN with an :class:`UndefinedMetricWarning`; ``undefined="zero"`` returns 0 instead, as
the official Tipsomaly code does, for published-number parity only. Definitions, the algorithms and their
validation are in ``docs/METRICS.md``.

Example:
    >>> import numpy as np
    >>> from zsad.metrics import image_metrics, mean_over_classes
    >>> per_class = {"bottle": image_metrics([0.1, 0.9, 0.8], [0, 1, 1]), "cable": image_metrics([0.3, 0.2], [0, 1])}
    >>> mean, counts = mean_over_classes(per_class)
    >>> mean["auroc"], counts["auroc"]
    (0.5, 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from zsad.metrics._curves import UndefinedMetricWarning
from zsad.metrics.aupro import aupro
from zsad.metrics.image import image_metrics
from zsad.metrics.pixel import pixel_metrics

__all__ = ["UndefinedMetricWarning", "aupro", "image_metrics", "mean_over_classes", "pixel_metrics"]


def mean_over_classes(per_class: Mapping[str, Mapping[str, float]]) -> tuple[dict[str, float], dict[str, int]]:
    """Average each metric over the classes where it is finite; NaN ("n/a") never enters a mean as 0.

    Args:
        per_class: ``{class_name: {metric_name: value}}``, e.g. the outputs of :func:`pixel_metrics` per class.
            Classes may report different metrics; ``None`` counts as NaN.

    Returns:
        ``(mean, counts)``: ``mean[metric]`` is the unweighted mean over the classes with a finite value (NaN when
        there is none) and ``counts[metric]`` the number of classes that entered it. Metrics keep first-seen order.

    Example:
        >>> mean_over_classes({"a": {"auroc": 0.9, "aupro": float("nan")}, "b": {"auroc": 0.7, "aupro": 0.5}})
        ({'auroc': 0.8, 'aupro': 0.5}, {'auroc': 2, 'aupro': 1})
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for metrics in per_class.values():
        for name, value in metrics.items():
            sums.setdefault(name, 0.0)
            counts.setdefault(name, 0)
            if value is not None and math.isfinite(value):
                sums[name] += float(value)
                counts[name] += 1
    mean = {name: (sums[name] / counts[name] if counts[name] else float("nan")) for name in sums}
    return mean, counts
