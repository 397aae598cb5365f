"""The prompt-strategy contract and the shared prototype arithmetic.

**What a strategy implements:** :meth:`PromptStrategy.global_prototypes` and :meth:`PromptStrategy.local_prototypes`
(``[normal, abnormal]`` text prototypes through the backbone contract) and, when its prototypes can change, a
:meth:`PromptStrategy.cache_token` that says so.

**What has defaults** (override what applies; the detector, ``Detector.save`` and the prompt trainer only use
these declared methods):

* :meth:`PromptStrategy.bind`: check or create what depends on the backbone (e.g. token widths); no-op by default;
* :meth:`PromptStrategy.prompt_tokens`: the learnable tokens placed in the prompt sequence (``(T_n, T_a)`` for
  Tipsomaly; normal and abnormal contexts for AnomalyCLIP); none by default;
* :meth:`PromptStrategy.deep_prompt_tokens`: learnable tokens inside the first text layers (deep prompts, passed
  to ``Backbone.encode_text(..., deep=...)``); none by default;
* :attr:`PromptStrategy.trained` / :meth:`PromptStrategy.mark_trained`: whether learnable tokens hold trained
  values (True for strategies without tokens);
* :meth:`PromptStrategy.save_tokens` / :meth:`PromptStrategy.checkpoint_metadata`: write the tokens to a
  ``.safetensors`` prompt checkpoint (strategies with tokens implement it), and
  :meth:`PromptStrategy.token_tensors`: the same tensors by name (training checkpoints embed them, so an epoch
  checkpoint is a prompt checkpoint of the strategy too);
* :meth:`PromptStrategy.initialize`: draw the learnable tokens afresh from a seed (a training run from scratch);
* :attr:`PromptStrategy.shared_prototypes`: the global prototypes are the local ones (one text pass serves both,
  e.g. AnomalyCLIP), so a trainer computes them once.

Example:
    >>> import torch
    >>> e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    >>> ensemble_prototype(e)
    tensor([0.7071, 0.7071])
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Hashable, Sequence

import torch
from torch import nn

from zsad.errors import ConfigError

__all__ = ["PromptStrategy", "ensemble_prototype", "learnable_width"]


def ensemble_prototype(sentence_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of sentence embeddings, L2-normalised: ``(S, D) -> (D,)``.

    With normalised sentence embeddings this is the Tipsomaly/CLIP ensemble; with raw ones (``encode_text(...,
    normalize=False)``) it is WinCLIP's (the normalisation comes after the mean).
    """
    return torch.nn.functional.normalize(sentence_embeddings.float().mean(dim=0), dim=-1)


def learnable_width(backbone, tokens: torch.Tensor | None, label: str, fix: str) -> int:
    """The width of *backbone*'s learnable prompt tokens, once checked that it takes them and that ``tokens`` (a
    strategy's current ``(n, width)`` tokens, or ``None`` before initialisation) fit; errors name both widths.

    ``label`` names the tokens (e.g. "The learnable prompts (tipsomaly-mvtec)"), ``fix`` says what to use instead.
    """
    name = type(backbone).__name__
    if not backbone.supports_learnable_prompts:
        raise ConfigError(
            f"The backbone {name} cannot take learnable prompts (its text tower accepts no prefix embeddings); {fix}"
        )
    width = int(backbone.prompt_width)
    if tokens is not None and tokens.shape[-1] != width:
        raise ConfigError(
            f"{label} are {tokens.shape[-1]} wide but the text tower of {name} takes {width}-wide tokens; {fix}"
        )
    return width


class PromptStrategy(nn.Module, abc.ABC):
    """Base class of prompt strategies (an ``nn.Module`` so learnable tokens move with ``.to(device)``)."""

    #: whether :meth:`local_prototypes` ignores the class (returns one pair for every class)
    class_agnostic_local: bool = False
    #: whether :meth:`global_prototypes` is :meth:`local_prototypes` for every class (one text pass serves both)
    shared_prototypes: bool = False

    @abc.abstractmethod
    def global_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        """``(C, 2, D)`` prototypes for image-level scores."""

    @abc.abstractmethod
    def local_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        """``(C, 2, D)`` (or ``(1, 2, D)`` if class-agnostic) prototypes for the pixel map."""

    # -- binding and learnable tokens (declared, with defaults) ------------------------------------------------
    def bind(self, backbone) -> "PromptStrategy":
        """Prepare for *backbone* (check or create token widths); called once by the detector. Default: no-op."""
        return self

    def prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        """Learnable tokens placed in the prompt sequence, e.g. ``(T_n, T_a)``; ``()`` for fixed prompts."""
        return ()

    def deep_prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        """Learnable tokens inside the first text layers (deep prompts), one tensor per layer; ``()`` by default."""
        return ()

    @property
    def has_learnable_tokens(self) -> bool:
        """True when the strategy has prompt or deep-prompt tokens a trainer can optimise."""
        return bool(self.prompt_tokens() or self.deep_prompt_tokens())

    @property
    def trained(self) -> bool:
        """False while learnable tokens hold a random initialisation (True when there are none)."""
        return True

    def mark_trained(self, source: str = "<trained in memory>") -> None:
        """Record that the learnable tokens were trained (no-op for strategies without tokens)."""

    def checkpoint_metadata(self) -> dict[str, str]:
        """String metadata stored with the tokens in a checkpoint (e.g. prompt list, token count)."""
        return {}

    def token_tensors(self) -> dict[str, torch.Tensor]:
        """The learnable tensors under the names of this strategy's prompt checkpoint (``{}`` without tokens)."""
        return {}

    def initialize(self, seed: int) -> None:
        """Draw the learnable tokens afresh from their random initialisation with ``seed`` (no-op without tokens)."""

    def save_tokens(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write the learnable tokens to a zsad ``.safetensors`` prompt checkpoint."""
        raise ConfigError(f"The prompt strategy {type(self).__name__} has no learnable tokens to save.")

    def learnable_parameters(self) -> list[nn.Parameter]:
        """Parameters a prompt trainer optimises (none for fixed prompts)."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- caching -----------------------------------------------------------------------------------------------
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
