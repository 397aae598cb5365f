"""Image-level metrics, mean_over_classes and the doctests of zsad.metrics."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from zsad.errors import MetricError
from zsad.metrics import UndefinedMetricWarning, image_metrics, mean_over_classes

VECTORS = json.loads((Path(__file__).parents[1] / "fixtures" / "metrics" / "metric_vectors.json").read_text())
CASES = ["rects", "ties_diagonal", "random_blobs"]


def image_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = VECTORS["cases"][name]["arrays"]
    scores = np.array(arrays["image_score_numerators"], dtype=np.int64) / arrays["image_score_denominator"]
    return scores, np.array(arrays["image_labels"])


def sklearn_reference(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "auroc": roc_auc_score(labels, scores),
        "ap": average_precision_score(labels, scores),
        "f1_max": float(np.max(f1[np.isfinite(f1)])),
    }


@pytest.mark.parametrize("name", CASES)
def test_metric_vectors(name):
    expected = VECTORS["cases"][name]["expected"]
    got = image_metrics(*image_case(name))
    for key in ("auroc", "ap", "f1_max"):
        assert got[key] == pytest.approx(expected[f"image_{key}"], abs=1e-9)
    assert VECTORS["cases"][name]["tipsomaly_style"]["image_auroc"] == expected["image_auroc"]


def test_metric_vectors_mean_over_categories():
    per_class = {name: image_metrics(*image_case(name)) for name in CASES}
    mean, counts = mean_over_classes(per_class)
    reference = VECTORS["mean_over_categories"]["reference"]
    for key in ("auroc", "ap", "f1_max"):
        assert mean[key] == pytest.approx(reference[f"image_{key}"], abs=1e-9)
        assert counts[key] == 3


@pytest.mark.parametrize("seed", range(8))
def test_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]
    levels = int(rng.choice([2, 5, 20, 10_000]))
    scores = rng.integers(0, levels, n) / levels + 0.3 * labels * rng.random()
    if seed % 2:
        scores = scores.astype(np.float32) - 0.5  # negative scores, float32
    got = image_metrics(scores, labels)
    for key, value in sklearn_reference(scores, labels).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_accepts_lists_bool_and_float_labels():
    scores = [0.3, 0.1, 0.7, 0.5]
    expected = image_metrics(scores, [0, 0, 1, 1])
    assert image_metrics(np.array(scores), np.array([False, False, True, True])) == expected
    assert image_metrics(scores, np.array([0.0, 0.0, 1.0, 1.0])) == expected
    assert image_metrics(np.array(scores)[:, None], np.array([[0], [0], [1], [1]])) == expected
    assert all(type(v) is float for v in expected.values())


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], [True] * 3])
def test_single_class_is_nan_with_warning(labels):
    with pytest.warns(UndefinedMetricWarning, match="undefined"):
        got = image_metrics([0.1, 0.2, 0.3], labels)
    assert set(got) == {"auroc", "ap", "f1_max"}
    assert all(math.isnan(v) for v in got.values())


def test_single_class_zero_opt_in():
    with pytest.warns(UndefinedMetricWarning):
        got = image_metrics([0.1, 0.2, 0.3], [0, 0, 0], undefined="zero")
    assert got == {"auroc": 0.0, "ap": 0.0, "f1_max": 0.0}
    case = VECTORS["cases"]["no_anomalies"]
    with pytest.warns(UndefinedMetricWarning):
        got = image_metrics(*image_case("no_anomalies"), undefined="zero")
    assert got == {k: case["tipsomaly_style"][f"image_{k}"] for k in got}


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2], [0, 1, 1], "shape"),
        ([], [], "empty"),
        ([0.1, float("nan")], [0, 1], "NaN or inf"),
        ([0.1, float("inf")], [0, 1], "NaN or inf"),
        ([0.1, 0.2], [0, 2], "labels must be binary"),
        ([0.1, 0.2], [-1, 1], "labels must be binary"),
        ([0.1, 0.2], [0.0, 0.5], "labels must be binary"),
        (["a", "b"], [0, 1], "scores must hold real numbers"),
    ],
)
def test_bad_input_raises(scores, labels, match):
    with pytest.raises(MetricError, match=match):
        image_metrics(scores, labels)


def test_bad_undefined_raises():
    with pytest.raises(MetricError, match="undefined must be one of"):
        image_metrics([0.1, 0.2], [0, 1], undefined="skip")


def test_mean_over_classes_skips_nan():
    per_class = {
        "a": {"auroc": 0.9, "aupro": float("nan"), "ap": 0.5},
        "b": {"auroc": 0.7, "aupro": 0.4, "ap": None},
        "c": {"auroc": float("nan"), "aupro": 0.6},
    }
    mean, counts = mean_over_classes(per_class)
    assert list(mean) == ["auroc", "aupro", "ap"]
    assert mean["auroc"] == pytest.approx(0.8) and counts["auroc"] == 2
    assert mean["aupro"] == pytest.approx(0.5) and counts["aupro"] == 2
    assert mean["ap"] == pytest.approx(0.5) and counts["ap"] == 1


def test_mean_over_classes_all_undefined_and_empty():
    mean, counts = mean_over_classes({"x": {"auroc": float("nan")}})
    assert math.isnan(mean["auroc"]) and counts == {"auroc": 0}
    assert mean_over_classes({}) == ({}, {})


@pytest.mark.parametrize(
    "module", ["zsad.metrics", "zsad.metrics._curves", "zsad.metrics.image", "zsad.metrics.pixel", "zsad.metrics.aupro"]
)
def test_doctests(module):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, zsad.metrics; print('torch' in sys.modules, 'scipy.ndimage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
