"""One optimiser step at a time: :class:`PromptTrainer` learns a detector's prompt tokens with its backbone frozen.

Per step (the official ``train.py`` loop, §4.2 of the Tipsomaly spec):

1. the text tower encodes the whole learned prompt ensemble once (with gradients to the tokens T^n / T^a),
   giving the local prototypes ``G_l`` ``(1, 2, D)``;
2. the frozen image features (computed under no-grad, or taken from a feature cache) are scored against
   ``G_l``: ``softmax(cos / temperature)`` per patch;
3. the ``(B, N, 2)`` patch probabilities are upsampled bilinearly (``align_corners=False``, **no smoothing**) to the
   model input size, and :class:`~zsad.training.losses.SegmentationLoss` compares them with the masks;
4. ``zero_grad``, ``backward``, ``Adam.step``.

Only the prompt tokens are optimised; nothing else of the detector changes. The detector's prototype cache sees
the new tokens automatically (it is keyed on parameter versions), so ``detector.predict`` uses them right away.

Example (a tiny random TIPS model):
    >>> import numpy as np
    >>> from zsad import Detector
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=56,
    ...                            backbone_options={"random_config": "tiny"}, device="cpu")
    >>> trainer = PromptTrainer(det, lr=1e-3, betas=(0.5, 0.999))
    >>> mask = np.zeros((40, 60), np.uint8); mask[10:20, 10:30] = 1
    >>> losses = trainer.step([np.zeros((40, 60, 3), np.uint8)], [mask])
    >>> sorted(losses), type(losses["total"]).__name__
    (['dice_neg', 'dice_pos', 'focal', 'total'], 'float')
    >>> [tuple(t.shape) for t in trainer.prompt_tokens()]
    [(8, 32), (8, 32)]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from zsad.errors import ConfigError, DatasetError
from zsad.heads.pixel import upsample_patch_probs
from zsad.training.losses import LOSS_NAMES, SegmentationLoss

__all__ = ["PromptTrainer", "learnable_prompts_of", "prepare_masks"]


def learnable_prompts_of(detector) -> Any:
    """The detector's prompt strategy once checked to have learnable tokens that fit its backbone.

    Uses the declared prompt contract only (:meth:`~zsad.prompts.base.PromptStrategy.prompt_tokens`), so every
    strategy with tokens (``learnable``, ``decoupled``, plugins) trains the same way; a clear ``ConfigError``
    otherwise.

    Example:
        >>> from zsad import Detector
        >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=56,
        ...                            backbone_options={"random_config": "tiny"}, device="cpu")
        >>> [tuple(t.shape) for t in learnable_prompts_of(det).prompt_tokens()]
        [(8, 32), (8, 32)]
    """
    backbone = detector.backbone
    if not backbone.supports_learnable_prompts:
        raise ConfigError(
            f"The backbone {type(backbone).__name__} ({detector.config.backbone.name}) cannot learn prompts: its text "
            "tower accepts no learnable prefix tokens (supports_learnable_prompts is False). Train with a backbone "
            "that does (e.g. 'tips'), or use fixed prompts only."
        )
    learned = detector.prompts
    if not learned.prompt_tokens():
        raise ConfigError(
            f"The prompt strategy {detector.config.prompts.strategy!r} has no learnable prompt tokens; train with "
            "prompts.strategy='decoupled' (Tipsomaly) or 'learnable' (e.g. --set prompt_strategy=decoupled)."
        )
    width = int(backbone.prompt_width)
    t_n = learned.prompt_tokens()[0]
    if width and t_n.shape[-1] != width:
        raise ConfigError(
            f"The learnable prompt tokens are {t_n.shape[-1]} wide but the backbone's text tower takes {width}-wide "
            "tokens; start from prompts made for this backbone (or from a random initialisation: prompt_checkpoint=None)."
        )
    return learned


def _mask_array(item: Any, index: int) -> np.ndarray | None:
    if item is None:
        return None
    if isinstance(item, (str, os.PathLike)):
        from zsad.data.masks import read_mask

        return read_mask(Path(item))
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    try:
        from PIL import Image

        if isinstance(item, Image.Image):
            item = np.asarray(item.convert("L"))
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    arr = np.asarray(item)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DatasetError(f"Mask {index} has shape {arr.shape}; masks must be H x W arrays (non-zero = anomalous).")
    return arr


def prepare_masks(masks: Any, original_sizes: Sequence[tuple[int, int]], size: int) -> torch.Tensor:
    """Masks at the images' original sizes -> a ``(B, size, size)`` float 0/1 tensor, resized as the official loader.

    Each mask is an ``H x W`` array/tensor/PIL image or a mask file path (non-zero = anomalous), or ``None`` for a
    normal image (all zeros). ``masks`` may also be one ``(B, H, W)`` array or tensor. Resizing is
    :func:`zsad.data.masks.resize_mask` (``> 0`` -> x255 -> PIL bilinear -> ``> 0.5``).

    Raises:
        DatasetError: wrong number of masks, or a mask whose size differs from its image's.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((20, 30), np.uint8); m[:, :15] = 255
        >>> t = prepare_masks([m, None], [(20, 30), (5, 5)], 14)
        >>> tuple(t.shape), float(t[0].mean()), float(t[1].sum())
        ((2, 14, 14), 0.5, 0.0)
    """
    from zsad.data.masks import resize_mask

    if isinstance(masks, (np.ndarray, torch.Tensor)) and masks.ndim == 3:
        masks = list(masks)
    elif masks is None:
        masks = [None] * len(original_sizes)
    masks = list(masks)
    if len(masks) != len(original_sizes):
        raise DatasetError(f"Got {len(masks)} masks for {len(original_sizes)} images; give one mask (or None) per image.")
    out = np.zeros((len(masks), size, size), np.float32)
    for i, (item, hw) in enumerate(zip(masks, original_sizes)):
        arr = _mask_array(item, i)
        if arr is None:
            continue
        if tuple(arr.shape) != tuple(hw):
            raise DatasetError(
                f"Mask {i} is {arr.shape[1]}x{arr.shape[0]} (w x h) but its image is {hw[1]}x{hw[0]}; give masks at "
                "the images' original size (they are resized inside, as the official loader does)."
            )
        out[i] = resize_mask(arr, size)
    return torch.from_numpy(out)


class PromptTrainer:
    """Optimise a detector's learnable prompt tokens (backbone frozen) with the Tipsomaly localisation loss.

    Args:
        detector: a :class:`~zsad.Detector` whose prompt strategy has learnable tokens (``decoupled`` or
            ``learnable``) on a backbone that accepts them.
        lr: Adam learning rate (official 1e-3).
        betas: Adam betas (official ``(0.5, 0.999)``).
        eps: Adam epsilon (1e-8, torch's default as official).
        weight_decay: Adam weight decay (0, as official).
        loss: the loss settings (default: the official focal gamma 2 + two dice terms).

    Attributes:
        optimizer: the ``torch.optim.Adam`` over ``[T_n, T_a]``.
        steps: optimiser steps taken so far.

    See the module docstring for what one :meth:`step` does, and :func:`zsad.training.train_prompts` for a whole
    run over a dataset (feature cache, checkpoints, resume).
    """

    def __init__(
        self,
        detector,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.5, 0.999),
        *,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        loss: SegmentationLoss | None = None,
    ) -> None:
        if not lr > 0:
            raise ConfigError(f"lr must be > 0, got {lr}.")
        if len(tuple(betas)) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}.")
        self.detector = detector
        self.learned = learnable_prompts_of(detector)
        self.params = list(self.learned.prompt_tokens()) + list(self.learned.deep_prompt_tokens())
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.loss = loss or SegmentationLoss()
        self.steps = 0
        self._last_grads: tuple[torch.Tensor, ...] | None = None
        self._last_prototypes: torch.Tensor | None = None

    # -- steps ---------------------------------------------------------------------------------------------------
    def encode_images(self, images: Any):
        """Preprocess images (as :meth:`Detector.predict` accepts them) and encode them under no-grad.

        Returns ``(features, original_sizes)`` with :class:`~zsad.backbones.base.ImageFeatures` on the device.
        """
        det = self.detector
        items = images if isinstance(images, (list, tuple)) else [images]
        batch = det.preprocess(items)
        with torch.no_grad():
            features = det.backbone.encode_image(batch.pixels.to(det.device))
        return features, batch.original_sizes

    def step(self, images: Any, masks: Any) -> dict[str, float]:
        """One optimiser step on one batch; returns the loss components ``focal``, ``dice_pos``, ``dice_neg``, ``total``.

        Args:
            images: a list of inputs as :meth:`Detector.predict` accepts them (paths, PIL images, ``HxWx3`` uint8
                arrays, ``3xHxW`` / ``Bx3xHxW`` float tensors in [0, 1]).
            masks: one ``H x W`` mask per image at its original size (non-zero = anomalous; ``None`` = normal), or
                one ``(B, H, W)`` array; resized and binarised as the official loader does.

        The values are those of the batch *before* the update (as the official log).
        """
        features, sizes = self.encode_images(images)
        size = int(self.detector.config.preprocess.image_size)
        mask_tensor = prepare_masks(masks, sizes, size)
        return self.step_features(features.patches, features.grid, mask_tensor)

    def step_features(self, patches: torch.Tensor, grid: tuple[int, int], masks: torch.Tensor) -> dict[str, float]:
        """One optimiser step from precomputed image features (what a feature cache stores).

        Args:
            patches: ``(B, N, D)`` L2-normalised patch features (``ImageFeatures.patches``), no grad needed.
            grid: the ``(rows, cols)`` patch grid, ``rows * cols == N``.
            masks: ``(B, H, W)`` 0/1 masks at the map size (the model input size for the official loss).
        """
        det = self.detector
        patches = patches.to(det.device)
        masks = masks.to(device=det.device, dtype=torch.float32)
        with torch.enable_grad():
            prototypes = self.learned.local_prototypes(det.backbone, ["object"])  # (1, 2, D), one text pass
            probs = det.backbone.probabilities(patches, prototypes, temperature=det.scorer.temperature)  # (B, N, 2)
            maps = upsample_patch_probs(probs, grid, tuple(masks.shape[-2:]))  # (B, 2, H, W), unsmoothed
            losses = self.loss(maps, masks)
            self.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
        self._last_prototypes = prototypes.detach().clone()
        self._last_grads = tuple(
            (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for p in self.params
        )
        self.optimizer.step()
        self.steps += 1
        if not self.learned.trained:  # the detector must stop warning about a random initialisation
            self.learned.mark_trained()
        return {name: float(losses[name].detach()) for name in LOSS_NAMES}

    # -- inspection ----------------------------------------------------------------------------------------------
    def prompt_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the current ``(T_n, T_a)`` tokens, ``(n_tokens, width)`` each."""
        t_n, t_a = self.learned.prompt_tokens()
        return t_n.detach().clone(), t_a.detach().clone()

    def last_gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the last step's total loss w.r.t. ``(T_n, T_a)`` (before the update was applied)."""
        if self._last_grads is None:
            raise ConfigError("No step has been taken yet: last_gradients() is available after step().")
        return self._last_grads  # type: ignore[return-value]

    def last_prototypes(self) -> torch.Tensor:
        """The local prototypes ``G_l`` ``(1, 2, D)`` the last step scored with (from the tokens before its update)."""
        if self._last_prototypes is None:
            raise ConfigError("No step has been taken yet: last_prototypes() is available after step().")
        return self._last_prototypes

    # -- state ---------------------------------------------------------------------------------------------------
    def set_tokens(self, t_n: torch.Tensor, t_a: torch.Tensor) -> None:
        """Overwrite the tokens in place (the optimiser keeps tracking the same parameters)."""
        for param, value in zip(self.params, (t_n, t_a)):
            if tuple(value.shape) != tuple(param.shape):
                raise ConfigError(f"Prompt tokens of shape {tuple(value.shape)} do not fit parameters {tuple(param.shape)}.")
            with torch.no_grad():
                param.copy_(value.to(device=param.device, dtype=param.dtype))
