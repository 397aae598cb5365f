"""The prompt-strategy contract and the shared prototype arithmetic.

Example:
    >>> import torch
    >>> e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    >>> ensemble_prototype(e)
    tensor([0.7071, 0.7071])
"""

from __future__ import annotations

import abc
from typing import Hashable, Sequence

import torch
from torch import nn

__all__ = ["PromptStrategy", "ensemble_prototype"]


def ensemble_prototype(sentence_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of (already normalised) sentence embeddings, L2-normalised again: ``(S, D) -> (D,)``."""
    return torch.nn.functional.normalize(sentence_embeddings.float().mean(dim=0), dim=-1)


class PromptStrategy(nn.Module, abc.ABC):
    """Base class of prompt strategies (an ``nn.Module`` so learnable tokens move with ``.to(device)``)."""

    #: whether :meth:`local_prototypes` ignores the class (returns one pair for every class)
    class_agnostic_local: bool = False

    @abc.abstractmethod
    def global_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        """``(C, 2, D)`` prototypes for image-level scores."""

    @abc.abstractmethod
    def local_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        """``(C, 2, D)`` (or ``(1, 2, D)`` if class-agnostic) prototypes for the pixel map."""

    def learnable_parameters(self) -> list[nn.Parameter]:
        """Parameters a prompt trainer optimises (none for fixed prompts)."""
        return [p for p in self.parameters() if p.requires_grad]

    def cache_token(self, kind: str) -> Hashable:
        """A key that changes whenever the ``kind`` ("global" or "local") prototypes would change.

        The detector caches prototypes per (class, token). The key holds a generation counter that
        :meth:`invalidate` bumps (strategies call it when they replace their tensors) and each parameter's version
        counter, which in-place updates such as optimiser steps bump. Edits through ``param.data`` bypass both:
        call :meth:`invalidate` (or ``Detector.clear_cache()``) after them.
        """
        versions = tuple(-1 if p.is_inference() else p._version for p in self.parameters())
        return (id(self), kind, getattr(self, "_generation", 0), versions)

    def invalidate(self) -> None:
        """Mark every cached prototype of this strategy as stale."""
        self._generation = getattr(self, "_generation", 0) + 1
