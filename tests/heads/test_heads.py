"""Scoring heads: S1-S5 semantics and the pixel map against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from zsad import create_head
from zsad.heads.base import ScoreInputs, upsample_grid_map
from zsad.heads.pixel import PixelMapHead, gaussian_blur, smooth_grid_map


@pytest.mark.parametrize("shape", [(2, 518, 518), (1, 10, 7), (3, 33, 64)])
@pytest.mark.parametrize("sigma", [4, 1.5, 8])
def test_gaussian_matches_scipy_reflect(shape, sigma):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    ref = np.stack([ndi.gaussian_filter(m, sigma=sigma, mode="reflect", truncate=4.0) for m in x])
    np.testing.assert_allclose(gaussian_blur(torch.from_numpy(x), sigma).numpy(), ref, atol=2e-6)


@pytest.mark.parametrize(("grid", "size", "sigma"), [((37, 37), (518, 518), 4), ((4, 6), (30, 45), 1.5),
                                                    ((7, 5), (7, 5), 2), ((3, 3), (10, 12), 8)])
def test_fused_smoothing_equals_upsampling_then_the_gaussian(grid, size, sigma):
    """The one-operator-per-axis map (upsampling and Gaussian fused) is the step-by-step computation."""
    g = torch.from_numpy(np.random.default_rng(1).random((3, grid[0] * grid[1]), dtype=np.float32))
    steps = gaussian_blur(upsample_grid_map(g, grid, size), sigma)
    torch.testing.assert_close(smooth_grid_map(g, grid, size, sigma), steps, atol=2e-6, rtol=0)
    probs = torch.stack([1 - g, g], dim=-1)  # the head: 0.5 + 0.5 * smoothed(abnormal - normal)
    head = PixelMapHead(sigma=sigma)
    torch.testing.assert_close(head(ScoreInputs({}, probs, grid), size),
                               gaussian_blur(head.rough(probs, grid, size), sigma), atol=2e-6, rtol=0)


def test_image_scores():
    inp = ScoreInputs(
        {"object": torch.tensor([[0.9, 0.1], [0.4, 0.6]]), "spatial": torch.tensor([[0.2, 0.8], [0.7, 0.3]])},
        torch.tensor([[[0.7, 0.3], [0.4, 0.6]], [[0.1, 0.9], [0.8, 0.2]]]),
        (1, 2),
    )
    got = {n: create_head(n)(inp).tolist() for n in ("S1", "S2", "S3", "S4", "S5")}
    assert got["S1"] == pytest.approx([0.1, 0.6]) and got["S2"] == pytest.approx([0.8, 0.3])
    assert got["S3"] == pytest.approx([0.8, 0.6]) and got["S4"] == pytest.approx([0.45, 0.45])
    assert got["S5"] == pytest.approx([0.8 + 0.6, 0.3 + 0.9])


def test_pixel_map_sigmoid_blend_and_zero_sigma():
    probs = torch.tensor([[[0.2, 0.6]] * 4])
    head = PixelMapHead(sigma=0)
    out = head(ScoreInputs({}, probs, (2, 2)), (4, 4))
    torch.testing.assert_close(out, torch.full((1, 4, 4), 0.7))
    with pytest.raises(Exception, match="sigma"):
        PixelMapHead(sigma=-1)


def test_pixel_map_over_layers_sums_and_trains_each_layer():
    from zsad.heads.losses import SegmentationLoss

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.softmax(torch.randn(2, 9, 2, generator=gen), dim=-1) for _ in range(2))
    inputs = ScoreInputs({}, a, (3, 3), layer_probs={2: a, 5: b})
    single = PixelMapHead(sigma=1)
    both = PixelMapHead(sigma=1, layers=[2, 5], loss_weight=4)
    assert both.feature_request.layers == (2, 5)
    torch.testing.assert_close(both(inputs, (12, 12)),
                               single(inputs, (12, 12)) + single(ScoreInputs({}, b, (3, 3)), (12, 12)))
    masks = torch.zeros(2, 12, 12)
    masks[0, 3:8, 2:6] = 1
    crit = SegmentationLoss()
    la, lb = single.loss(inputs, masks, crit), single.loss(ScoreInputs({}, b, (3, 3)), masks, crit)
    got = both.loss(inputs, masks, crit)
    for name in ("focal", "dice_pos", "dice_neg"):
        torch.testing.assert_close(got[name], la[name] + lb[name])
    torch.testing.assert_close(got["total"], 4 * (la["total"] + lb["total"]))
    with pytest.raises(Exception, match="distinct whole block numbers"):
        PixelMapHead(layers=[0])
    with pytest.raises(Exception, match="loss_weight"):
        PixelMapHead(loss_weight=0)


def test_anomalyclip_image_head_is_trained_with_the_image_cross_entropy():
    logits = torch.tensor([[0.3, -0.2], [1.0, 2.5], [0.0, 0.1]]) / 0.07
    inputs = ScoreInputs({"object": logits.softmax(-1)}, torch.zeros(3, 1, 2), (1, 1))
    head = create_head("anomalyclip")
    labels = torch.tensor([0, 1, 1])
    torch.testing.assert_close(head(inputs), logits.softmax(-1)[:, 1])
    torch.testing.assert_close(head.loss(inputs, labels)["image"], torch.nn.functional.cross_entropy(logits, labels))
    assert create_head("S1").loss(inputs, labels) == {}
