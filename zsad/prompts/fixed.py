"""Fixed prompts: hand-written normal/abnormal sentence ensembles per class.

Two ensembling rules (``ensemble``):

* ``"normalized"`` (Tipsomaly, CLIP-style): every sentence embedding is L2-normalised, averaged, normalised again;
* ``"raw"`` (WinCLIP as in anomalib): the raw sentence embeddings are averaged, then the mean is normalised.

Class names (``class_names``) go into the sentences as words (``"words"``: ``metal_nut`` -> ``metal nut``, the
official Tipsomaly rule) or verbatim (``"verbatim"``, as anomalib's WinCLIP does).

Example (tiny random backbone):
    >>> from zsad.backbones.tips import TipsArchitecture, TipsBackbone
    >>> bb = TipsBackbone.random(TipsArchitecture.tiny())
    >>> FixedPrompts("industrial").global_prototypes(bb, ["metal_nut"]).shape
    torch.Size([1, 2, 32])
    >>> FixedPrompts("winclip", class_names="verbatim").class_text("metal_nut")
    'metal_nut'
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from zsad.errors import ConfigError
from zsad.prompts.base import PromptStrategy, ensemble_prototype
from zsad.prompts.templates import get_prompt_list, normalize_class_name

__all__ = ["FixedPrompts", "encode_prompt_pair"]

Ensemble = Literal["normalized", "raw"]


def encode_prompt_pair(
    backbone,
    prompt_list: str,
    class_word: str,
    normal_prefix: torch.Tensor | None = None,
    abnormal_prefix: torch.Tensor | None = None,
    *,
    ensemble: Ensemble = "normalized",
) -> torch.Tensor:
    """``(2, D)`` [normal, abnormal] prototypes of one class text: encode, average (see ``ensemble``), normalise.

    ``class_word`` is put into the sentences as given (callers decide how class names are written).
    """
    normal, abnormal = get_prompt_list(prompt_list).sentences(class_word)
    normalize = ensemble == "normalized"
    return torch.stack(
        [
            ensemble_prototype(backbone.encode_text(normal, prefix=normal_prefix, normalize=normalize)),
            ensemble_prototype(backbone.encode_text(abnormal, prefix=abnormal_prefix, normalize=normalize)),
        ]
    )


def class_text(name: str, style: Literal["words", "verbatim"]) -> str:
    """How a class name is written into prompts: ``"words"`` (``_``/``-`` -> spaces) or ``"verbatim"``."""
    return normalize_class_name(name) if style == "words" else name


class FixedPrompts(PromptStrategy):
    """Fixed prompt ensembles (``prompt_list``) for both the image score and the pixel map.

    Args:
        prompt_list: a registered prompt list (:mod:`zsad.prompts.templates`).
        ensemble: ``"normalized"`` (default) or ``"raw"`` (see the module docstring).
        class_names: ``"words"`` (default) or ``"verbatim"``.
    """

    def __init__(
        self,
        prompt_list: str = "industrial",
        *,
        ensemble: Ensemble = "normalized",
        class_names: Literal["words", "verbatim"] = "words",
    ) -> None:
        super().__init__()
        get_prompt_list(prompt_list)  # fail early on unknown names
        if ensemble not in ("normalized", "raw"):
            raise ConfigError(f"prompts.options.ensemble must be 'normalized' or 'raw', got {ensemble!r}.")
        if class_names not in ("words", "verbatim"):
            raise ConfigError(f"prompts.options.class_names must be 'words' or 'verbatim', got {class_names!r}.")
        self.prompt_list, self.ensemble, self.class_names = prompt_list, ensemble, class_names

    def class_text(self, class_name: str) -> str:
        """The class name as it is written into the sentences."""
        return class_text(class_name, self.class_names)

    def global_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return torch.stack(
            [encode_prompt_pair(backbone, self.prompt_list, self.class_text(c), ensemble=self.ensemble) for c in class_names]
        )

    def local_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return self.global_prototypes(backbone, class_names)

    def cache_token(self, kind: str):
        return ("fixed", self.prompt_list, self.ensemble, self.class_names)


def fixed_from_config(cfg) -> FixedPrompts:
    """Registry factory: fixed prompts from a :class:`~zsad.config.PromptConfig` (uses ``fixed`` and ``options``)."""
    return FixedPrompts(cfg.fixed, **cfg.options)
