"""Shared machinery of the metrics: input checks, the undefined-metric policy and exact rank counts.

Everything here is numpy-only. The central idea (``docs/METRICS.md`` §4) is that every exact threshold metric only
needs, at each *distinct positive score* ``t`` (descending), the number of negatives with score ``>= t`` and ``> t``.
Those two counts come from one ascending sort of all scores (``np.sort`` is SIMD-accelerated for float32) and two
``searchsorted`` calls with the few positive scores, so no Python loop over thresholds is needed.

Example:
    >>> import numpy as np
    >>> rc = rank_counts(np.sort(np.array([0.1, 0.4, 0.35, 0.8])), np.array([0.35, 0.8]))
    >>> rc.thresholds.tolist(), rc.tp.tolist(), rc.fp_ge.tolist(), rc.fp_gt.tolist()
    ([0.8, 0.35], [1, 2], [0, 1], [0, 1])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from zsad.errors import MetricError

__all__ = ["RankCounts", "UndefinedMetricWarning", "binary_metrics", "rank_counts"]

UNDEFINED_CHOICES = ("nan", "zero")


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for this input (e.g. one class only) and was returned as NaN (or 0 if asked)."""


def check_undefined_arg(undefined: str) -> None:
    """Raise :class:`MetricError` unless *undefined* is ``"nan"`` or ``"zero"``."""
    if undefined not in UNDEFINED_CHOICES:
        raise MetricError(
            f"undefined must be one of {UNDEFINED_CHOICES}, got {undefined!r}; use 'nan' (default, excluded from "
            "class means) or 'zero' (the official Tipsomaly/AdaCLIP behaviour, for published-number parity)"
        )


def undefined_value(what: str, reason: str, undefined: str, stacklevel: int = 4) -> float:
    """Warn that *what* is undefined because of *reason*; return NaN, or 0.0 when ``undefined == "zero"``."""
    value = 0.0 if undefined == "zero" else float("nan")
    hint = "" if undefined == "zero" else " (pass undefined='zero' to get 0 as Tipsomaly/AdaCLIP do)"
    warnings.warn(f"undefined {what}: {reason}; returning {value}{hint}", UndefinedMetricWarning, stacklevel)
    return value


def _as_array(x: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists, tensors that need .detach()
        raise MetricError(
            f"{name} cannot be read as one array ({exc}); pass a numpy array of equal-shaped items"
        ) from exc


def as_scores(x: Any, name: str) -> np.ndarray:
    """Return *x* as a finite, non-empty float array (float32 and float64 kept as they are, never downcast)."""
    arr = _as_array(x, name)
    if arr.dtype.kind == "b" or arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind != "f":
        raise MetricError(
            f"{name} must hold real numbers, got dtype {arr.dtype}; convert it with np.asarray(..., float)"
        )
    if arr.size == 0:
        raise MetricError(f"{name} is empty; pass at least one score per sample")
    lo, hi = arr.min(), arr.max()  # NaN propagates through min/max, inf shows up in them
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise MetricError(
            f"{name} contains NaN or inf values; metrics need finite scores. Fix the model output or replace them, "
            f"e.g. np.nan_to_num({name}, nan=0.0, posinf=1.0, neginf=0.0)"
        )
    return arr


def as_binary(x: Any, name: str) -> np.ndarray:
    """Return *x* as a bool array; accept bool and 0/1 ints or floats, reject anything else (e.g. {0, 255})."""
    arr = _as_array(x, name)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind not in "iuf":
        raise MetricError(f"{name} must be bool or 0/1 numbers, got dtype {arr.dtype}")
    if arr.size:
        if arr.dtype.kind == "f":
            bad = not bool(np.all((arr == 0) | (arr == 1)))
        else:
            bad = bool(arr.min() < 0 or arr.max() > 1)
        if bad:
            values = np.unique(arr)
            shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if values.size > 6 else "")
            raise MetricError(
                f"{name} must be binary (bool or 0/1), got values {{{shown}}}; binarise it first, "
                f"e.g. {name} = {name} > 0 (0/255 PNG masks) or {name} = {name} > 0.5 (resized masks)"
            )
    if arr.dtype.itemsize == 1:
        return arr.view(np.bool_)  # 0/1 bytes are valid bools: no copy of a large mask stack
    return arr != 0


@dataclass(frozen=True)
class RankCounts:
    """Counts at every distinct positive score ``t_k`` (descending): all exact threshold metrics derive from these.

    Attributes:
        thresholds: the distinct scores of the positives, descending.
        tp: positives with score ``>= t_k`` (cumulative).
        fp_ge: negatives with score ``>= t_k``.
        fp_gt: negatives with score ``> t_k``.
        n_pos: total positives P.
        n_neg: total negatives Q.
        order: permutation sorting the positive values descending (to accumulate per-positive weights).
        ends: index (into the sorted positives) of the last element of each tie group.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp_ge: np.ndarray
    fp_gt: np.ndarray
    n_pos: int
    n_neg: int
    order: np.ndarray
    ends: np.ndarray


def rank_counts(sorted_all: np.ndarray, pos_values: np.ndarray) -> RankCounts:
    """Exact TP/FP counts at every distinct positive score, from the ascending sort of *all* scores.

    ``sorted_all`` holds the scores of positives *and* negatives, sorted ascending; ``pos_values`` the positives'
    scores (any order, same dtype). Equal scores form one threshold (ties merged), positive when ``score >= t``.

    Example:
        >>> import numpy as np
        >>> rc = rank_counts(np.sort(np.array([1.0, 2.0, 2.0, 3.0])), np.array([2.0, 3.0]))
        >>> rc.thresholds.tolist(), rc.tp.tolist(), rc.fp_ge.tolist(), rc.fp_gt.tolist()
        ([3.0, 2.0], [1, 2], [0, 1], [0, 0])
    """
    total = int(sorted_all.size)
    order = np.argsort(pos_values, kind="stable")[::-1]
    v = pos_values[order]
    ends = np.flatnonzero(v[:-1] != v[1:])
    ends = np.append(ends, v.size - 1).astype(np.int64)
    t = v[ends]
    tp = ends + 1
    n_k = np.diff(tp, prepend=0)
    t_asc = t[::-1]  # searchsorted is fastest with ascending keys
    all_ge = total - np.searchsorted(sorted_all, t_asc, side="left")[::-1]
    all_gt = total - np.searchsorted(sorted_all, t_asc, side="right")[::-1]
    return RankCounts(
        thresholds=t,
        tp=tp,
        fp_ge=all_ge - tp,
        fp_gt=all_gt - (tp - n_k),
        n_pos=int(pos_values.size),
        n_neg=total - int(pos_values.size),
        order=order,
        ends=ends,
    )


def binary_metrics(rc: RankCounts) -> dict[str, float]:
    """AUROC (Mann-Whitney, exact integer numerator), step-wise AP and F1-max from :class:`RankCounts`.

    Requires at least one positive and one negative.

    Example:
        >>> import numpy as np
        >>> s = np.array([0.1, 0.4, 0.35, 0.8]); y = np.array([0, 0, 1, 1], bool)
        >>> binary_metrics(rank_counts(np.sort(s), s[y]))
        {'auroc': 0.75, 'ap': 0.8333333333333333, 'f1_max': 0.8}
    """
    p, q = rc.n_pos, rc.n_neg
    n_k = np.diff(rc.tp, prepend=0)
    # each positive at t beats the negatives below t and ties with those equal to t (counted 1/2)
    numerator = int(np.dot(n_k, 2 * q - rc.fp_ge - rc.fp_gt))
    auroc = numerator / (2.0 * p * q)
    precision = rc.tp / (rc.tp + rc.fp_ge)
    ap = float(np.sum(n_k * precision) / p)
    f1_max = float(np.max(2.0 * rc.tp / (rc.tp + rc.fp_ge + p)))
    return {"auroc": float(auroc), "ap": ap, "f1_max": f1_max}
