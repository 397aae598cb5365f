"""The backbone contract every vision-language backbone implements.

A backbone turns a batch of preprocessed images into **global tokens by role** and **patch tokens** on a grid,
all in the joint image-text space, and encodes texts (optionally with learnable prefix embeddings injected the way
its text tower needs). It declares its preprocessing and its similarity. Everything above the backbone (prompts,
heads, training, evaluation) only talks to this contract.

Roles: TIPS has two global tokens, ``"object"`` (1st CLS, g_o) and ``"spatial"`` (2nd CLS, g_s). Single-token
backbones (CLIP, SigLIP2) return the same tensor under both roles.

Example (a toy backbone that satisfies the contract; :mod:`zsad.testing` checks real ones):
    >>> import torch
    >>> class Toy(Backbone):
    ...     embed_dim, patch_size, default_image_size = 4, 14, 28
    ...     def encode_image(self, pixels):
    ...         b = pixels.shape[0]
    ...         g = torch.nn.functional.normalize(torch.ones(b, 4), dim=-1)
    ...         p = torch.nn.functional.normalize(torch.ones(b, 4, 4), dim=-1)
    ...         return ImageFeatures({"object": g, "spatial": g}, p, (2, 2))
    ...     def encode_text(self, texts, prefix=None):
    ...         return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=-1)
    >>> feats = Toy().encode_image(torch.zeros(1, 3, 28, 28))
    >>> feats.patches.shape, feats.grid
    (torch.Size([1, 4, 4]), (2, 2))
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import torch
from torch import nn

from zsad.errors import ConfigError

__all__ = ["Backbone", "ImageFeatures", "Preprocessing", "GLOBAL_ROLES", "l2_normalize", "check_patch_multiple"]

GLOBAL_ROLES = ("object", "spatial")


def l2_normalize(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Cast to fp32 and divide by ``max(||x||, eps)`` along the last axis (the official TIPS normalisation)."""
    return torch.nn.functional.normalize(x.float(), dim=-1, eps=eps)


def check_patch_multiple(size: int, patch_size: int, owner: str) -> None:
    """Raise :class:`~zsad.errors.ConfigError` unless ``size`` is a positive multiple of ``patch_size``.

    Example:
        >>> check_patch_multiple(518, 14, "backbone TipsBackbone")
        >>> try:
        ...     check_patch_multiple(500, 14, "checkpoint tips-v1-l14-hr")
        ... except ConfigError as e:
        ...     print(str(e).split(";")[0])
        image_size=500 is not a multiple of the patch size 14 of checkpoint tips-v1-l14-hr
    """
    if size <= 0 or size % patch_size:
        lower = max(patch_size, size // patch_size * patch_size)
        raise ConfigError(
            f"image_size={size} is not a multiple of the patch size {patch_size} of {owner}; use e.g. {lower} or "
            f"{lower + patch_size} (--set image_size={lower + patch_size}, or "
            f"Detector.from_recipe(..., image_size={lower + patch_size}))."
        )


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its pixels: square resize, then ``(x/255 - mean) / std``.

    ``resample`` names the PIL filter of the square resize ("bilinear" for TIPS, "bicubic" for CLIP/SigLIP).
    """

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resample: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


@dataclass
class ImageFeatures:
    """Backbone image outputs: fp32, L2-normalised, in the joint space.

    Attributes:
        globals: role -> ``(B, D)`` global embeddings (roles ``"object"`` and ``"spatial"``).
        patches: ``(B, N, D)`` patch embeddings, row-major over ``grid``.
        grid: ``(rows, cols)`` of the patch grid, ``rows * cols == N``.
    """

    globals: dict[str, torch.Tensor]
    patches: torch.Tensor
    grid: tuple[int, int]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Backbone(nn.Module, abc.ABC):
    """Abstract base class of vision-language backbones (see the module docstring for the contract).

    Subclasses set the class attributes and implement :meth:`encode_image` and :meth:`encode_text`; they may
    override :meth:`probabilities` (default: softmax over cosine / temperature) and :meth:`check_image_size`.
    """

    embed_dim: int = 0
    patch_size: int = 14
    default_image_size: int = 224
    global_roles: ClassVar[tuple[str, ...]] = GLOBAL_ROLES
    #: whether :meth:`encode_text` accepts ``prefix`` (learnable prompt tokens)
    supports_learnable_prompts: bool = False
    #: width of the learnable prompt tokens this text tower takes (token-embedding width)
    prompt_width: int = 0
    preprocessing: Preprocessing = Preprocessing()
    #: similarity of images and texts: "softmax" (over [normal, abnormal]) or "sigmoid" (each independently)
    similarity: Literal["softmax", "sigmoid"] = "softmax"

    @abc.abstractmethod
    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        """Encode preprocessed pixels ``(B, 3, H, W)`` into :class:`ImageFeatures`."""

    @abc.abstractmethod
    def encode_text(self, texts: Sequence[str], prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Encode texts into ``(T, D)`` fp32 L2-normalised embeddings.

        ``prefix`` (``(P, prompt_width)``) are learnable prompt embeddings injected into every text, in the way
        this text tower needs; gradients must flow back to it.
        """

    def logits(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Similarity logits of ``(..., D)`` features against ``(..., K, D)`` prototypes, shape ``(..., K)``."""
        temperature = getattr(self, "temperature", None)
        sims = features.float() @ prototypes.float().transpose(-1, -2)
        return sims / temperature if temperature is not None else sims

    def probabilities(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``[normal, abnormal]`` probabilities of features ``(B, N, D)`` against prototypes ``(B|1, 2, D)``."""
        logits = self.logits(features, prototypes)
        if self.similarity == "sigmoid":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=-1)

    def check_image_size(self, size: int) -> None:
        """Raise :class:`~zsad.errors.ConfigError` if this backbone cannot take square inputs of ``size``."""
        check_patch_multiple(size, self.patch_size, f"backbone {type(self).__name__}")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")
