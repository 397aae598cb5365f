"""Plugin objects that import fine but break the zsad contract (on purpose)."""

from __future__ import annotations

import torch

from zsad.backbones.base import Backbone, ImageFeatures

#: registered as a backbone although it is not a factory
NOT_A_FACTORY = "a string is not a backbone factory"


def create_not_a_backbone(checkpoint=None, **options):
    """Returns a plain object instead of a zsad Backbone."""
    return object()


class UnnormalisedBackbone(Backbone):
    """Overrides ``encode_image`` to skip the base class's normalisation: features of norm 3."""

    embed_dim, patch_size, default_image_size = 4, 14, 28

    def image_features(self, pixels, request):
        b = pixels.shape[0]
        g = torch.full((b, 4), 1.5)
        return ImageFeatures({"object": g, "spatial": g}, torch.full((b, 4, 4), 1.5), (2, 2))

    def encode_image(self, pixels, request=None):  # breaks the promise the base class keeps
        return self.image_features(pixels, request)

    def text_features(self, texts, prefix=None):
        return torch.full((len(texts), 4), 1.5)


def create_unnormalised(checkpoint=None, **options):
    """A backbone that breaks the normalisation promise."""
    return UnnormalisedBackbone()
