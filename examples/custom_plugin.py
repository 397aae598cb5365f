"""Register a backbone and a head at runtime, use them in a recipe, and check them with zsad.testing.

* backbone ``flip_averaged``: wraps any registered backbone and averages its features over the image and its
  mirror image (test-time augmentation; patch tokens are mirrored back before averaging);
* head ``S2_topk``: the spatial global token plus the mean of the k strongest patch scores, a variant of S5
  (which adds the single strongest patch) that one noisy patch moves less;
* recipe ``tipsomaly_flip_topk``: Tipsomaly with both.

    python examples/custom_plugin.py examples/images --class-name "metal plate"

A package makes the same components available to every zsad user through entry points instead of calling the
``register_*`` functions (see plugins/zsad-example-plugin and the "Write a plugin" tutorial).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from common import add_model_options, recipe_overrides

import zsad
from zsad.backbones.base import Backbone, FeatureRequest, ImageFeatures
from zsad.data import list_images
from zsad.heads.base import ImageHead, ScoreInputs


class FlipAveraged(Backbone):
    """Average another backbone's features over an image and its horizontal mirror."""

    def __init__(self, inner: Backbone) -> None:
        super().__init__()
        self.inner = inner
        for attr in ("embed_dim", "patch_size", "default_image_size", "global_roles", "supports_learnable_prompts",
                     "prompt_width", "preprocessing", "similarity", "temperature"):
            setattr(self, attr, getattr(inner, attr))

    def image_features(self, pixels: torch.Tensor, request: FeatureRequest) -> ImageFeatures:
        both = self.inner.encode_image(torch.cat([pixels, pixels.flip(-1)]))  # one forward pass for both
        b = pixels.shape[0]
        rows, cols = both.grid
        patches = both.patches.unflatten(1, (rows, cols))
        mirrored_back = patches[b:].flip(2)  # undo the mirror on the patch grid
        averaged = (patches[:b] + mirrored_back).flatten(1, 2)
        globals_ = {role: g[:b] + g[b:] for role, g in both.globals.items()}
        return ImageFeatures(globals_, averaged, both.grid)  # raw: the base class normalises

    def text_features(self, texts: Sequence[str], prefix: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner.encode_text(texts, prefix=prefix, normalize=False)

    def scale_similarities(self, cosine: torch.Tensor) -> torch.Tensor:
        return self.inner.scale_similarities(cosine)  # the inner model's temperature or sigmoid scale

    def check_image_size(self, size: int) -> None:
        self.inner.check_image_size(size)


class SpatialTopK(ImageHead):
    """p_a(g_s) + mean of the k largest patch p_a."""

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        self.k = k

    def forward(self, inputs: ScoreInputs) -> torch.Tensor:
        patch_abnormal = inputs.patch_probs[..., 1]  # (B, N)
        top = patch_abnormal.topk(min(self.k, patch_abnormal.shape[1]), dim=1).values
        return inputs.abnormal("spatial") + top.mean(dim=1)


def register_components(k: int = 10) -> str:
    """Register the backbone, the head and the recipe; return the recipe name."""
    # override=True: calling this again in the same session replaces the earlier registrations
    @zsad.register_backbone("flip_averaged", override=True)
    def create_flip_averaged(checkpoint: str | None = None, *, inner: str = "tips", **inner_options) -> Backbone:
        """Mirror-averaged features of another registered backbone (``inner``)."""
        return FlipAveraged(zsad.create_backbone(inner, checkpoint=checkpoint, **inner_options))

    @zsad.register_head("S2_topk", override=True)
    def s2_topk() -> ImageHead:
        """S2 + mean of the k strongest patch p_a."""
        return SpatialTopK(k)

    recipe = zsad.get_recipe("tipsomaly").with_overrides(
        name="tipsomaly_flip_topk",
        description="Tipsomaly with mirror-averaged TIPS features and the S2_topk image score (example).",
        backbone="flip_averaged",
        image_heads=["S2", "S5", "S2_topk"],
        image_score="S2_topk",
    )
    return zsad.register_recipe(recipe, override=True)


def check_components() -> None:
    """The contract checks a plugin's tests run (tiny random weights, no download)."""
    from zsad.testing import check_backbone, check_head, tiny_backbone

    check_backbone(lambda: FlipAveraged(tiny_backbone("tips")))
    check_head(SpatialTopK)
    print("zsad.testing: flip_averaged and S2_topk meet the contract")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--class-name", default="object")
    parser.add_argument("--k", type=int, default=10, help="patches averaged by S2_topk (default: 10)")
    parser.add_argument("--check", action="store_true", help="also run the zsad.testing contract checks")
    add_model_options(parser)
    args = parser.parse_args(argv)

    name = register_components(args.k)
    if args.check:
        check_components()
    det = zsad.Detector.from_recipe(name, device=args.device, dtype=args.dtype, **recipe_overrides(args))
    results = det.predict(list_images(args.inputs), class_name=args.class_name)
    print(f"{'S2':>8s} {'S5':>8s} {'S2_topk':>8s}  image")
    for r in results:
        print(f"{r.scores['S2']:8.4f} {r.scores['S5']:8.4f} {r.scores['S2_topk']:8.4f}  {r.image_path}")
    return results


if __name__ == "__main__":
    main()
