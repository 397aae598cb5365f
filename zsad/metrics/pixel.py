"""Pixel-level metrics of one class: exact AUROC, AP, F1-max and AUPRO from a single sort of all pixels.

All N*H*W pixels of the class are pooled (normal images included). The scores are sorted once (a float32 copy of
the maps: 4 bytes per pixel, so 150 maps of 518x518 need ~160 MB on top of the input); the counts at every
distinct anomalous score then give all four metrics in O(P) (``docs/METRICS.md`` §4, "one sort for all pixel
metrics").

Example:
    >>> import numpy as np
    >>> from zsad.metrics import pixel_metrics
    >>> masks = np.zeros((2, 4, 4), bool); masks[1, 1:3, 1:3] = True
    >>> maps = np.where(masks, 0.8, 0.2)
    >>> pixel_metrics(maps, masks)
    {'auroc': 1.0, 'ap': 1.0, 'aupro': 1.0, 'f1_max': 1.0}
"""

from __future__ import annotations

from typing import Any

from zsad.metrics._curves import binary_metrics, rank_counts, undefined_value
from zsad.metrics.aupro import (
    PixelStream,
    check_pixel_args,
    exact_aupro,
    legacy_aupro,
    one_class_reason,
    prepare_pixels,
)

__all__ = ["metrics_from_stream", "pixel_metrics"]


def pixel_metrics(
    maps: Any, masks: Any, aupro: str = "exact", fpr_limit: float = 0.3, *, undefined: str = "nan"
) -> dict[str, float]:
    """Exact pixel-level ``auroc``, ``ap``, ``aupro`` and ``f1_max`` (fractions in [0, 1]) of one class.

    ``auroc``, ``ap`` and ``f1_max`` are exact over every distinct score, as scikit-learn computes them on
    ``masks.ravel()`` vs ``maps.ravel()`` (a pixel is predicted anomalous when its score is ``>= t``). ``aupro`` is
    the MVTec AD AUPRO by default (``aupro="exact"``) or the Tipsomaly/AnomalyCLIP 200-threshold grid variant
    (``aupro="legacy"``, for published-number parity only); see :func:`zsad.metrics.aupro`.

    Args:
        maps: anomaly maps of the class, float array (N, H, W), finite. float32 is sorted as is (never
            downcast from float64, which would merge distinct scores).
        masks: ground-truth masks (N, H, W), bool or 0/1 (reject {0, 255}: pass ``masks > 0``).
        aupro: ``"exact"`` (default) or ``"legacy"``.
        fpr_limit: FPR integration limit of the AUPRO, in (0, 1].
        undefined: ``"nan"`` (default) or ``"zero"`` when the masks hold a single class (no anomalous pixel, or
            only anomalous pixels): every metric is undefined then and a
            :class:`~zsad.metrics.UndefinedMetricWarning` is issued either way. ``"zero"`` reproduces the official
            Tipsomaly table behaviour.

    Returns:
        ``{"auroc": ..., "ap": ..., "aupro": ..., "f1_max": ...}`` as Python floats.

    Raises:
        MetricError: bad shapes, empty input, NaN/inf maps, non-binary masks, bad ``aupro``/``fpr_limit``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> masks = np.zeros((4, 32, 32), bool); masks[1, 5:12, 5:12] = True; masks[2, 20:30, 3:6] = True
        >>> maps = rng.random((4, 32, 32)).astype(np.float32) * 0.8 + 0.4 * masks
        >>> {k: round(v, 4) for k, v in pixel_metrics(maps, masks).items()}
        {'auroc': 0.8595, 'ap': 0.499, 'aupro': 0.6282, 'f1_max': 0.6261}
        >>> round(pixel_metrics(maps, masks, aupro="legacy")["aupro"], 4)  # Tipsomaly's grid value
        0.6262
    """
    s, m = check_pixel_args(maps, masks, aupro, fpr_limit, undefined, mode_name="aupro")
    return metrics_from_stream(prepare_pixels(s, m), aupro, fpr_limit, undefined)


def metrics_from_stream(ps: PixelStream, aupro: str, fpr_limit: float, undefined: str) -> dict[str, float]:
    """The four pixel metrics of an already prepared :class:`~zsad.metrics.aupro.PixelStream` (validated args).

    For callers that assemble the stream themselves (e.g. maps of different sizes, whose sorted values and
    region labels are concatenated); :func:`pixel_metrics` is ``check_pixel_args`` + ``prepare_pixels`` + this.

    Example:
        >>> import numpy as np
        >>> from zsad.metrics.aupro import prepare_pixels
        >>> masks = np.zeros((1, 3, 3), bool); masks[0, 0, 0] = True
        >>> metrics_from_stream(prepare_pixels(np.eye(3)[None], masks), "exact", 0.3, "nan")["auroc"]
        0.875
    """
    if ps.pos_values.size == 0 or ps.n_neg == 0:
        value = undefined_value("pixel auroc, ap, aupro and f1_max", one_class_reason(ps), undefined, 4)
        return {"auroc": value, "ap": value, "aupro": value, "f1_max": value}
    rc = rank_counts(ps.sorted_all, ps.pos_values)
    out = binary_metrics(rc)
    pro = legacy_aupro(ps, fpr_limit, undefined, 5) if aupro == "legacy" else exact_aupro(ps, rc, fpr_limit)
    return {"auroc": out["auroc"], "ap": out["ap"], "aupro": pro, "f1_max": out["f1_max"]}
