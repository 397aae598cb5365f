"""The ``example_mean_color`` recipe: the plugin backbone with fixed prompts and the plugin heads.

Example:
    >>> mean_color_recipe()["heads"]["image_score"]
    'S2_plus_mean'
"""

from __future__ import annotations


def mean_color_recipe() -> dict:
    """Example recipe: mean-colour backbone, fixed prompts, ``S2_plus_mean`` image score (plugin demo only)."""
    return {
        "name": "example_mean_color",
        "description": "Plugin demo: mean-colour backbone, fixed prompts, S2_plus_mean score (not a real detector).",
        "backbone": {"name": "example_mean_color", "checkpoint": None, "options": {}},
        "prompts": {"strategy": "fixed", "fixed": "industrial"},
        "heads": {"image_heads": ["S2", "max_patch", "S2_plus_mean"], "image_score": "S2_plus_mean",
                  "pixel": "pixel_map", "sigma": 1.0},
        "preprocess": {"image_size": 56},
        "batch_size": 4,
    }
