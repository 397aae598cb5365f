"""One optimiser step at a time: :class:`PromptTrainer` learns a detector's prompt tokens with its backbone frozen.

Per step (the official ``train.py`` loops of Tipsomaly and AnomalyCLIP, written once):

1. the frozen image features the recipe's heads need (patches, the layers of a ``pixel_map`` with ``layers``, the
   global token) are computed under no-grad (or taken from a feature cache);
2. the prompt strategy encodes its learned prompts once, with gradients to its tokens (contexts and deep prompts),
   giving the local prototypes ``G_l`` ``(1, 2, D)``; strategies whose global prototypes are the local ones
   (``shared_prototypes``, AnomalyCLIP) use them for the image score too, others the detector's cached ones;
3. the features are scored against them (:meth:`~zsad.heads.scoring.BatchScorer.score_inputs`, the same
   probabilities the heads score at inference);
4. the training objective is what the heads declare: the pixel head's localisation loss
   (:meth:`~zsad.heads.base.PixelHead.loss`: focal + two dice terms on the unsmoothed, upsampled maps, times its
   weight, summed over its layers) plus every image head's loss (:meth:`~zsad.heads.base.ImageHead.loss`, e.g.
   AnomalyCLIP's image cross-entropy); their ``total`` is backpropagated;
5. ``zero_grad``, ``backward``, ``Adam.step``.

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

from zsad.backbones.base import ImageFeatures
from zsad.errors import ConfigError, DatasetError
from zsad.heads.losses import SegmentationLoss

__all__ = ["PromptTrainer", "learnable_prompts_of", "prepare_masks", "mask_labels"]


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
            "prompts.strategy='decoupled' (Tipsomaly), 'learnable' or 'object_agnostic' (AnomalyCLIP) (e.g. --set "
            "prompt_strategy=decoupled)."
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


def _mask_arrays(masks: Any, original_sizes: Sequence[tuple[int, int]]) -> list[np.ndarray | None]:
    """One ``H x W`` array (or ``None`` = normal) per image, checked against the image sizes."""
    if isinstance(masks, (np.ndarray, torch.Tensor)) and masks.ndim == 3:
        masks = list(masks)
    elif masks is None:
        masks = [None] * len(original_sizes)
    masks = list(masks)
    if len(masks) != len(original_sizes):
        raise DatasetError(f"Got {len(masks)} masks for {len(original_sizes)} images; give one mask (or None) per image.")
    arrays = []
    for i, (item, hw) in enumerate(zip(masks, original_sizes)):
        arr = _mask_array(item, i)
        if arr is not None and tuple(arr.shape) != tuple(hw):
            raise DatasetError(
                f"Mask {i} is {arr.shape[1]}x{arr.shape[0]} (w x h) but its image is {hw[1]}x{hw[0]}; give masks at "
                "the images' original size (they are resized inside, as the official loader does)."
            )
        arrays.append(arr)
    return arrays


def _resized(arrays: Sequence[np.ndarray | None], size: int) -> torch.Tensor:
    from zsad.data.masks import resize_mask

    out = np.zeros((len(arrays), size, size), np.float32)
    for i, arr in enumerate(arrays):
        if arr is not None:
            out[i] = resize_mask(arr, size)
    return torch.from_numpy(out)


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
    return _resized(_mask_arrays(masks, original_sizes), size)


def mask_labels(masks: Any, original_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Image labels from masks at the original size: 1 where a mask has a non-zero pixel, else 0 (``(B,)`` long).

    Example:
        >>> import numpy as np
        >>> m = np.zeros((4, 4), np.uint8); m[1, 2] = 1
        >>> mask_labels([m, None, np.zeros((4, 4))], [(4, 4)] * 3).tolist()
        [1, 0, 0]
    """
    return _labels(_mask_arrays(masks, original_sizes))


def _labels(arrays: Sequence[np.ndarray | None]) -> torch.Tensor:
    return torch.tensor([int(a is not None and bool(np.any(a))) for a in arrays], dtype=torch.long)


class PromptTrainer:
    """Optimise a detector's learnable prompt tokens (backbone frozen) with the objective its heads declare.

    Args:
        detector: a :class:`~zsad.Detector` whose prompt strategy has learnable tokens (``decoupled``,
            ``learnable``, ``object_agnostic``) on a backbone that accepts them.
        lr: Adam learning rate (official 1e-3).
        betas: Adam betas (official ``(0.5, 0.999)``).
        eps: Adam epsilon (1e-8, torch's default as official).
        weight_decay: Adam weight decay (0, as official).
        loss: the localisation loss settings (default: the official focal gamma 2 + two dice terms); which maps
            it applies to, and with which weight, is the pixel head's business.

    Attributes:
        optimizer: the ``torch.optim.Adam`` over the prompt tokens and deep prompts.
        params: the optimised tensors: ``prompt_tokens()`` then ``deep_prompt_tokens()`` of the strategy.
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
        #: the image features the heads (and so their losses) need
        self.request = detector.scorer.request
        self.steps = 0
        self._last_grads: tuple[torch.Tensor, ...] | None = None
        self._last_prototypes: torch.Tensor | None = None

    # -- steps ---------------------------------------------------------------------------------------------------
    def encode_images(self, images: Any) -> tuple[ImageFeatures, list[tuple[int, int]]]:
        """Preprocess images (as :meth:`Detector.predict` accepts them) and encode what the heads need, no-grad.

        Returns ``(features, original_sizes)`` with :class:`~zsad.backbones.base.ImageFeatures` on the device.
        """
        det = self.detector
        items = images if isinstance(images, (list, tuple)) else [images]
        batch = det.preprocess(items)
        with torch.no_grad():
            features = det.backbone.encode_image(batch.pixels.to(det.device), self.request)
        return features, batch.original_sizes

    def step(self, images: Any, masks: Any, labels: Sequence[int] | torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on one batch; returns the loss components and ``total`` as floats.

        Args:
            images: a list of inputs as :meth:`Detector.predict` accepts them (paths, PIL images, ``HxWx3`` uint8
                arrays, ``3xHxW`` / ``Bx3xHxW`` float tensors in [0, 1]).
            masks: one ``H x W`` mask per image at its original size (non-zero = anomalous; ``None`` = normal), or
                one ``(B, H, W)`` array; resized and binarised as the official loader does.
            labels: image labels (1 = anomalous) for image losses; default: from the masks (:func:`mask_labels`).

        The components are those the heads declare (``focal``, ``dice_pos``, ``dice_neg``; ``image`` for
        AnomalyCLIP), the values of the batch *before* the update (as the official log).
        """
        features, sizes = self.encode_images(images)
        arrays = _mask_arrays(masks, sizes)
        mask_tensor = _resized(arrays, int(self.detector.config.preprocess.image_size))
        return self.step_features(features, mask_tensor, _labels(arrays) if labels is None else labels)

    def step_features(
        self, features: ImageFeatures, masks: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None
    ) -> dict[str, float]:
        """One optimiser step from precomputed image features (what a feature cache stores).

        Args:
            features: L2-normalised :class:`~zsad.backbones.base.ImageFeatures` with what :attr:`request` asks for
                (``encode_image(pixels, trainer.request)``), no grad needed.
            masks: ``(B, H, W)`` 0/1 masks at the map size (the model input size for the official loss).
            labels: ``(B,)`` image labels (default: 1 where the mask has a positive pixel).
        """
        det = self.detector
        features = _to_device(features, det.device)
        masks = masks.to(device=det.device, dtype=torch.float32)
        labels = (masks.flatten(1).amax(dim=1) > 0).long() if labels is None else torch.as_tensor(labels).long()
        labels = labels.to(det.device)
        with torch.enable_grad():
            local = self.learned.local_prototypes(det.backbone, ["object"])  # (1, 2, D), one text pass
            shared = self.learned.shared_prototypes
            glob = local if shared else det.prototypes(["object"], "global")
            inputs = det.scorer.score_inputs(features, glob, local)
            losses = _merge([det.pixel_head.loss(inputs, masks, self.loss)]
                            + [head.loss(inputs, labels) for head in det.image_heads.values()])
            self.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
        self._last_prototypes = local.detach().clone()
        self._last_grads = tuple(
            (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for p in self.params
        )
        self.optimizer.step()
        self.steps += 1
        if not self.learned.trained:  # the detector must stop warning about a random initialisation
            self.learned.mark_trained()
        return {name: float(value.detach()) for name, value in losses.items()}

    # -- inspection ----------------------------------------------------------------------------------------------
    def prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        """Copies of the current prompt tokens: ``(T_n, T_a)`` (Tipsomaly) or ``(ctx_pos, ctx_neg)`` (AnomalyCLIP)."""
        return tuple(t.detach().clone() for t in self.learned.prompt_tokens())

    def deep_prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        """Copies of the current deep prompts (one ``(n, width)`` tensor per text block; ``()`` without)."""
        return tuple(t.detach().clone() for t in self.learned.deep_prompt_tokens())

    def last_gradients(self) -> tuple[torch.Tensor, ...]:
        """Gradients of the last step's total loss w.r.t. :attr:`params` (before the update was applied)."""
        if self._last_grads is None:
            raise ConfigError("No step has been taken yet: last_gradients() is available after step().")
        return self._last_grads

    def last_prototypes(self) -> torch.Tensor:
        """The local prototypes ``G_l`` ``(1, 2, D)`` the last step scored with (from the tokens before its update)."""
        if self._last_prototypes is None:
            raise ConfigError("No step has been taken yet: last_prototypes() is available after step().")
        return self._last_prototypes

    # -- state ---------------------------------------------------------------------------------------------------
    def set_tokens(self, *values: torch.Tensor) -> None:
        """Overwrite the first :attr:`params` in place (e.g. ``T_n, T_a``); the optimiser keeps tracking them."""
        for param, value in zip(self.params, values):
            if tuple(value.shape) != tuple(param.shape):
                raise ConfigError(f"Prompt tokens of shape {tuple(value.shape)} do not fit parameters {tuple(param.shape)}.")
        with torch.no_grad():
            for param, value in zip(self.params, values):
                param.copy_(value.to(device=param.device, dtype=param.dtype))


def _merge(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Components of every declared loss (same names add up) and ``total``, the sum of their totals."""
    out: dict[str, torch.Tensor] = {}
    totals = []
    for part in parts:
        for name, value in part.items():
            if name == "total":
                totals.append(value)
            else:
                out[name] = out[name] + value if name in out else value
    if not totals:
        raise ConfigError("The recipe's heads declare no training loss; nothing to optimise.")
    out["total"] = sum(totals[1:], totals[0])
    return out


def _to_device(features: ImageFeatures, device: torch.device) -> ImageFeatures:
    if features.patches.device == device:
        return features
    return ImageFeatures(
        {r: g.to(device) for r, g in features.globals.items()},
        features.patches.to(device),
        features.grid,
        windows={s: w.to(device) for s, w in features.windows.items()},
        layers={i: t.to(device) for i, t in features.layers.items()},
        unprojected_patches=None if features.unprojected_patches is None else features.unprojected_patches.to(device),
    )
