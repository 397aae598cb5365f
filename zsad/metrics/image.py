"""Image-level metrics: exact AUROC, step-wise AP and F1-max over the images of one class.

Example:
    >>> from zsad.metrics import image_metrics
    >>> image_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    {'auroc': 0.75, 'ap': 0.8333333333333333, 'f1_max': 0.8}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zsad.errors import MetricError
from zsad.metrics._curves import as_binary, as_scores, binary_metrics, check_undefined_arg, rank_counts, undefined_value

__all__ = ["image_metrics"]


def image_metrics(scores: Any, labels: Any, *, undefined: str = "nan") -> dict[str, float]:
    """Exact image-level ``auroc``, ``ap`` and ``f1_max`` (fractions in [0, 1]) of one class.

    Definitions follow ``docs/METRICS.md`` §3 and agree with scikit-learn:

    - ``auroc``: area under the ROC curve, ties counted 1/2 (``roc_auc_score``);
    - ``ap``: step-wise average precision ``sum_k (R_k - R_{k-1}) P_k`` (``average_precision_score``, no
      interpolation);
    - ``f1_max``: ``max_t 2TP/(2TP+FP+FN)`` with an image predicted anomalous when ``score >= t``.

    Args:
        scores: one finite anomaly score per image (higher = more anomalous), any shape.
        labels: binary labels of the same shape (bool or 0/1; 1 = anomalous).
        undefined: what to return when the labels hold a single class, where every metric is undefined:
            ``"nan"`` (default; warns with :class:`~zsad.metrics.UndefinedMetricWarning`, and
            :func:`~zsad.metrics.mean_over_classes` leaves the class out) or ``"zero"`` (also warns; the official
            Tipsomaly/AdaCLIP behaviour, for published-number parity only).

    Returns:
        ``{"auroc": ..., "ap": ..., "f1_max": ...}`` as Python floats.

    Raises:
        MetricError: empty input, shape mismatch, NaN/inf scores, or labels that are not binary.

    Example:
        >>> image_metrics([0.2, 0.9, 0.4, 0.7], [0, 1, 0, 1])
        {'auroc': 1.0, 'ap': 1.0, 'f1_max': 1.0}
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     image_metrics([0.2, 0.9], [1, 1], undefined="zero")
        {'auroc': 0.0, 'ap': 0.0, 'f1_max': 0.0}
    """
    check_undefined_arg(undefined)
    s = as_scores(scores, "scores")
    y = as_binary(labels, "labels")
    if s.shape != y.shape:
        raise MetricError(
            f"scores has shape {s.shape} but labels has shape {y.shape}; pass one score and one label per image"
        )
    s, y = s.ravel(), y.ravel()
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        kind = "anomalous" if n_pos else "normal"
        reason = f"all {y.size} labels are {kind}, so there is no {'normal' if n_pos else 'anomalous'} image"
        value = undefined_value("image auroc, ap and f1_max", reason, undefined, stacklevel=3)
        return {"auroc": value, "ap": value, "f1_max": value}
    return binary_metrics(rank_counts(np.sort(s), s[y]))
