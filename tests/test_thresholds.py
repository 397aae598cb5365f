"""zsad.thresholds: NormalPercentile (no anomalies needed) and F1Optimal (labelled validation data)."""

from __future__ import annotations

import numpy as np
import pytest

from zsad.errors import ConfigError
from zsad.results import AnomalyResult
from zsad.thresholds import F1Optimal, NormalPercentile


def brute_force_f1_threshold(scores, labels):
    best, best_t = -1.0, None
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & labels)
        f1 = 2 * tp / (np.sum(pred) + np.sum(labels))
        if f1 > best:
            best, best_t = f1, t
    return best_t, best


def results(scores, maps):
    return [AnomalyResult(pred_score=float(s), scores={"S5": float(s)}, anomaly_map=m) for s, m in zip(scores, maps)]


def test_normal_percentile_image_threshold():
    rng = np.random.default_rng(0)
    normal = rng.normal(0.5, 0.05, 1000)
    p = NormalPercentile(q=99).fit(normal)
    assert p.threshold_ == pytest.approx(np.percentile(normal, 99))
    assert p.pixel_threshold_ is None
    assert np.mean(p.predict(rng.normal(0.5, 0.05, 20000))) == pytest.approx(0.01, abs=0.005)
    assert np.mean(p.predict(rng.normal(0.9, 0.05, 1000))) > 0.99
    # with labels only the normal images count: anomalies do not move the threshold
    mixed = np.concatenate([normal, np.full(50, 10.0)])
    labels = np.r_[np.zeros(1000), np.ones(50)]
    assert NormalPercentile(q=99).fit(mixed, labels).threshold_ == p.threshold_
    with pytest.raises(ConfigError, match="normal"):
        NormalPercentile().fit([1.0, 2.0], labels=[1, 1])
    with pytest.raises(ConfigError):
        NormalPercentile(q=101)


def test_normal_percentile_pixel_threshold_and_apply():
    rng = np.random.default_rng(1)
    maps = [rng.random((10, 10)).astype(np.float32) for _ in range(4)]
    scores = [0.1, 0.2, 0.3, 0.9]
    p = NormalPercentile(q=90, pixel_q=99.5).fit(results(scores, maps), labels=[0, 0, 0, 1])
    assert p.threshold_ == pytest.approx(np.percentile(scores[:3], 90))
    assert p.pixel_threshold_ == pytest.approx(np.percentile(np.concatenate([m.ravel() for m in maps[:3]]), 99.5))
    out = p.apply(results(scores, maps))
    assert p.threshold_ == pytest.approx(0.28) and [r.pred_label for r in out] == [False, False, True, True]
    assert out[0].pred_mask.dtype == bool and out[0].pred_mask.shape == (10, 10)
    np.testing.assert_array_equal(out[1].pred_mask, maps[1] >= p.pixel_threshold_)
    single = p.apply(results([0.95], maps[:1])[0])
    assert isinstance(single, AnomalyResult) and single.pred_label is True


def test_f1_optimal_image_threshold_matches_brute_force():
    rng = np.random.default_rng(2)
    labels = rng.random(300) < 0.3
    scores = rng.normal(0.0, 1.0, 300) + 1.2 * labels
    p = F1Optimal().fit(scores, labels.astype(int))
    t, best = brute_force_f1_threshold(scores, labels)
    assert p.threshold_ == t
    pred = p.predict(scores)
    assert 2 * np.sum(pred & labels) / (pred.sum() + labels.sum()) == pytest.approx(best)


def test_f1_optimal_pixel_threshold():
    rng = np.random.default_rng(3)
    masks = [np.zeros((12, 12), np.uint8) for _ in range(3)]
    masks[1][3:7, 3:7] = 1
    masks[2][6:10, 2:9] = 1
    maps = [(rng.random((12, 12)) * 0.6 + 0.5 * m).astype(np.float32) for m in masks]
    p = F1Optimal().fit([0.1, 0.8, 0.9], labels=[0, 1, 1], maps=maps, masks=[None, masks[1], masks[2]])
    values = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([m.ravel() for m in masks]).astype(bool)
    t, _ = brute_force_f1_threshold(values, truth)
    assert p.pixel_threshold_ == pytest.approx(t) and p.threshold_ == 0.8
    out = p.apply(results([0.1, 0.8, 0.9], maps))
    assert [r.pred_label for r in out] == [False, True, True]
    np.testing.assert_array_equal(out[2].pred_mask, maps[2] >= t)
    # pixel threshold only (no image labels)
    only_pixels = F1Optimal().fit([0.1, 0.8, 0.9], maps=maps, masks=masks)
    assert only_pixels.threshold_ is None and only_pixels.pixel_threshold_ == p.pixel_threshold_
    with pytest.raises(ConfigError, match="no image threshold"):
        only_pixels.predict([0.5])


def test_f1_optimal_refuses_data_without_anomalies():
    with pytest.raises(ConfigError, match="NormalPercentile"):
        F1Optimal().fit([0.1, 0.2, 0.3], labels=[0, 0, 0])
    with pytest.raises(ConfigError, match="labels"):
        F1Optimal().fit([0.1, 0.2])
    with pytest.raises(ConfigError, match="anomalous"):
        F1Optimal().fit([0.1], maps=[np.zeros((2, 2))], masks=[np.zeros((2, 2))])


def test_errors_and_repr():
    with pytest.raises(ConfigError, match="not fitted"):
        NormalPercentile().predict([1.0])
    with pytest.raises(ConfigError, match="NaN"):
        NormalPercentile().fit([1.0, float("nan")])
    with pytest.raises(ConfigError, match="labels"):
        NormalPercentile().fit([1.0, 2.0], labels=[0])
    with pytest.raises(ConfigError, match="pixel threshold"):
        NormalPercentile().fit([1.0]).predict_mask(np.zeros((2, 2)))
    p = NormalPercentile(q=95).fit([0.0, 1.0])
    assert "q=95.0" in repr(p) and "threshold_=" in repr(p)
