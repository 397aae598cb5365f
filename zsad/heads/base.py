"""The scoring-head contract.

Heads see the backbone's ``[normal, abnormal]`` probabilities, never the backbone itself:

* :class:`ScoreInputs` holds the global probabilities per role (``(B, 2)``) and the low-resolution patch map
  (``(B, N, 2)``) on its grid;
* an :class:`ImageHead` maps them to one score per image (``(B,)``, higher = more anomalous);
* a :class:`PixelHead` maps the patch map to a ``(B, H, W)`` anomaly map at the model input size.

Example:
    >>> import torch
    >>> x = ScoreInputs({"object": torch.tensor([[0.9, 0.1]]), "spatial": torch.tensor([[0.2, 0.8]])},
    ...                 torch.tensor([[[0.5, 0.5]] * 4]), (2, 2))
    >>> x.abnormal("spatial")
    tensor([0.8000])
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ScoreInputs", "ImageHead", "PixelHead"]


@dataclass
class ScoreInputs:
    """Probabilities a head scores from; channel 0 = normal, 1 = abnormal."""

    global_probs: dict[str, torch.Tensor]
    patch_probs: torch.Tensor
    grid: tuple[int, int]

    def abnormal(self, role: str) -> torch.Tensor:
        """``p_a`` of the global token with *role*, ``(B,)``."""
        return self.global_probs[role][:, 1]

    def max_patch_abnormal(self) -> torch.Tensor:
        """Strongest local evidence ``max_j p_a(z_j)`` over the low-resolution patch map, ``(B,)``."""
        return self.patch_probs.max(dim=1).values[:, 1]


class ImageHead(nn.Module, abc.ABC):
    """Maps :class:`ScoreInputs` to ``(B,)`` image scores (higher = more anomalous)."""

    @abc.abstractmethod
    def forward(self, inputs: ScoreInputs) -> torch.Tensor: ...


class PixelHead(nn.Module, abc.ABC):
    """Maps the ``(B, N, 2)`` patch probabilities on ``grid`` to ``(B, H, W)`` maps of ``size``."""

    @abc.abstractmethod
    def forward(self, patch_probs: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor: ...
