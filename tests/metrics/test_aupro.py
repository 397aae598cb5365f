"""AUPRO: exact mode vs the MVTec official algorithm, legacy mode vs the Tipsomaly 200-threshold loop."""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc

from zsad.errors import MetricError
from zsad.metrics import UndefinedMetricWarning, aupro, image_metrics, pixel_metrics
from zsad.metrics.aupro import legacy_thresholds

from .test_pixel import CASES, VECTORS, load_case, random_class


def mvtec_reference(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    """MVTec AD compute_pro + trapezoid (official v1.0 semantics), float64, straightforward."""
    fp_change = np.zeros(maps.shape)
    pro_change = np.zeros(maps.shape)
    n_regions = 0
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        fp_change[i] = labels == 0
        for j in range(1, n + 1):
            pro_change[i][labels == j] = 1.0 / np.sum(labels == j)
        n_regions += n
    order = np.argsort(maps.ravel(), kind="stable")[::-1]
    scores = maps.ravel()[order]
    fprs = np.cumsum(fp_change.ravel()[order]) / fp_change.sum()
    pros = np.cumsum(pro_change.ravel()[order]) / n_regions
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    x = np.concatenate([[0.0], fprs[last_of_tie], [1.0]])
    y = np.concatenate([[0.0], np.minimum(pros[last_of_tie], 1.0), [1.0]])
    correction = 0.0
    if limit not in x:
        ins = bisect.bisect(x, limit)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (limit - x[ins - 1])
    keep = x <= limit
    return (np.trapezoid(y[keep], x[keep]) + correction) / limit


def tipsomaly_loop(maps: np.ndarray, masks: np.ndarray, expect_fpr: float = 0.3, max_step: int = 200) -> float:
    """Official Tipsomaly ``cal_pro_score_gpu`` semantics as a plain loop over thresholds and regions."""
    min_th, max_th = float(maps.min()), float(maps.max())
    delta = (max_th - min_th) / max_step
    coords = [[r.coords for r in measure.regionprops(measure.label(m))] for m in masks]
    inverse = ~masks
    tn_pixel = int(inverse.sum())
    pros, fprs = [], []
    for th in torch.arange(min_th, max_th, delta).numpy():
        binary = maps > th
        pro = [binary[i][c[:, 0], c[:, 1]].sum().item() / len(c) for i, cs in enumerate(coords) for c in cs]
        fprs.append(np.logical_and(inverse, binary).sum().item() / tn_pixel)
        pros.append(np.mean(pro))
    pros, fprs = torch.tensor(pros), torch.tensor(fprs)
    idxes = fprs < expect_fpr
    fprs = fprs[idxes]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return auc(fprs.numpy(), pros[idxes].numpy())


def smooth_class(seed: int, n: int = 5, size: int = 48):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(1, n):
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, ry, rx = rng.uniform(0, size, 2).tolist() + rng.uniform(1.5, 7, 2).tolist()
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape) + 1.5 * masks, sigma=(0, 2, 2))
    maps = 1 / (1 + np.exp(-3 * noise))
    return maps.astype(np.float32), masks


@pytest.mark.parametrize("name", CASES)
def test_exact_matches_official_vectors(name):
    case = VECTORS["cases"][name]
    maps, masks = load_case(name)
    diagnostics = case["expected_diagnostics"]
    assert aupro(maps, masks) == pytest.approx(case["expected"]["pixel_aupro_0.3"], abs=1e-6)
    assert aupro(maps, masks, fpr_limit=0.05) == pytest.approx(diagnostics["pixel_aupro_0.05_mvtec_official"], abs=1e-6)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(diagnostics["pixel_aupro_1.0_mvtec_official"], abs=1e-6)
    assert aupro(maps.astype(np.float32), masks) == pytest.approx(
        diagnostics["pixel_aupro_0.3_float64_exact"], abs=1e-12
    )
    if name != "random_blobs":  # 8-connectivity: diagonal neighbours form one region
        assert abs(aupro(maps, masks) - diagnostics["pixel_aupro_0.3_4connectivity"]) > 1e-3


@pytest.mark.parametrize("seed", range(12))
def test_exact_matches_mvtec_reference(seed):
    rng = np.random.default_rng(seed)
    maps, masks = random_class(
        rng, n=int(rng.integers(1, 5)), size=int(rng.integers(6, 30)), levels=[4, 16, 256, None][seed % 4]
    )
    maps = maps - 0.5 * (seed % 3 == 0)
    limit = [0.3, 0.05, 1.0, float(rng.uniform(0.01, 0.99))][seed % 4]
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(mvtec_reference(maps, masks, limit), abs=1e-10)


def test_exact_is_invariant_to_monotone_transforms_and_legacy_is_not():
    maps, masks = smooth_class(3)
    maps = maps.astype(np.float64)
    warped = np.exp(20 * maps)
    assert aupro(warped, masks) == pytest.approx(aupro(maps, masks), abs=1e-12)
    assert aupro(warped, masks, mode="legacy") < aupro(maps, masks, mode="legacy") - 0.01


@pytest.mark.parametrize("seed", range(5))
def test_legacy_identical_to_tipsomaly_loop(seed):
    maps, masks = smooth_class(seed)
    limit = [0.3, 0.3, 0.1, 0.5, 0.3][seed]
    expected = tipsomaly_loop(maps, masks, expect_fpr=limit)
    assert aupro(maps, masks, mode="legacy", fpr_limit=limit) == pytest.approx(expected, abs=1e-12)
    maps64 = maps.astype(np.float64) ** 2  # float64 maps: float32 grid compared in float64, as torch does
    assert aupro(maps64, masks, mode="legacy") == pytest.approx(tipsomaly_loop(maps64, masks), abs=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_legacy_matches_tipsomaly_vectors(name):
    maps, masks = load_case(name)
    expected = VECTORS["cases"][name]["tipsomaly_style"]["pixel_aupro"]
    assert aupro(maps, masks, mode="legacy") == pytest.approx(expected, abs=1e-12)
    assert aupro(maps, masks, mode="legacy") == pytest.approx(tipsomaly_loop(maps, masks), abs=1e-12)


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (0.01234, 0.98765), (-3.5, 7.25), (0.5, 0.5000001), (1e-8, 3e-8)])
def test_legacy_thresholds_equal_torch_arange(lo, hi):
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    grid = legacy_thresholds(lo, hi)
    reference = torch.arange(lo, hi, (hi - lo) / 200).numpy()  # the official call, default dtype
    assert grid.dtype == np.float32 and grid.size in (200, 201)
    np.testing.assert_array_equal(grid, reference)


def test_legacy_constant_maps_are_undefined():
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[1, 2:4, 2:4] = True
    with pytest.warns(UndefinedMetricWarning, match="all map values are equal"):
        assert math.isnan(aupro(np.full(masks.shape, 0.5), masks, mode="legacy"))
    with pytest.warns(UndefinedMetricWarning):
        assert aupro(np.full(masks.shape, 0.5), masks, mode="legacy", undefined="zero") == 0.0
    # exact: one tie group, so the curve is the diagonal (0, 0)-(1, 1), i.e. a random detector
    assert aupro(np.full(masks.shape, 0.5), masks) == pytest.approx(0.15, abs=1e-12)


def test_legacy_too_few_grid_points_are_undefined():
    rng = np.random.default_rng(0)
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[1, :3, :3] = True
    saturated = (rng.random(masks.shape) < 0.5).astype(np.float64)  # half of the normal pixels at the max
    with pytest.warns(UndefinedMetricWarning, match="grid thresholds have FPR < 0.3"):
        assert math.isnan(aupro(saturated, masks, mode="legacy"))
    maps = np.where(masks, 1.0, 0.0)
    maps[0, 0, 0] = 1e6  # the grid jumps straight past every other score: all kept FPRs equal
    with pytest.warns(UndefinedMetricWarning, match="same FPR"):
        assert math.isnan(aupro(maps, masks, mode="legacy"))


def test_no_regions_is_undefined_not_limit_half():
    maps = np.random.default_rng(0).random((2, 8, 8))
    for mode in ("exact", "legacy"):
        with pytest.warns(UndefinedMetricWarning, match="no anomalous pixel"):
            assert math.isnan(aupro(maps, np.zeros(maps.shape, bool), mode=mode))  # MVTec code would say 0.15


def test_bad_mode_raises():
    with pytest.raises(MetricError, match="mode must be one of"):
        aupro(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), mode="grid")


def test_warnings_point_at_the_caller():
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[1, 2:4, 2:4] = True
    constant = np.full(masks.shape, 0.5)
    calls = [
        lambda: aupro(constant, masks, mode="legacy"),
        lambda: pixel_metrics(constant, masks, aupro="legacy"),
        lambda: pixel_metrics(constant, np.zeros_like(masks)),
        lambda: aupro(constant, np.zeros_like(masks)),
        lambda: image_metrics([0.1, 0.2], [0, 0]),
    ]
    for call in calls:
        with pytest.warns(UndefinedMetricWarning) as record:
            call()
        assert [Path(w.filename).name for w in record] == [Path(__file__).name]
