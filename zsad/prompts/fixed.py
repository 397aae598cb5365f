"""Fixed prompts: hand-written normal/abnormal sentence ensembles per class.

Example (tiny random backbone):
    >>> from zsad.backbones.tips import TipsArchitecture, TipsBackbone
    >>> bb = TipsBackbone.random(TipsArchitecture.tiny())
    >>> FixedPrompts("industrial").global_prototypes(bb, ["metal_nut"]).shape
    torch.Size([1, 2, 32])
"""

from __future__ import annotations

from typing import Sequence

import torch

from zsad.prompts.base import PromptStrategy, ensemble_prototype
from zsad.prompts.templates import get_prompt_list, normalize_class_name

__all__ = ["FixedPrompts", "encode_prompt_pair"]


def encode_prompt_pair(
    backbone,
    prompt_list: str,
    class_word: str,
    normal_prefix: torch.Tensor | None = None,
    abnormal_prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(2, D)`` [normal, abnormal] prototypes of one class word: encode, normalise, average, normalise."""
    normal, abnormal = get_prompt_list(prompt_list).sentences(normalize_class_name(class_word))
    return torch.stack(
        [
            ensemble_prototype(backbone.encode_text(normal, prefix=normal_prefix)),
            ensemble_prototype(backbone.encode_text(abnormal, prefix=abnormal_prefix)),
        ]
    )


class FixedPrompts(PromptStrategy):
    """Fixed prompt ensembles (``prompt_list``) for both the image score and the pixel map."""

    def __init__(self, prompt_list: str = "industrial") -> None:
        super().__init__()
        get_prompt_list(prompt_list)  # fail early on unknown names
        self.prompt_list = prompt_list

    def global_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return torch.stack([encode_prompt_pair(backbone, self.prompt_list, c) for c in class_names])

    def local_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return self.global_prototypes(backbone, class_names)

    def cache_token(self, kind: str):
        return ("fixed", self.prompt_list)


def fixed_from_config(cfg) -> FixedPrompts:
    """Registry factory: fixed prompts from a :class:`~zsad.config.PromptConfig` (uses ``fixed``)."""
    return FixedPrompts(cfg.fixed, **cfg.options)
