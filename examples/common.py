"""Command-line options shared by the example scripts: which recipe, which weights, which device.

Every example builds its detector with ``Detector.from_recipe(args.recipe, **recipe_overrides(args))`` (or passes
the overrides on to ``evaluate`` / ``train_prompts``). Without options that is the real recipe, whose weights are
downloaded on first use; the options point it at other weights, e.g. the tiny model of the test suite:

    --backbone-checkpoint tests/fixtures/tipsomaly-parity
    --prompt-checkpoint tests/fixtures/tipsomaly-parity/learnable_params.pth --image-size 56 --device cpu
"""

from __future__ import annotations

import argparse
from typing import Any


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add --recipe, --backbone-checkpoint, --prompt-checkpoint, --image-size, --device and --dtype."""
    group = parser.add_argument_group("model")
    group.add_argument("--recipe", default="tipsomaly", help="recipe name or JSON file (default: tipsomaly)")
    group.add_argument("--backbone-checkpoint", help="backbone weights: a folder or a known name (default: the recipe's)")
    group.add_argument("--prompt-checkpoint", help="learned prompt tokens: a file or a built-in name (default: the recipe's)")
    group.add_argument("--image-size", type=int, help="model input size, a multiple of 14 (default: the recipe's, 518)")
    group.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    group.add_argument("--dtype", choices=["float32", "bfloat16"], help="backbone precision (default: float32)")


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields set on the command line, as ``Detector.from_recipe(**overrides)`` takes them."""
    fields = {
        "backbone_checkpoint": args.backbone_checkpoint,
        "prompt_checkpoint": args.prompt_checkpoint,
        "image_size": args.image_size,
    }
    return {key: value for key, value in fields.items() if value is not None}
