"""AnomalyCLIP's heads (Zhou et al., ICLR 2024), as the official ``test.py`` / ``train.py`` compute them.

* ``anomalyclip`` (image head): ``softmax(cos(global, [t_normal, t_abnormal]) / 0.07)[abnormal]`` of the global
  token (the scorer applies the recipe's fixed temperature 0.07); trained with the cross-entropy of the image
  label (``"image"``).
* the pixel map is the generic ``pixel_map`` head with ``layers`` (the official ``--features_list``): per layer
  ``(p_abnormal + 1 - p_normal) / 2`` upsampled bilinearly to the input size, summed over the layers, Gaussian
  sigma 4; trained with ``loss_weight`` 4 (the official ``lam``) times the focal + two dice losses summed over
  the layers (:class:`~zsad.heads.pixel.PixelMapHead`).

The prompt-learning objective is therefore ``4 * sum_layers(focal + dice_pos + dice_neg) + image``, exactly the
official ``loss + image_loss``.

Example:
    >>> import torch
    >>> from zsad.heads.base import ScoreInputs
    >>> head = anomalyclip_image()
    >>> x = ScoreInputs({"object": torch.tensor([[0.25, 0.75]])}, torch.zeros(1, 1, 2), (1, 1))
    >>> float(head(x)), round(float(head.loss(x, torch.tensor([1]))["image"]), 4)
    (0.75, 0.2877)
"""

from __future__ import annotations

from zsad.heads.image import GlobalHead

__all__ = ["anomalyclip_image"]


def anomalyclip_image() -> GlobalHead:
    """AnomalyCLIP's image score: p_a of the global token, trained with the image cross-entropy."""
    return GlobalHead("object", loss="cross_entropy")
