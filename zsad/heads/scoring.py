"""Per-batch scoring: one tensor function from preprocessed pixels, prototypes and references to scores and maps.

:class:`BatchScorer` is what :meth:`zsad.Detector.score_pixels` runs, and what engines and exporters reuse:

1. the backbone encodes the pixels with the union of the features its heads (and memory) ask for;
2. the features are compared with the per-image prototypes (:meth:`Backbone.probabilities`, with the recipe's
   fixed temperature if it has one) into :class:`~zsad.heads.base.ScoreInputs`;
3. the image heads give ``(B,)`` scores, the pixel head ``(B, S, S)`` maps;
4. where an image has references (a bank of its class), the memory's evidence is fused with them
   (:mod:`zsad.heads.memory`): ``map = (map + render(E)) / 2``, ``score = (score + max E) / 2``.

Nothing here depends on the method: the components come from the registry (:func:`build_scorer`).

Example:
    >>> import torch
    >>> from zsad.config import HeadConfig
    >>> from zsad.testing import tiny_backbone
    >>> bb = tiny_backbone("open_clip")
    >>> scorer = build_scorer(bb, HeadConfig(image_heads=("S1",), image_score="S1", sigma=0))
    >>> protos = torch.nn.functional.normalize(torch.randn(2, 2, bb.embed_dim), dim=-1)
    >>> out = scorer(torch.rand(2, 3, 56, 56), protos, protos)
    >>> out.scores["S1"].shape, out.maps.shape, out.reference is None
    (torch.Size([2]), torch.Size([2, 56, 56]), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from zsad.backbones.base import FeatureRequest, ImageFeatures
from zsad.errors import ConfigError, PluginError
from zsad.heads.base import ImageHead, PixelHead, ScoreInputs
from zsad.heads.memory import ReferenceBank, ReferenceMemory

__all__ = ["BatchScores", "BatchScorer", "build_scorer"]


@dataclass
class BatchScores:
    """Everything one forward pass computes for a batch (tensors on the detector's device, fp32).

    Attributes:
        scores: head name -> ``(B,)`` image scores (fused with the reference evidence where there is one).
        maps: ``(B, S, S)`` anomaly maps at the model input size (fused likewise).
        inputs: the probabilities the heads scored.
        reference: ``(B, N)`` reference evidence on the patch grid, or ``None`` when no image had references
            (rows of images without references are NaN).
    """

    scores: dict[str, torch.Tensor]
    maps: torch.Tensor
    inputs: ScoreInputs
    reference: torch.Tensor | None = None


class BatchScorer(nn.Module):
    """The per-batch scoring of a detector (see the module docstring).

    Args:
        backbone: the backbone (frozen by the detector).
        image_heads: name -> image head.
        pixel_head: the pixel head.
        memory: the reference memory (its banks are the detector's few-shot state).
        temperature: fixed softmax temperature of every similarity, or ``None`` for the backbone's own.
    """

    def __init__(
        self,
        backbone,
        image_heads: dict[str, ImageHead],
        pixel_head: PixelHead,
        memory: ReferenceMemory,
        temperature: float | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_heads = nn.ModuleDict(image_heads)
        self.pixel_head = pixel_head
        self.memory = memory
        self.temperature = temperature
        request = pixel_head.feature_request
        for head in image_heads.values():
            request = request | head.feature_request
        self.request: FeatureRequest = request
        backbone.check_request(request | memory.feature_request)

    def reference_request(self) -> FeatureRequest:
        """What the backbone computes for reference images (and for test images that have references)."""
        return self.request | self.memory.feature_request

    def forward(
        self,
        pixels: torch.Tensor,
        global_prototypes: torch.Tensor,
        local_prototypes: torch.Tensor,
        references: ReferenceBank | Sequence[ReferenceBank | None] | None = None,
    ) -> BatchScores:
        """Score preprocessed pixels ``(B, 3, S, S)``.

        Args:
            pixels: preprocessed (normalised) pixels on the backbone's device.
            global_prototypes: ``(B | 1, 2, D)`` prototypes of the image scores.
            local_prototypes: ``(B | 1, 2, D)`` prototypes of patches, windows and layers.
            references: one bank for every image, one bank (or ``None``) per image, or ``None`` (zero-shot).
        """
        banks = self.banks_for(references, pixels.shape[0])
        features = self.backbone.encode_image(pixels, self.request_for(banks))
        return self.score_features(features, global_prototypes, local_prototypes, banks, tuple(pixels.shape[-2:]))

    def banks_for(self, references, batch) -> list[ReferenceBank | None] | None:
        """``references`` as one bank (or ``None``) per image, or ``None`` for a zero-shot batch.

        Zero-shot needs no per-image list: the batch size stays symbolic when the scoring is traced (export).
        """
        return None if references is None else self._per_image(references, batch)

    def request_for(self, banks: Sequence[ReferenceBank | None] | None) -> FeatureRequest:
        """What the backbone computes for a batch with these banks (see :meth:`banks_for`)."""
        return self.reference_request() if banks and any(b is not None for b in banks) else self.request

    @staticmethod
    def _per_image(references, batch: int) -> list[ReferenceBank | None]:
        if references is None or isinstance(references, ReferenceBank):
            return [references] * batch
        banks = list(references)
        if len(banks) != batch:
            raise ConfigError(f"Got {len(banks)} reference banks for {batch} images; give one per image (or one).")
        return banks

    def score_inputs(
        self, features: ImageFeatures, global_prototypes: torch.Tensor, local_prototypes: torch.Tensor
    ) -> ScoreInputs:
        """Step 2: the ``[normal, abnormal]`` probabilities of every feature the heads score.

        Prompt learning calls it with prototypes that carry gradients, so the heads' losses see the same
        probabilities as their scores.
        """
        bb, t = self.backbone, self.temperature
        global_probs = {
            role: bb.probabilities(vec.unsqueeze(1), global_prototypes, temperature=t).squeeze(1)
            for role, vec in features.globals.items()
        }
        local = lambda x: bb.probabilities(x, local_prototypes, temperature=t)  # noqa: E731
        return ScoreInputs(
            global_probs,
            local(features.patches),
            features.grid,
            window_probs={s: local(w) for s, w in features.windows.items()},
            layer_probs={i: local(x) for i, x in features.layers.items()},
        )

    def score_features(
        self,
        features: ImageFeatures,
        global_prototypes: torch.Tensor,
        local_prototypes: torch.Tensor,
        references: ReferenceBank | Sequence[ReferenceBank | None] | None,
        size: tuple[int, int],
    ) -> BatchScores:
        """Steps 2-4 of the module docstring on already encoded features."""
        inputs = self.score_inputs(features, global_prototypes, local_prototypes)
        scores = {name: head(inputs).float() for name, head in self.image_heads.items()}
        maps = self.pixel_head(inputs, size)
        if references is None:
            return BatchScores(scores, maps, inputs)
        banks = self._per_image(references, maps.shape[0])
        if all(b is None for b in banks):
            return BatchScores(scores, maps, inputs)
        evidence = torch.full(features.patches.shape[:2], float("nan"), device=maps.device)
        for bank in {id(b): b for b in banks if b is not None}.values():
            rows = torch.tensor([i for i, b in enumerate(banks) if b is bank], device=maps.device)
            evidence[rows] = self.memory.evidence(features.rows(rows), bank).float()
        has = torch.tensor([b is not None for b in banks], device=maps.device)
        filled = torch.where(has[:, None], evidence, torch.zeros_like(evidence))
        maps = torch.where(has[:, None, None], (maps + self.pixel_head.render(filled, features.grid, size)) / 2, maps)
        peak = filled.max(dim=1).values
        scores = {name: torch.where(has, (s + peak) / 2, s) for name, s in scores.items()}
        return BatchScores(scores, maps, inputs, evidence)


def build_scorer(backbone, heads) -> BatchScorer:
    """A :class:`BatchScorer` from a :class:`~zsad.config.HeadConfig`, with components from the head registry.

    The pixel head's factory gets ``sigma``, ``truncate`` and its ``options``; every other component its options.
    """
    from zsad.components import create_head

    def build(name: str, kind: type, **fixed):
        options = heads.options.get(name, {})
        try:
            head = create_head(name, **{**fixed, **options})
        except TypeError as exc:
            raise ConfigError(
                f"The head {name!r} cannot be built with heads.options[{name!r}]={options}: {exc}. Check the option "
                "names against the head's factory (zsad heads / the Heads API page)."
            ) from exc
        if not isinstance(head, kind):
            raise PluginError(
                f"Head {name!r} is a {type(head).__name__}, not a {kind.__module__}.{kind.__name__}; it cannot be used "
                f"as a{'n' if kind is ImageHead else ''} {kind.__name__} (check it with zsad.testing.check_head)."
            )
        return head

    return BatchScorer(
        backbone,
        {name: build(name, ImageHead) for name in heads.image_heads},
        build(heads.pixel, PixelHead, sigma=heads.sigma, truncate=heads.truncate),
        build(heads.memory, ReferenceMemory),
        heads.temperature,
    )
