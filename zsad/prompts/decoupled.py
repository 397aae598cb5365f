"""Decoupled prompts (Tipsomaly): fixed prompts for the image score, learned prompts for the pixel map.

Example:
    >>> from zsad.backbones.tips import TipsArchitecture, TipsBackbone
    >>> bb = TipsBackbone.random(TipsArchitecture.tiny())
    >>> dp = DecoupledPrompts("industrial", n_tokens=4)
    >>> dp.global_prototypes(bb, ["a", "b"]).shape, dp.local_prototypes(bb, ["a", "b"]).shape
    (torch.Size([2, 2, 32]), torch.Size([1, 2, 32]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from zsad.prompts.base import PromptStrategy
from zsad.prompts.fixed import FixedPrompts
from zsad.prompts.learnable import LearnablePrompts

__all__ = ["DecoupledPrompts"]


class DecoupledPrompts(PromptStrategy):
    """Fixed ``prompt_list`` ensembles per class for image scores; learnable tokens for the pixel map.

    The learned ensemble uses ``learned_prompt_list`` (default: the same list, as the official code does).
    """

    class_agnostic_local = True

    def __init__(
        self,
        prompt_list: str = "industrial",
        checkpoint: str | Path | None = None,
        n_tokens: int = 8,
        learned_prompt_list: str | None = None,
        class_word: str = "object",
        width: int | None = None,
        init_std: float = 0.02,
        seed: int = 111,
    ) -> None:
        super().__init__()
        self.fixed = FixedPrompts(prompt_list)
        self.learned = LearnablePrompts(
            learned_prompt_list or prompt_list, n_tokens, width, class_word, checkpoint, init_std, seed
        )

    def bind(self, backbone) -> "DecoupledPrompts":
        self.learned.bind(backbone)
        return self

    def prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        return self.learned.prompt_tokens()

    @property
    def trained(self) -> bool:
        return self.learned.trained

    def mark_trained(self, source: str = "<trained in memory>") -> None:
        self.learned.mark_trained(source)

    def checkpoint_metadata(self) -> dict[str, str]:
        return self.learned.checkpoint_metadata()

    def save_tokens(self, path: str | Path, metadata: dict | None = None) -> Path:
        return self.learned.save_tokens(path, metadata)

    def token_tensors(self) -> dict[str, torch.Tensor]:
        return self.learned.token_tensors()

    def initialize(self, seed: int) -> None:
        self.learned.initialize(seed)

    def global_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return self.fixed.global_prototypes(backbone, class_names)

    def local_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return self.learned.local_prototypes(backbone, class_names)

    def cache_token(self, kind: str):
        return self.fixed.cache_token(kind) if kind == "global" else self.learned.cache_token(kind)


def decoupled_from_config(cfg) -> DecoupledPrompts:
    """Registry factory: decoupled prompts from a :class:`~zsad.config.PromptConfig`."""
    return DecoupledPrompts(
        cfg.fixed, cfg.checkpoint, cfg.n_tokens, cfg.learned_list, cfg.class_word, **cfg.options
    )
