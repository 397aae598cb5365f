"""Pixel-level metrics: reference vectors, scikit-learn, the official Tipsomaly tables, undefined cases, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from zsad.errors import MetricError
from zsad.metrics import UndefinedMetricWarning, image_metrics, mean_over_classes, pixel_metrics

FIXTURES = Path(__file__).parents[1] / "fixtures"
VECTORS = json.loads((FIXTURES / "metrics" / "metric_vectors.json").read_text())
CASES = ["rects", "ties_diagonal", "random_blobs"]
PIXEL_KEYS = ("auroc", "ap", "aupro", "f1_max")


def load_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(maps float64 (N,32,32), masks bool (N,32,32)) of a metric_vectors.json case."""
    arrays = VECTORS["cases"][name]["arrays"]
    masks = np.array([[[ch == "1" for ch in row] for row in image] for image in arrays["masks"]])
    maps = np.array(arrays["score_numerators"], dtype=np.int64) / arrays["score_denominator"]
    return maps, masks


def parity_dir() -> Path:
    """The Tipsomaly parity fixture: the repository copy if present, else the shared one."""
    for folder in (FIXTURES / "tipsomaly-parity", Path("/work/shared/fixtures/tipsomaly-parity")):
        if (folder / "reference.npz").is_file():
            return folder
    pytest.skip("Tipsomaly parity fixture not found")


def random_class(rng, n=6, size=24, levels=None, dtype=np.float64):
    """Random masks (rectangles, some images normal) and scores correlated with them."""
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(1, n):
        for _ in range(int(rng.integers(0, 3))):
            r, c = rng.integers(0, size - 2, 2)
            masks[i, r : r + rng.integers(1, 9), c : c + rng.integers(1, 9)] = True
    masks[n - 1, 1:4, 1:4] = True  # at least one region
    maps = rng.random(masks.shape) + 0.6 * masks * rng.random()
    if levels:
        maps = np.round(maps * levels) / levels
    return maps.astype(dtype), masks


@pytest.mark.parametrize("name", CASES)
def test_metric_vectors(name):
    case = VECTORS["cases"][name]
    maps, masks = load_case(name)
    got = pixel_metrics(maps, masks)
    for key in ("auroc", "ap", "f1_max"):
        assert got[key] == pytest.approx(case["expected"][f"pixel_{key}"], abs=1e-9)
    assert got["aupro"] == pytest.approx(case["expected"]["pixel_aupro_0.3"], abs=1e-6)
    assert got["aupro"] == pytest.approx(case["expected_diagnostics"]["pixel_aupro_0.3_float64_exact"], abs=1e-12)
    legacy = pixel_metrics(maps.astype(np.float32), masks, aupro="legacy")
    assert legacy["aupro"] == pytest.approx(case["tipsomaly_style"]["pixel_aupro"], abs=1e-12)
    assert {k: legacy[k] for k in ("auroc", "ap", "f1_max")} == {k: got[k] for k in ("auroc", "ap", "f1_max")}


def test_metric_vectors_mean_over_categories():
    mean, counts = mean_over_classes({name: pixel_metrics(*load_case(name)) for name in CASES})
    reference = VECTORS["mean_over_categories"]["reference"]
    for key in ("auroc", "ap", "f1_max"):
        assert mean[key] == pytest.approx(reference[f"pixel_{key}"], abs=1e-9)
    assert mean["aupro"] == pytest.approx(reference["pixel_aupro_0.3"], abs=1e-6)
    assert counts == {key: 3 for key in PIXEL_KEYS}


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 2 else np.float64
    maps, masks = random_class(rng, levels=[None, 7, 50][seed % 3], dtype=dtype)
    if seed == 4:
        maps = maps - maps.mean()  # negative scores, and -0.0 next to +0.0 must form one tie group
        maps[0, 0, :4] = [-0.0, 0.0, -0.0, 0.0]
    got = pixel_metrics(maps, masks)
    y, s = masks.ravel(), maps.ravel()
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["f1_max"] == pytest.approx(np.max(f1[np.isfinite(f1)]), abs=1e-12)


def test_float64_maps_are_not_downcast():
    maps = np.zeros((1, 2, 2)) + np.array([[0.5, 0.5 + 1e-12], [0.1, 0.2]])
    masks = np.array([[[False, True], [False, False]]])
    # as float32 the two top scores would tie (AUROC 5/6); float64 keeps them apart (AUROC 1)
    assert pixel_metrics(maps, masks)["auroc"] == 1.0
    assert pixel_metrics(maps.astype(np.float32), masks)["auroc"] == pytest.approx(5 / 6)


def test_mask_dtypes_are_equivalent():
    maps, masks = random_class(np.random.default_rng(7))
    expected = pixel_metrics(maps, masks)
    for m in (masks.astype(np.uint8), masks.astype(np.int64), masks.astype(np.float32)):
        assert pixel_metrics(maps, m) == expected
    assert pixel_metrics(maps.astype(np.float16), masks)["auroc"] == pytest.approx(expected["auroc"], abs=0.01)


def test_official_tipsomaly_tables():
    """Recompute the official tables (x100) from the parity fixture's maps, masks and scores."""
    folder = parity_dir()
    ref = np.load(folder / "reference.npz")
    arrays = json.loads((folder / "manifest.json").read_text())["arrays"]
    score_columns = {
        "metrics_table_industrial": ("score_S1_plus_max", "score_S2_plus_max"),
        "metrics_table_industrial_noagg": ("score_S1", "score_S2"),
    }
    pixel = {}
    for c in (0, 1):  # class order of meta.json: metal_nut = 0, pipe_fryum = 1
        sel = ref["cls_id"] == c
        pixel[c] = pixel_metrics(ref["anomaly_map"][sel], ref["mask_u8"][sel], aupro="legacy", undefined="zero")
    for table, (col0, col1) in score_columns.items():
        rows = []
        for c in (0, 1):
            sel = ref["cls_id"] == c
            a = image_metrics(ref[col0][sel], ref["label"][sel], undefined="zero")
            b = image_metrics(ref[col1][sel], ref["label"][sel], undefined="zero")
            p = pixel[c]
            rows.append(
                [
                    p["auroc"],
                    p["aupro"],
                    p["f1_max"],
                    a["auroc"],
                    b["auroc"],
                    a["ap"],
                    b["ap"],
                    a["f1_max"],
                    b["f1_max"],
                ]
            )
        got = np.array(rows) * 100
        got = np.vstack([got, got.mean(axis=0)])  # the official Mean row (pandas mean, zeros included)
        atol = np.array(arrays[table]["tolerance"]["atol"])  # per column, in percentage points
        assert np.all(np.abs(got - ref[table]) <= atol), f"{table}:\n{got}\nofficial:\n{ref[table]}"


@pytest.mark.parametrize("fill", [0, 1])
def test_single_class_masks_are_nan_with_warning(fill):
    maps = np.random.default_rng(0).random((2, 8, 8))
    with pytest.warns(UndefinedMetricWarning, match="pixel auroc, ap, aupro and f1_max"):
        got = pixel_metrics(maps, np.full(maps.shape, fill, dtype=np.uint8))
    assert set(got) == set(PIXEL_KEYS) and all(math.isnan(v) for v in got.values())


def test_single_class_zero_opt_in_matches_tipsomaly():
    maps, masks = load_case("no_anomalies")
    tipsomaly = VECTORS["cases"]["no_anomalies"]["tipsomaly_style"]
    for mode in ("exact", "legacy"):
        with pytest.warns(UndefinedMetricWarning):
            got = pixel_metrics(maps, masks, aupro=mode, undefined="zero")
        assert got == {key: tipsomaly[f"pixel_{key}"] for key in PIXEL_KEYS}


@pytest.mark.parametrize(
    "maps, masks, kwargs, match",
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), {}, "shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {}, r"\(N, H, W\)"),
        (np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), {}, "empty"),
        (np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)), {}, "NaN or inf"),
        (np.array([[[0.0, -np.inf]]]), np.zeros((1, 1, 2)), {}, "NaN or inf"),
        (np.zeros((1, 2, 2)), np.array([[[0, 255], [0, 0]]], np.uint8), {}, r"masks > 0"),
        (np.zeros((1, 2, 2)), np.array([[[0, 0.5], [0, 1]]]), {}, "masks must be binary"),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), {"aupro": "fast"}, "aupro must be one of"),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), {"fpr_limit": 0.0}, "fpr_limit"),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), {"fpr_limit": 1.5}, "fpr_limit"),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), {"undefined": "drop"}, "undefined must be one of"),
        ([np.zeros((2, 2)), np.zeros((3, 3))], np.zeros((2, 2, 2)), {}, "cannot be read as one array"),
    ],
)
def test_bad_input_raises(maps, masks, kwargs, match):
    with pytest.raises(MetricError, match=match):
        pixel_metrics(maps, masks, **kwargs)
