"""Image-level scores of the Tipsomaly paper (Table 2c).

* ``S1`` = p_a(g_o, G_f): the object-centric global token (1st CLS);
* ``S2`` = p_a(g_s, G_f): the spatial global token (2nd CLS);
* ``S3`` = max(S1, S2), ``S4`` = mean(S1, S2);
* ``S5`` = S2 + max_j p_a(z_j, G_l): the spatial token plus the strongest local evidence over the
  low-resolution patch map (the Tipsomaly default; range [0, 2]).

For single-token backbones both roles are the same token, so S1 = S2 = S3 = S4.

Example:
    >>> import torch
    >>> from zsad.heads.base import ScoreInputs
    >>> x = ScoreInputs({"object": torch.tensor([[0.9, 0.1]]), "spatial": torch.tensor([[0.2, 0.8]])},
    ...                 torch.tensor([[[0.7, 0.3], [0.4, 0.6]]]), (1, 2))
    >>> [round(float(h(x)), 3) for h in (GlobalHead("object"), CombinedGlobalHead("max"), LocalEvidenceHead())]
    [0.1, 0.8, 1.4]
"""

from __future__ import annotations

from typing import Literal

import torch

from zsad.errors import ConfigError
from zsad.heads.base import ImageHead, ScoreInputs
from zsad.heads.losses import image_cross_entropy

__all__ = ["GlobalHead", "CombinedGlobalHead", "LocalEvidenceHead", "IMAGE_SCORES"]


class GlobalHead(ImageHead):
    """p_a of one global token (``role``) against the global prototypes (S1: object, S2: spatial).

    Args:
        role: the global token.
        loss: what prompt learning optimises for this score: ``None`` (nothing, Tipsomaly) or
            ``"cross_entropy"`` (the image loss of AnomalyCLIP: cross-entropy of ``[p_n, p_a]`` and the image
            label, reported as ``"image"``).
    """

    def __init__(self, role: str = "spatial", loss: Literal["cross_entropy"] | None = None) -> None:
        super().__init__()
        if loss not in (None, "cross_entropy"):
            raise ConfigError(f"The image loss must be null or 'cross_entropy', got {loss!r}.")
        self.role, self.loss_kind = role, loss

    def forward(self, inputs: ScoreInputs) -> torch.Tensor:
        return inputs.abnormal(self.role)

    def loss(self, inputs: ScoreInputs, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.loss_kind is None:
            return {}
        image = image_cross_entropy(inputs.global_probs[self.role], labels)
        return {"image": image, "total": image}


class CombinedGlobalHead(ImageHead):
    """Max (S3) or mean (S4) of p_a over the object and spatial tokens."""

    def __init__(self, reduce: Literal["max", "mean"] = "max") -> None:
        super().__init__()
        if reduce not in ("max", "mean"):
            raise ConfigError(f"reduce must be 'max' or 'mean', got {reduce!r}.")
        self.reduce = reduce

    def forward(self, inputs: ScoreInputs) -> torch.Tensor:
        both = torch.stack([inputs.abnormal("object"), inputs.abnormal("spatial")])
        return both.max(dim=0).values if self.reduce == "max" else both.mean(dim=0)


class LocalEvidenceHead(ImageHead):
    """p_a of a global token plus the maximum patch p_a (S5 with ``role="spatial"``)."""

    def __init__(self, role: str = "spatial") -> None:
        super().__init__()
        self.role = role

    def forward(self, inputs: ScoreInputs) -> torch.Tensor:
        return inputs.abnormal(self.role) + inputs.max_patch_abnormal()


def s1() -> ImageHead:
    """S1 = p_a(g_o, G_f): the object-centric global token (1st CLS)."""
    return GlobalHead("object")


def s2() -> ImageHead:
    """S2 = p_a(g_s, G_f): the spatial global token (2nd CLS)."""
    return GlobalHead("spatial")


def s3() -> ImageHead:
    """S3 = max(S1, S2)."""
    return CombinedGlobalHead("max")


def s4() -> ImageHead:
    """S4 = mean(S1, S2)."""
    return CombinedGlobalHead("mean")


def s5() -> ImageHead:
    """S5 = S2 + max patch p_a: strongest local evidence (Tipsomaly default, range [0, 2])."""
    return LocalEvidenceHead("spatial")


#: the paper's names -> factories
IMAGE_SCORES = {"S1": s1, "S2": s2, "S3": s3, "S4": s4, "S5": s5}
