"""The example plugin's own tests: zsad's contract checks, plus the registered names when it is installed."""

from __future__ import annotations

import numpy as np
import pytest
from zsad_example_plugin.backbone import create_mean_color
from zsad_example_plugin.heads import max_patch, s2_plus_mean

import zsad
from zsad.testing import (
    check_backbone,
    check_head,
    check_prompt_strategy,
    check_prompt_training,
    parametrize_backbones,
)

installed = pytest.mark.skipif(
    "example_mean_color" not in zsad.list_backbones(), reason="zsad-example-plugin is not installed"
)


def test_backbone_meets_the_contract():
    check_backbone(create_mean_color)
    check_backbone(lambda: create_mean_color(embed_dim=8, image_size=28), image_size=42)


@pytest.mark.parametrize("head", [max_patch, s2_plus_mean])
def test_heads_meet_the_contract(head):
    check_head(head)


@pytest.mark.parametrize("strategy", ["fixed", "learnable", "decoupled"])
def test_prompt_strategies_work_with_the_backbone(strategy):
    from zsad.components import create_prompts
    from zsad.config import PromptConfig

    check_prompt_strategy(create_prompts(strategy, PromptConfig(strategy=strategy, checkpoint=None)), create_mean_color())


def test_prompt_learning_works_with_the_backbone():
    check_prompt_training(create_mean_color)


@installed
@parametrize_backbones(["example_mean_color"])
def test_registered_backbone(backbone):
    check_backbone(backbone)


@installed
def test_registered_heads_and_recipe():
    assert {"max_patch", "S2_plus_mean"} <= set(zsad.list_heads())
    det = zsad.Detector.from_recipe("example_mean_color", device="cpu")
    result = det.predict(np.full((40, 60, 3), 128, np.uint8), class_name="metal_nut")
    assert set(result.scores) == {"S2", "max_patch", "S2_plus_mean"}
    assert result.pred_score == result.scores["S2_plus_mean"]
    assert result.anomaly_map.shape == (40, 60)
