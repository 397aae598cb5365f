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

        The detector caches prototypes per (class, token); in-place parameter updates (optimiser steps) bump
        ``Parameter._version`` and so invalidate the cache automatically.
        """
        return (id(self), kind, tuple((p.data_ptr(), p._version) for p in self.parameters()))
