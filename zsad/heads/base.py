"""The scoring-head contract.

Heads see the backbone's ``[normal, abnormal]`` probabilities, never the backbone itself:

* :class:`ScoreInputs` holds the global probabilities per role (``(B, 2)``), the low-resolution patch map
  (``(B, N, 2)``) on its grid, and, when a head asked for them, the probabilities of window embeddings per scale
  and of the patch tokens of chosen layers;
* an :class:`ImageHead` maps them to one score per image (``(B,)``, higher = more anomalous);
* a :class:`PixelHead` maps them to a ``(B, H, W)`` anomaly map at the model input size, and renders any grid-level
  map (e.g. the evidence of normal references) the way it renders its own (:meth:`PixelHead.render`);
* a head that needs more than global and patch tokens declares it in ``feature_request`` (a
  :class:`~zsad.backbones.base.FeatureRequest`); the scorer asks the backbone for the union of all requests.

The third head-side component, the memory of normal references, is in :mod:`zsad.heads.memory`.

Example:
    >>> import torch
    >>> x = ScoreInputs({"object": torch.tensor([[0.9, 0.1]]), "spatial": torch.tensor([[0.2, 0.8]])},
    ...                 torch.tensor([[[0.5, 0.5]] * 4]), (2, 2))
    >>> x.abnormal("spatial")
    tensor([0.8000])
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zsad.backbones.base import FeatureRequest

__all__ = ["ScoreInputs", "ImageHead", "PixelHead", "upsample_grid_map"]


@dataclass
class ScoreInputs:
    """Probabilities a head scores from; channel 0 = normal, 1 = abnormal.

    Attributes:
        global_probs: role -> ``(B, 2)`` probabilities of the global tokens against the global prototypes.
        patch_probs: ``(B, N, 2)`` probabilities of the patch tokens against the local prototypes.
        grid: ``(rows, cols)`` of the patch grid.
        window_probs: scale -> ``(B, W, 2)`` probabilities of window embeddings (local prototypes), windows in
            :func:`~zsad.backbones.base.sliding_windows` order; only the requested scales.
        layer_probs: block -> ``(B, N, 2)`` probabilities of that block's patch tokens; only requested layers.
    """

    global_probs: dict[str, torch.Tensor]
    patch_probs: torch.Tensor
    grid: tuple[int, int]
    window_probs: dict[int, torch.Tensor] = field(default_factory=dict)
    layer_probs: dict[int, torch.Tensor] = field(default_factory=dict)

    def abnormal(self, role: str) -> torch.Tensor:
        """``p_a`` of the global token with *role*, ``(B,)``."""
        return self.global_probs[role][:, 1]

    def max_patch_abnormal(self) -> torch.Tensor:
        """Strongest local evidence ``max_j p_a(z_j)`` over the low-resolution patch map, ``(B,)``."""
        return self.patch_probs.max(dim=1).values[:, 1]


def upsample_grid_map(grid_map: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``(B, N)`` row-major grid map -> ``(B, H, W)`` bilinear (``align_corners=False``, no antialias)."""
    maps = grid_map.float().reshape(grid_map.shape[0], 1, grid[0], grid[1])
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class ImageHead(nn.Module, abc.ABC):
    """Maps :class:`ScoreInputs` to ``(B,)`` image scores (higher = more anomalous)."""

    #: features this head needs beyond the global and patch tokens
    feature_request: FeatureRequest = FeatureRequest()

    @abc.abstractmethod
    def forward(self, inputs: ScoreInputs) -> torch.Tensor: ...


class PixelHead(nn.Module, abc.ABC):
    """Maps :class:`ScoreInputs` to ``(B, H, W)`` anomaly maps of ``size`` (the model input size).

    Subclasses implement :meth:`forward`; they may override :meth:`render` (default: bilinear upsampling), which
    the scorer uses to bring grid-level maps (the evidence of normal references) to the same size and look.
    A head that needs windows or layers sets ``feature_request`` (an instance attribute when it depends on
    the head's options).
    """

    feature_request: FeatureRequest = FeatureRequest()

    @abc.abstractmethod
    def forward(self, inputs: ScoreInputs, size: tuple[int, int]) -> torch.Tensor: ...

    def render(self, grid_map: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """A ``(B, N)`` grid-level map as a ``(B, H, W)`` map of ``size``, post-processed like this head's maps."""
        return upsample_grid_map(grid_map, grid, size)
