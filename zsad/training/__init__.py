"""Prompt learning: train a detector's learnable prompt tokens with its backbone frozen (Tipsomaly §4).

* :class:`PromptTrainer` — one optimiser step at a time (``trainer.step(images, masks)``), for custom loops;
* :func:`train_prompts` — a whole run over a dataset with masks (what ``zsad train`` calls): features computed
  once per image (optionally cached on disk), a checkpoint every epoch, resume, a prompt checkpoint and a JSON
  record as output;
* :class:`SegmentationLoss`, :func:`focal_loss`, :func:`dice_loss` — the official localisation loss (the heads
  decide which maps it applies to and add their own losses, e.g. AnomalyCLIP's image cross-entropy).

Works for any backbone whose text tower accepts learnable prompts (``Backbone.supports_learnable_prompts``), for
the tokens any prompt strategy declares (Tipsomaly's ``T_n``/``T_a``, AnomalyCLIP's contexts and deep prompts).

Example:
    >>> from zsad import Detector
    >>> from zsad.training import PromptTrainer
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=28,
    ...                            backbone_options={"random_config": "tiny"}, device="cpu")
    >>> import torch
    >>> losses = PromptTrainer(det).step(torch.rand(2, 3, 28, 28), torch.zeros(2, 28, 28))
    >>> round(losses["focal"] + losses["dice_pos"] + losses["dice_neg"] - losses["total"], 5)
    0.0
"""

from __future__ import annotations

from zsad.training.losses import LOSS_NAMES, SegmentationLoss, dice_loss, focal_loss
from zsad.training.run import TrainResult, find_latest_checkpoint, train_prompts
from zsad.training.trainer import PromptTrainer, learnable_prompts_of, mask_labels, prepare_masks

__all__ = [
    "PromptTrainer",
    "train_prompts",
    "TrainResult",
    "find_latest_checkpoint",
    "SegmentationLoss",
    "focal_loss",
    "dice_loss",
    "LOSS_NAMES",
    "learnable_prompts_of",
    "prepare_masks",
    "mask_labels",
]
