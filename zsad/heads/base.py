"""The scoring-head contract.

Heads see the backbone's ``[normal, abnormal]`` probabilities, never the backbone itself:

* :class:`ScoreInputs` holds the global probabilities per role (``(B, 2)``), the low-resolution patch map
  (``(B, N, 2)``) on its grid, and, when a head asked for them, the probabilities of window embeddings per scale
  and of the patch tokens of chosen layers;
* an :class:`ImageHead` maps them to one score per image (``(B,)``, higher = more anomalous);
* a :class:`PixelHead` maps them to a ``(B, H, W)`` anomaly map at the model input size, and renders any grid-level
  map (e.g. the evidence of normal references) the way it renders its own (:meth:`PixelHead.render`);
* a head that needs more than global and patch tokens declares it in ``feature_request`` (a
  :class:`~zsad.backbones.base.FeatureRequest`); the scorer asks the backbone for the union of all requests;
* heads also declare what prompt learning optimises (:meth:`PixelHead.loss`, :meth:`ImageHead.loss`, from the
  same :class:`ScoreInputs` computed with gradients to the prompt tokens): by default the pixel head's is the
  localisation loss on the upsampled patch map (Tipsomaly) and image heads add none.
  :class:`~zsad.training.PromptTrainer` sums the losses of the recipe's heads, so a method's training objective
  comes with its heads, never from a branch in the trainer.

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
from zsad.heads.losses import SegmentationLoss

__all__ = ["ScoreInputs", "ImageHead", "PixelHead", "upsample_grid_map", "upsample_patch_probs"]


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


def upsample_patch_probs(patch_probs: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``(B, N, 2)`` patch probabilities -> ``(B, 2, H, W)`` bilinear (align_corners=False) maps."""
    b, n, k = patch_probs.shape
    if grid[0] * grid[1] != n:
        raise ValueError(f"patch grid {grid} does not hold {n} patches")
    maps = patch_probs.float().permute(0, 2, 1).reshape(b, k, grid[0], grid[1])
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


class ImageHead(nn.Module, abc.ABC):
    """Maps :class:`ScoreInputs` to ``(B,)`` image scores (higher = more anomalous)."""

    #: features this head needs beyond the global and patch tokens
    feature_request: FeatureRequest = FeatureRequest()

    @abc.abstractmethod
    def forward(self, inputs: ScoreInputs) -> torch.Tensor: ...

    def loss(self, inputs: ScoreInputs, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """What prompt learning adds for this head: named scalar losses and their weighted sum ``"total"``.

        ``labels`` are ``(B,)`` image labels (1 = anomalous). Default: ``{}`` (the head is not trained).
        """
        return {}


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

    def loss(
        self, inputs: ScoreInputs, masks: torch.Tensor, criterion: SegmentationLoss
    ) -> dict[str, torch.Tensor]:
        """The localisation loss prompt learning minimises for this head's maps.

        Args:
            inputs: probabilities computed with gradients to the prompt tokens.
            masks: ``(B, H, W)`` 0/1 ground truth at the model input size.
            criterion: the loss settings (focal gamma, smoothing) chosen by the trainer.

        Returns:
            named scalar tensors and ``"total"``, their weighted sum. Default: ``criterion`` on the unsmoothed,
            bilinearly upsampled patch map (``focal``, ``dice_pos``, ``dice_neg``; Tipsomaly).
        """
        return criterion(upsample_patch_probs(inputs.patch_probs, inputs.grid, tuple(masks.shape[-2:])), masks)
