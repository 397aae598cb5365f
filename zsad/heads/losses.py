"""Training losses of prompt learning, computed on probabilities; heads declare which they are trained with.

A pixel head's :meth:`~zsad.heads.base.PixelHead.loss` and an image head's :meth:`~zsad.heads.base.ImageHead.loss`
use these; :class:`~zsad.training.PromptTrainer` sums what the recipe's heads declare.

The localisation loss is exactly the official ``cls_seg_los='seg'`` loss (``train.py`` and ``utils/loss.py`` of
AlirezaSalehy/Tipsomaly, inherited from AnomalyCLIP's ``train.py``), computed on the **probabilities** of the
bilinearly upsampled, unsmoothed 2-channel map at the model input size:

* :func:`focal_loss` — ``FocalLoss(gamma=2, alpha=None, smooth=1e-5)``: the one-hot target is clamped to
  ``[smooth / (K - 1), 1 - smooth]``, ``pt = sum_c onehot_c * p_c + smooth`` and the loss is
  ``mean(-(1 - pt)^gamma * log(pt))`` over every pixel of the batch;
* :func:`dice_loss` — ``BinaryDiceLoss``: per image ``(2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)``
  with ``smooth = 1``, and ``1 - mean over images``.

* :func:`image_cross_entropy` — AnomalyCLIP's image loss: ``cross_entropy(cos / T, label)`` from the
  ``[normal, abnormal]`` probabilities of the global token (``-log p_label``, mean over the batch).

One deliberate difference: the official code squeezes the mask batch, so a batch of a single image computes the
dice per image *row*; here the dice is always per image.

Example:
    >>> import torch
    >>> probs = torch.softmax(torch.randn(2, 2, 8, 8), dim=1)
    >>> mask = torch.zeros(2, 8, 8); mask[0, 2:5, 2:5] = 1
    >>> out = SegmentationLoss()(probs, mask)
    >>> sorted(out), bool(torch.isclose(out["total"], out["focal"] + out["dice_pos"] + out["dice_neg"]))
    (['dice_neg', 'dice_pos', 'focal', 'total'], True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from zsad.errors import ConfigError

__all__ = ["focal_loss", "dice_loss", "image_cross_entropy", "SegmentationLoss", "LOSS_NAMES"]

#: the components :class:`SegmentationLoss` returns, in logging order
LOSS_NAMES = ("focal", "dice_pos", "dice_neg", "total")


def focal_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: Sequence[float] | None = None,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Focal loss on class probabilities, as the official ``FocalLoss`` (see the module docstring).

    Args:
        probs: ``(B, K, ...)`` probabilities (already softmaxed; K >= 2 classes on axis 1).
        target: ``(B, ...)`` class indices (0 = normal, 1 = abnormal), any numeric dtype.
        gamma: focusing exponent.
        alpha: optional per-class weights (``None`` = all ones, the official default).
        smooth: label smoothing of the clamped one-hot target and the ``pt`` offset.

    Example:
        >>> import torch
        >>> p = torch.tensor([[[0.9]], [[0.1]]]).unsqueeze(0)  # (1, 2, 1, 1): 90% normal
        >>> round(float(focal_loss(p, torch.zeros(1, 1, 1))), 6)
        0.001054
    """
    k = probs.shape[1]
    if k < 2:
        raise ConfigError(f"focal_loss needs at least 2 classes on axis 1, got probabilities of shape {tuple(probs.shape)}.")
    if target.shape != probs.shape[:1] + probs.shape[2:]:
        raise ConfigError(f"focal_loss: target shape {tuple(target.shape)} does not match probabilities {tuple(probs.shape)}.")
    idx = target.long()
    one_hot = torch.nn.functional.one_hot(idx, k).movedim(-1, 1).to(probs.dtype)
    if smooth:
        one_hot = one_hot.clamp(smooth / (k - 1), 1.0 - smooth)
    pt = (one_hot * probs).sum(1) + smooth
    loss = -torch.pow(1 - pt, gamma) * pt.log()
    if alpha is not None:
        weights = torch.as_tensor(alpha, dtype=probs.dtype, device=probs.device)
        if weights.numel() != k:
            raise ConfigError(f"focal alpha has {weights.numel()} weights for {k} classes.")
        loss = loss * weights[idx]
    return loss.mean()


def dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - mean over images of (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)`` (official BinaryDiceLoss).

    Args:
        pred: ``(B, ...)`` probabilities of the positive class.
        target: ``(B, ...)`` 0/1 targets.
        smooth: additive smoothing (1 in the official code).

    Example:
        >>> import torch
        >>> y = torch.tensor([[1.0, 0.0]])
        >>> float(dice_loss(y, y)), round(float(dice_loss(1 - y, y)), 4)
        (0.0, 0.6667)
    """
    n = pred.shape[0]
    p = pred.reshape(n, -1)
    y = target.reshape(n, -1).to(p.dtype)
    dice = (2 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)
    return 1 - dice.sum() / n


def image_cross_entropy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``mean_b(-log probs[b, label_b])``: the cross-entropy of ``(B, K)`` softmax probabilities and class labels.

    Equal to ``torch.nn.functional.cross_entropy(logits, labels)`` for ``probs = softmax(logits)``.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[0.2, 1.5], [2.0, -1.0]])
        >>> labels = torch.tensor([1, 0])
        >>> a = image_cross_entropy(logits.softmax(-1), labels)
        >>> bool(torch.isclose(a, torch.nn.functional.cross_entropy(logits, labels)))
        True
    """
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ConfigError(
            f"image_cross_entropy expects (B, K) probabilities and (B,) labels, got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}."
        )
    picked = probs.gather(1, labels.long().to(probs.device).unsqueeze(1)).squeeze(1)
    return -picked.log().mean()


@dataclass(frozen=True)
class SegmentationLoss:
    """``focal(probs, mask) + dice(p_a, mask) + dice(p_n, 1 - mask)`` — the official ``seg`` loss.

    Args:
        gamma: focal exponent (2).
        alpha: focal class weights (``None``: none, as official).
        focal_smooth: focal label smoothing (1e-5).
        dice_smooth: dice smoothing (1).

    Calling it with ``(probs (B, 2, H, W), mask (B, H, W))`` returns a dict of scalar tensors ``focal``,
    ``dice_pos``, ``dice_neg`` and ``total``; channel 0 is normal, channel 1 abnormal.

    Example:
        >>> import torch
        >>> perfect = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)], dim=1)  # all normal, sure
        >>> round(float(SegmentationLoss()(perfect, torch.zeros(1, 4, 4))["total"]), 4)
        0.0
    """

    gamma: float = 2.0
    alpha: tuple[float, ...] | None = None
    focal_smooth: float = 1e-5
    dice_smooth: float = 1.0

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ConfigError(f"focal gamma must be >= 0, got {self.gamma}.")
        if not 0 <= self.focal_smooth < 0.5:
            raise ConfigError(f"focal_smooth must be in [0, 0.5), got {self.focal_smooth}.")
        if self.dice_smooth < 0:
            raise ConfigError(f"dice_smooth must be >= 0, got {self.dice_smooth}.")
        if self.alpha is not None:
            object.__setattr__(self, "alpha", tuple(float(a) for a in self.alpha))

    def __call__(self, probs: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if probs.ndim != 4 or probs.shape[1] != 2:
            raise ConfigError(f"SegmentationLoss expects (B, 2, H, W) probabilities, got {tuple(probs.shape)}.")
        if mask.shape != probs.shape[:1] + probs.shape[2:]:
            raise ConfigError(
                f"SegmentationLoss: masks of shape {tuple(mask.shape)} do not match the maps {tuple(probs.shape)}."
            )
        mask = mask.to(probs.dtype)
        focal = focal_loss(probs, mask, self.gamma, self.alpha, self.focal_smooth)
        dice_pos = dice_loss(probs[:, 1], mask, self.dice_smooth)
        dice_neg = dice_loss(probs[:, 0], 1 - mask, self.dice_smooth)
        return {"focal": focal, "dice_pos": dice_pos, "dice_neg": dice_neg, "total": focal + dice_pos + dice_neg}

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (recorded with every training run)."""
        return asdict(self)
