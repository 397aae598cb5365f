"""zsad.viz: shared colour scale per class, jet colormap, contours, overlays, class figures (no matplotlib needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from zsad import viz
from zsad.errors import ConfigError
from zsad.results import AnomalyResult


def test_shared_scale_gives_the_same_colour_to_the_same_value():
    low = np.full((8, 8), 0.1, np.float32)
    low[2, 2] = 0.4  # the most anomalous pixel of a normal-looking image
    high = np.linspace(0.3, 1.0, 64, dtype=np.float32).reshape(8, 8)
    high[5, 5] = 0.4
    vmin, vmax = viz.class_scale([low, high], method="minmax")
    assert (vmin, vmax) == (pytest.approx(0.1), pytest.approx(1.0))
    black = np.zeros((8, 8, 3), np.uint8)
    a = np.asarray(viz.overlay(black, low, vmin, vmax, alpha=1.0))
    b = np.asarray(viz.overlay(black, high, vmin, vmax, alpha=1.0))
    assert a[2, 2].tolist() == b[5, 5].tolist()
    # with a per-image min-max (what the official visualiser does) the same value gets different colours,
    # and the normal image's maximum turns dark red
    a_own = np.asarray(viz.overlay(black, low, float(low.min()), float(low.max()), alpha=1.0))
    b_own = np.asarray(viz.overlay(black, high, float(high.min()), float(high.max()), alpha=1.0))
    assert a_own[2, 2].tolist() != b_own[5, 5].tolist()
    assert a_own[2, 2].tolist() == viz.colormap_lut("jet")[-1].tolist()
    # on the shared scale the normal image stays in the blue half
    assert a[2, 2][2] > a[2, 2][0]


def test_jet_lut_and_colorize():
    lut = viz.colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0].tolist() == [0, 0, 128] and lut[-1].tolist() == [128, 0, 0]
    assert lut[128].tolist()[1] == 255  # green in the middle
    rgb = viz.colorize(np.array([[-5.0, 0.5, 9.0]]), 0.0, 1.0)
    assert rgb.shape == (1, 3, 3) and rgb[0, 0].tolist() == lut[0].tolist() and rgb[0, 2].tolist() == lut[-1].tolist()
    assert viz.colormap_lut("gray")[77].tolist() == [77, 77, 77]
    flat = viz.normalize(np.array([1.0, 2.0]), 1.0, 1.0)  # degenerate scale does not divide by zero
    assert flat.tolist() == [0.0, 1.0]


def test_matplotlib_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(ConfigError, match="matplotlib"):
        viz.colormap_lut("viridis")
    assert viz.colormap_lut("jet").shape == (256, 3)


def test_class_scale_methods():
    maps = np.zeros((2, 100, 10), np.float32)
    maps[1] = 1.0
    maps[1, 0, 0] = 50.0  # one outlier
    assert viz.class_scale(maps, "minmax") == (0.0, 50.0)
    vmin, vmax = viz.class_scale(maps)  # 1st / 99.9th percentile ignores it
    assert vmin == 0.0 and vmax == pytest.approx(1.0, abs=0.05)
    ragged = viz.class_scale([np.zeros((3, 4)), np.ones((5, 2))], "minmax")
    assert ragged == (0.0, 1.0)
    with pytest.raises(ConfigError):
        viz.class_scale(maps, "mean")
    with pytest.raises(ConfigError):
        viz.class_scale(maps, percentiles=(50, 10))


def test_contours_are_pale_green_on_the_boundary():
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 1
    o = np.asarray(viz.overlay(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20)), 0.0, 1.0, contours_mask=m))
    green = (o == np.array(viz.CONTOUR_COLOR)).all(axis=2)
    assert green[5, 5] and green[6, 10] and not green[10, 10] and not green[0, 0] and not green[4, 10]
    band = viz.mask_contours(m, 2)
    assert band.sum() == 100 - 36  # 10x10 square minus its 6x6 interior
    # a mask of another size is resized with the official rule
    o2 = np.asarray(viz.overlay(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20)), 0.0, 1.0,
                                contours_mask=np.kron(m, np.ones((2, 2), np.uint8))))
    assert (o2 == np.array(viz.CONTOUR_COLOR)).all(axis=2)[5, 5]


def test_overlay_blends_and_resizes_the_image_to_the_map():
    img = np.full((40, 60, 3), 200, np.uint8)
    amap = np.zeros((10, 15), np.float32)
    o = viz.overlay(img, amap, 0.0, 1.0, alpha=0.5)
    assert o.size == (15, 10) and o.mode == "RGB"
    assert np.asarray(o)[0, 0].tolist() == [100, 100, 164]  # 0.5 * 200 + 0.5 * (0, 0, 128)
    float_img = np.full((10, 15, 3), 1.0, np.float32)
    assert np.asarray(viz.overlay(float_img, amap, 0, 1, alpha=0.0))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ConfigError):
        viz.overlay(img, amap, 0, 1, alpha=2.0)


def test_save_overlays_writes_one_png_per_image(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / "imgs" / f"sub{i}" / "000.png"  # same stem twice
        p.parent.mkdir(parents=True)
        Image.new("RGB", (12, 8), (i * 100, 0, 0)).save(p)
        paths.append(p)
    results = [
        AnomalyResult(pred_score=0.1, scores={"S5": 0.1}, anomaly_map=np.zeros((8, 12), np.float32), image_path=str(paths[0])),
        AnomalyResult(pred_score=0.9, scores={"S5": 0.9}, anomaly_map=np.ones((8, 12), np.float32), image_path=str(paths[1])),
    ]
    written = viz.save_overlays(results, None, tmp_path / "out", scale="minmax", alpha=1.0)
    assert [p.name for p in written] == ["sub0__000.png", "sub1__000.png"]
    first, second = (np.asarray(Image.open(p)) for p in written)
    lut = viz.colormap_lut("jet")
    assert first[0, 0].tolist() == lut[0].tolist() and second[0, 0].tolist() == lut[-1].tolist()
    masks = [None, np.ones((8, 12), np.uint8)]
    named = viz.save_overlays([r.anomaly_map for r in results], paths, tmp_path / "o2", masks=masks,
                              names=["a", "b"], scale=(0.0, 2.0))
    assert [p.name for p in named] == ["a.png", "b.png"]
    with pytest.raises(ConfigError):
        viz.save_overlays([np.zeros((2, 2))], [], tmp_path / "o3")


def test_class_figure_grid_with_colour_bar():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (30, 30, 3), dtype=np.uint8) for _ in range(5)]
    maps = [rng.random((30, 30)).astype(np.float32) for _ in range(5)]
    labels = [0, 1, 0, 1, 1]
    masks = [None, np.ones((30, 30)), None, None, np.eye(30)]
    fig = viz.class_figure(images, maps, labels, masks, tile=40, n_normal=2, n_anomalous=3, title="toy")
    assert fig.mode == "RGB"
    w, h = fig.size
    assert w > 3 * 40 and h > 2 * 40
    arr = np.asarray(fig)
    lut = viz.colormap_lut("jet")
    # the colour bar holds both ends of the colormap
    colours = {tuple(c) for c in arr.reshape(-1, 3).tolist()}
    assert tuple(lut[0]) in colours and tuple(lut[-1]) in colours
    only_normal = viz.class_figure(images[:1], maps[:1], [0], tile=20, vmin=0.0, vmax=1.0)
    assert only_normal.size[1] < h
    with pytest.raises(ConfigError):
        viz.class_figure(images, maps, labels[:2])
