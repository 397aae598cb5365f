"""The training losses (they live in :mod:`zsad.heads.losses`, next to the heads that declare them).

Kept as an import path: ``from zsad.training.losses import SegmentationLoss`` works as before.

Example:
    >>> from zsad.training.losses import SegmentationLoss
    >>> SegmentationLoss().gamma
    2.0
"""

from zsad.heads.losses import LOSS_NAMES, SegmentationLoss, dice_loss, focal_loss, image_cross_entropy

__all__ = ["focal_loss", "dice_loss", "image_cross_entropy", "SegmentationLoss", "LOSS_NAMES"]
