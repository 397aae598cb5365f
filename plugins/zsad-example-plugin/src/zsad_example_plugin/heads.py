"""Two image-score heads, registered as ``max_patch`` and ``S2_plus_mean``.

Example:
    >>> import torch
    >>> from zsad.heads.base import ScoreInputs
    >>> x = ScoreInputs({"object": torch.tensor([[0.9, 0.1]]), "spatial": torch.tensor([[0.2, 0.8]])},
    ...                 torch.tensor([[[0.7, 0.3], [0.4, 0.6]]]), (1, 2))
    >>> [round(float(h(x)), 3) for h in (max_patch(), s2_plus_mean())]
    [0.6, 1.25]
"""

from __future__ import annotations

import torch

from zsad.heads.base import ImageHead, ScoreInputs

__all__ = ["MaxPatchHead", "SpatialPlusMeanPatchHead", "max_patch", "s2_plus_mean"]


class MaxPatchHead(ImageHead):
    """The strongest local evidence alone: ``max_j p_a(z_j)``."""

    def forward(self, inputs: ScoreInputs) -> torch.Tensor:
        return inputs.max_patch_abnormal()


class SpatialPlusMeanPatchHead(ImageHead):
    """``p_a(g_s) + mean_j p_a(z_j)``: the spatial token plus the average local evidence."""

    def forward(self, inputs: ScoreInputs) -> torch.Tensor:
        return inputs.abnormal("spatial") + inputs.patch_probs[..., 1].mean(dim=1)


def max_patch() -> ImageHead:
    """max_j p_a(z_j): the strongest patch evidence alone."""
    return MaxPatchHead()


def s2_plus_mean() -> ImageHead:
    """S2 + mean patch p_a: the spatial token plus the average local evidence."""
    return SpatialPlusMeanPatchHead()
