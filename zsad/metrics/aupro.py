"""AUPRO (area under the per-region-overlap curve), exact and legacy, both vectorised.

Two modes (``docs/METRICS.md`` §3.4 and §4):

``"exact"`` (default)
    MVTec AD official semantics: one curve point per distinct score, 8-connected ground-truth regions, FPR over all
    label-0 pixels of the class (normal images included), PRO = unweighted mean of the per-region overlaps, trapezoid
    on ``[0, fpr_limit]`` with PRO linearly interpolated at ``fpr_limit``, divided by ``fpr_limit``. Computed from
    one ascending sort of all scores: between two distinct *anomalous* scores PRO is constant, so the curve is fully
    described by the points just above and at each distinct anomalous score, whose FPRs are two ``searchsorted``
    look-ups (no loop over thresholds or regions). Agrees with the official code to ~1e-8 (its float32 FPR rounding).

``"legacy"``
    The AnomalyCLIP / Tipsomaly ``cal_pro_score`` variant (cflow-ad lineage), reproduced value for value:
    thresholds ``torch.arange(min, max, (max - min) / 200)`` in float32, binarisation ``map > th``, 8-connected
    regions, FPR rounded to float32 (PRO stays float64, as there), only thresholds with ``FPR < fpr_limit`` kept,
    those FPRs min-max rescaled to [0, 1], sklearn-style trapezoid ``auc``. Per-region counts at all thresholds
    come from one histogram over threshold bins. It is **not** comparable with MVTec AU-PRO (biased low, not
    invariant to monotone transforms of the maps); use it only to reproduce published ZSAD numbers.

Example:
    >>> import numpy as np
    >>> from zsad.metrics import aupro
    >>> masks = np.zeros((2, 8, 8), bool); masks[1, 2:5, 2:5] = True
    >>> maps = np.where(masks, 0.9, 0.1) + np.linspace(0, 0.05, 64).reshape(8, 8)
    >>> aupro(maps, masks)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zsad.errors import MetricError
from zsad.metrics._curves import (
    RankCounts,
    as_binary,
    as_scores,
    check_undefined_arg,
    rank_counts,
    undefined_value,
)

__all__ = ["AUPRO_MODES", "LEGACY_STEPS", "aupro"]

AUPRO_MODES = ("exact", "legacy")
LEGACY_STEPS = 200  # number of grid steps of the official cal_pro_score (max_step)


@dataclass(frozen=True)
class PixelStream:
    """One class's pixels prepared for every pixel metric (built once by :func:`prepare_pixels`).

    Attributes:
        sorted_all: all N*H*W scores, ascending (float32 or float64 as given).
        pos_values: scores of the anomalous pixels, in raster order (image, row, column).
        region: 0-based region index of each anomalous pixel (8-connected, unique across the class).
        areas: pixel count of each region.
    """

    sorted_all: np.ndarray
    pos_values: np.ndarray
    region: np.ndarray
    areas: np.ndarray

    @property
    def n_neg(self) -> int:
        """Number of label-0 pixels (the FPR denominator)."""
        return int(self.sorted_all.size - self.pos_values.size)


def check_pixel_args(maps: Any, masks: Any, mode: str, fpr_limit: float, undefined: str, mode_name: str = "mode"):
    """Validate the arguments shared by :func:`aupro` and ``pixel_metrics``; return (maps, masks) arrays."""
    check_undefined_arg(undefined)
    if mode not in AUPRO_MODES:
        raise MetricError(f"{mode_name} must be one of {AUPRO_MODES}, got {mode!r}")
    if not (isinstance(fpr_limit, (int, float, np.floating)) and 0.0 < float(fpr_limit) <= 1.0):
        raise MetricError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}; ZSAD papers use 0.3")
    s = as_scores(maps, "maps")
    m = as_binary(masks, "masks")
    if s.ndim != 3:
        raise MetricError(
            f"maps must have shape (N, H, W), got {s.shape}; "
            "use maps[None] for a single map or maps[:, 0] for (N, 1, H, W)"
        )
    if s.shape != m.shape:
        raise MetricError(f"maps has shape {s.shape} but masks has shape {m.shape}; pass one (H, W) mask per map")
    return s, m


def prepare_pixels(maps: np.ndarray, masks: np.ndarray) -> PixelStream:
    """Sort all scores once and label the 8-connected regions of every mask (validated inputs).

    Example:
        >>> import numpy as np
        >>> masks = np.zeros((1, 4, 4), bool); masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = True
        >>> ps = prepare_pixels(np.zeros((1, 4, 4)), masks)
        >>> ps.region.tolist(), ps.areas.tolist()  # the diagonal pair is one 8-connected region
        ([0, 0, 1], [2, 1])
    """
    from scipy import ndimage  # imported lazily: keeps `import zsad.metrics` light

    n = masks.shape[0]
    hw = int(np.prod(masks.shape[1:]))
    structure = np.ones((3, 3), dtype=bool)
    idx_parts, region_parts, area_parts = [], [], []
    offset = 0
    for i in np.flatnonzero(masks.reshape(n, hw).any(axis=1)):  # loop over images only (regions never span two)
        lab, k = ndimage.label(masks[i], structure=structure)
        lab = lab.ravel()
        nz = np.flatnonzero(lab)
        idx_parts.append(nz + int(i) * hw)
        region_parts.append(lab[nz].astype(np.int64) + (offset - 1))
        area_parts.append(np.bincount(lab[nz], minlength=k + 1)[1:])
        offset += k
    empty = np.zeros(0, dtype=np.int64)
    pos_idx = np.concatenate(idx_parts) if idx_parts else empty
    return PixelStream(
        sorted_all=np.sort(maps, axis=None),
        pos_values=maps.reshape(-1)[pos_idx],
        region=np.concatenate(region_parts) if region_parts else empty,
        areas=np.concatenate(area_parts).astype(np.int64) if area_parts else empty,
    )


def _integrate(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area of the curve (x non-decreasing) on [0, limit], y interpolated linearly at ``limit``."""
    m = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    area = float(np.sum(0.5 * (y[1:m] + y[: m - 1]) * np.diff(x[:m])))
    if m < x.size and x[m - 1] < limit:
        y_lim = y[m - 1] + (y[m] - y[m - 1]) * (limit - x[m - 1]) / (x[m] - x[m - 1])
        area += 0.5 * (y[m - 1] + y_lim) * (limit - x[m - 1])
    return float(area)


def exact_aupro(ps: PixelStream, rc: RankCounts, fpr_limit: float) -> float:
    """Exact MVTec AUPRO from the rank counts (needs >= 1 region and >= 1 label-0 pixel).

    At distinct anomalous score ``t_k`` the curve has the point just above ``t_k`` (FPR of ``> t_k``, PRO of the
    previous group) and the point at ``t_k`` (FPR of ``>= t_k``, PRO including ``t_k``); between them lie only
    normal-only scores where PRO is constant, which add nothing but collinear points.
    """
    k_regions = ps.areas.size
    weights = (1.0 / ps.areas)[ps.region[rc.order]]  # each pixel of region j adds 1/|R_j| to the overlap sum
    pro = np.minimum(np.cumsum(weights)[rc.ends] / k_regions, 1.0)
    m = pro.size
    x = np.empty(2 * m + 2)
    y = np.empty(2 * m + 2)
    x[0] = y[0] = 0.0
    x[1:-1:2] = rc.fp_gt / ps.n_neg
    x[2:-1:2] = rc.fp_ge / ps.n_neg
    y[1] = 0.0
    y[3:-1:2] = pro[:-1]
    y[2:-1:2] = pro
    x[-1], y[-1] = 1.0, pro[-1]
    return _integrate(x, y, float(fpr_limit)) / float(fpr_limit)


def legacy_thresholds(vmin: float, vmax: float, steps: int = LEGACY_STEPS) -> np.ndarray:
    """The official grid ``torch.arange(vmin, vmax, (vmax - vmin) / steps)`` in float32 (200 or 201 values).

    torch is used on purpose: its vectorised float32 ``arange`` kernel rounds some values differently from
    ``float32(vmin + i * delta)``, and only torch itself reproduces it bit for bit on every CPU.

    Example:
        >>> th = legacy_thresholds(0.0, 1.0)
        >>> th.dtype.name, th.size, float(th[1])
        ('float32', 200, 0.004999999888241291)
    """
    import torch  # a core zsad dependency; imported lazily and only for this 200-value grid

    delta = (vmax - vmin) / steps
    return torch.arange(vmin, vmax, delta, dtype=torch.float32).numpy()


def legacy_aupro(ps: PixelStream, fpr_limit: float, undefined: str, stacklevel: int = 4) -> float:
    """The Tipsomaly/AnomalyCLIP grid AUPRO, vectorised (needs >= 1 region and >= 1 label-0 pixel).

    *stacklevel* makes an :class:`~zsad.metrics.UndefinedMetricWarning` point at the public caller's caller.
    """
    what = "pixel aupro (legacy)"
    vmin, vmax = float(ps.sorted_all[0]), float(ps.sorted_all[-1])
    if not vmax > vmin:
        return undefined_value(what, "all map values are equal, so the threshold grid is empty", undefined, stacklevel)
    th = legacy_thresholds(vmin, vmax).astype(ps.sorted_all.dtype)  # exact: float32 -> float64 never rounds
    srt = np.argsort(th, kind="stable")
    ts = th[srt]
    n_th, k_regions = ts.size, ps.areas.size
    # bin b of an anomalous pixel = number of thresholds strictly below it: it is "> ts[j]" exactly for j < b
    bins = np.searchsorted(ts, ps.pos_values, side="left")
    hist = np.bincount(ps.region * (n_th + 1) + bins, minlength=k_regions * (n_th + 1)).reshape(k_regions, n_th + 1)
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (K, T): region pixels > ts[j]
    fp = (ps.sorted_all.size - np.searchsorted(ps.sorted_all, ts, side="right")) - above.sum(axis=0)
    counts = np.empty((n_th, k_regions), dtype=np.int64)
    counts[srt] = above.T  # back to grid order; C-contiguous rows make the mean below match np.mean(list)
    fps = np.empty(n_th, dtype=np.int64)
    fps[srt] = fp
    # the official loop collects PRO as np.float64 (np.mean) and FPR as Python floats, so torch.tensor() keeps
    # PRO in float64 but rounds FPR to float32; the FPR filter, the rescale and dx below are float32 like there
    pros = (counts / ps.areas).mean(axis=1)
    fprs = (fps / ps.n_neg).astype(np.float32)
    keep = fprs < np.float32(fpr_limit)
    f, p = fprs[keep], pros[keep]
    if f.size < 2:
        reason = f"only {f.size} of the {n_th} grid thresholds have FPR < {fpr_limit}"
        return undefined_value(what, reason, undefined, stacklevel)
    span = f.max() - f.min()
    if span == 0:
        return undefined_value(what, f"all kept grid thresholds have the same FPR {float(f[0])}", undefined, stacklevel)
    f = (f - f.min()) / span
    dx = np.diff(f)
    direction = -1 if bool(np.all(dx <= 0)) and bool(np.any(dx < 0)) else 1  # sklearn.metrics.auc
    return float(direction * np.add.reduce(dx * (p[1:] + p[:-1]) / 2.0))  # numpy.trapezoid


def aupro(maps: Any, masks: Any, *, mode: str = "exact", fpr_limit: float = 0.3, undefined: str = "nan") -> float:
    """AUPRO of one class, ``mode="exact"`` (MVTec AD semantics, default) or ``"legacy"`` (Tipsomaly parity).

    Args:
        maps: anomaly maps, float array of shape (N, H, W), finite (higher = more anomalous).
        masks: ground-truth masks of the same shape, bool or 0/1 (1 = anomalous).
        mode: ``"exact"`` or ``"legacy"`` (see the module docstring).
        fpr_limit: integration limit on the FPR axis, in (0, 1]; 0.3 in the literature.
        undefined: ``"nan"`` (default) or ``"zero"`` for undefined cases (masks of one class; legacy only: constant
            maps, fewer than two grid thresholds below the limit, or equal kept FPRs). Both warn.

    Returns:
        The AUPRO as a fraction in [0, 1].

    Raises:
        MetricError: bad shapes, NaN/inf maps, non-binary masks, bad ``mode``/``fpr_limit``/``undefined``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> masks = np.zeros((3, 16, 16), bool); masks[0, 4:9, 4:9] = True; masks[1, 10:12, 1:15] = True
        >>> maps = 0.6 * rng.random((3, 16, 16)) + 0.5 * masks
        >>> round(aupro(maps, masks), 6), round(aupro(maps, masks, mode="legacy"), 6)
        (0.97708, 0.976521)
    """
    s, m = check_pixel_args(maps, masks, mode, fpr_limit, undefined)
    ps = prepare_pixels(s, m)
    if ps.pos_values.size == 0 or ps.n_neg == 0:
        return undefined_value(f"pixel aupro ({mode})", one_class_reason(ps), undefined, 3)
    if mode == "legacy":
        return legacy_aupro(ps, fpr_limit, undefined)
    return exact_aupro(ps, rank_counts(ps.sorted_all, ps.pos_values), fpr_limit)


def one_class_reason(ps: PixelStream) -> str:
    """Why the pixel metrics of *ps* are undefined (its masks hold a single class)."""
    if ps.pos_values.size == 0:
        return "the masks contain no anomalous pixel (no ground-truth region)"
    return "the masks contain no normal pixel (every pixel is anomalous)"
