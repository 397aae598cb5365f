"""A tiny backbone written from scratch against the zsad contract (no weights, no download).

It implements the two methods of the contract, :meth:`image_features` and :meth:`text_features`, returning raw
features; the base class checks inputs and normalises. Patch features are a fixed random projection of each patch's mean colour; the global token is the projection of
the image's mean colour; a text is the mean of fixed random byte embeddings, plus a projection of the mean of the
learnable prompt tokens when a prefix is given. Meaningless as a detector, complete as a contract example.

Example:
    >>> import torch
    >>> bb = create_mean_color()
    >>> f = bb.encode_image(torch.rand(2, 3, 56, 56))
    >>> f.patches.shape, f.grid, bb.encode_text(["a photo"]).shape
    (torch.Size([2, 16, 16]), (4, 4), torch.Size([1, 16]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from zsad.backbones.base import Backbone, FeatureRequest, ImageFeatures, Preprocessing
from zsad.errors import ConfigError

__all__ = ["MeanColorBackbone", "create_mean_color"]


class MeanColorBackbone(Backbone):
    """Mean-colour features in a random joint space (see the module docstring)."""

    supports_learnable_prompts = True
    similarity = "softmax"
    preprocessing = Preprocessing()  # pixels in [0, 1]

    def __init__(self, embed_dim: int = 16, patch_size: int = 14, image_size: int = 56, seed: int = 0) -> None:
        super().__init__()
        if embed_dim < 2 or patch_size < 1 or image_size % patch_size:
            raise ConfigError(
                f"MeanColorBackbone needs embed_dim >= 2 and image_size a multiple of patch_size, got "
                f"embed_dim={embed_dim}, patch_size={patch_size}, image_size={image_size}."
            )
        self.embed_dim, self.patch_size, self.default_image_size = embed_dim, patch_size, image_size
        self.prompt_width = embed_dim
        self.temperature = 0.07
        gen = torch.Generator().manual_seed(seed)
        # buffers (not parameters): they move with .to(device / dtype) and are never trained
        self.register_buffer("color_proj", torch.randn(3, embed_dim, generator=gen))
        self.register_buffer("color_bias", torch.randn(embed_dim, generator=gen))
        self.register_buffer("byte_table", torch.randn(256, embed_dim, generator=gen))
        self.register_buffer("prompt_proj", torch.randn(embed_dim, embed_dim, generator=gen) / embed_dim**0.5)

    def image_features(self, pixels: torch.Tensor, request: FeatureRequest) -> ImageFeatures:
        colors = F.avg_pool2d(pixels.to(self.color_proj.dtype), self.patch_size)  # (B, 3, rows, cols)
        grid = (colors.shape[-2], colors.shape[-1])
        colors = colors.flatten(2).transpose(1, 2)  # (B, N, 3)
        patches = colors @ self.color_proj + self.color_bias
        pooled = colors.mean(dim=1) @ self.color_proj + self.color_bias
        return ImageFeatures({"object": pooled, "spatial": pooled}, patches, grid)

    def text_features(self, texts: Sequence[str], prefix: torch.Tensor | None = None) -> torch.Tensor:
        rows = []
        for text in texts:
            ids = torch.tensor(list(text.lower().encode()) or [0], device=self.byte_table.device)
            rows.append(self.byte_table[ids].mean(dim=0))
        out = torch.stack(rows)
        if prefix is not None:  # the base class has checked its shape against prompt_width
            out = out + prefix.to(out.dtype).mean(dim=0) @ self.prompt_proj
        return out


def create_mean_color(
    checkpoint: str | None = None, *, embed_dim: int = 16, image_size: int = 56, seed: int = 0
) -> MeanColorBackbone:
    """A mean-colour backbone (``example_mean_color``); it has no weights, so ``checkpoint`` must be None.

    Example:
        >>> create_mean_color(embed_dim=8).embed_dim
        8
    """
    if checkpoint is not None:
        raise ConfigError(f"The example_mean_color backbone has no weights; set backbone.checkpoint to null, not {checkpoint!r}.")
    return MeanColorBackbone(embed_dim=embed_dim, image_size=image_size, seed=seed)


#: options zsad.testing uses to build this backbone small (it is small already)
create_mean_color.zsad_tiny_options = {}
