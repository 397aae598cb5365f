"""Learnable prompts: prompt tokens T^n / T^a prepended to every sentence of a class-agnostic ensemble.

As in the official ``concat`` method, the ``n_tokens`` vectors of T^n (normal sentences) or T^a (abnormal
sentences) are injected into the text tower before the sentence tokens (how exactly is the backbone's business:
:meth:`Backbone.encode_text` with ``prefix=``). The sentences are the prompt list expanded for the class word
``object``; the resulting ``(1, 2, D)`` prototypes serve every class.

Example:
    >>> from zsad.backbones.tips import TipsArchitecture, TipsBackbone
    >>> bb = TipsBackbone.random(TipsArchitecture.tiny())
    >>> lp = LearnablePrompts(n_tokens=4, width=32)
    >>> lp.local_prototypes(bb, ["anything"]).shape
    torch.Size([1, 2, 32])
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from zsad.errors import CheckpointError, ConfigError
from zsad.prompts.base import PromptStrategy, learnable_width
from zsad.prompts.checkpoint import load_prompt_checkpoint, save_prompt_checkpoint
from zsad.prompts.fixed import encode_prompt_pair
from zsad.prompts.templates import get_prompt_list, normalize_class_name

__all__ = ["LearnablePrompts"]


class LearnablePrompts(PromptStrategy):
    """Learnable prompt tokens for both scores (the paper's "Learned" row); see the module docstring.

    Args:
        prompt_list: the sentence ensemble the tokens are prepended to (``industrial`` as trained officially).
        n_tokens: tokens per state (8 by default).
        width: token width; inferred from the backbone (``prompt_width``) or the checkpoint when omitted.
        class_word: the class-agnostic word placed in the sentences.
        checkpoint: a prompt checkpoint (file or built-in name) to start from.
        init_std: standard deviation of the random initialisation N(0, init_std^2).
        seed: seed of the random initialisation.
    """

    class_agnostic_local = True

    def __init__(
        self,
        prompt_list: str = "industrial",
        n_tokens: int = 8,
        width: int | None = None,
        class_word: str = "object",
        checkpoint: str | Path | None = None,
        init_std: float = 0.02,
        seed: int = 111,
    ) -> None:
        super().__init__()
        get_prompt_list(prompt_list)
        if n_tokens < 1:
            raise ConfigError(f"prompts.n_tokens must be >= 1, got {n_tokens}.")
        self.prompt_list, self.n_tokens, self.class_word = prompt_list, n_tokens, class_word
        self.init_std, self.seed = init_std, seed
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.metadata: dict[str, str] = {}
        self.T_n: nn.Parameter | None = None
        self.T_a: nn.Parameter | None = None
        if checkpoint is not None:
            t_n, t_a, self.metadata = load_prompt_checkpoint(checkpoint)
            if t_n.shape[0] != n_tokens:
                raise CheckpointError(
                    f"Prompt checkpoint {checkpoint} has {t_n.shape[0]} tokens per state but prompts.n_tokens is "
                    f"{n_tokens}; set n_tokens={t_n.shape[0]} or use a matching checkpoint."
                )
            self._set(t_n, t_a)
        elif width is not None:
            self._init_random(width)

    @property
    def trained(self) -> bool:
        """True when the tokens come from a checkpoint (or training), False for a random initialisation."""
        return self.checkpoint is not None

    def mark_trained(self, source: str = "<trained in memory>") -> None:
        """Record that the tokens were trained (so the detector no longer warns about a random initialisation)."""
        self.checkpoint = source

    def _set(self, t_n: torch.Tensor, t_a: torch.Tensor) -> None:
        with torch.inference_mode(False):  # trainable even when built inside an inference_mode block
            self.T_n = nn.Parameter(t_n.detach().clone().float())
            self.T_a = nn.Parameter(t_a.detach().clone().float())
        self.invalidate()

    def _init_random(self, width: int) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        self._set(
            torch.randn(self.n_tokens, width, generator=gen) * self.init_std,
            torch.randn(self.n_tokens, width, generator=gen) * self.init_std,
        )

    def bind(self, backbone) -> "LearnablePrompts":
        """Check (or create) the tokens for *backbone*'s text tower; called by the detector when it is built."""
        fix = ("use prompts trained for this backbone (the built-in Tipsomaly prompts fit TIPS v1 L/14-HR), train "
               "new ones with `zsad train`, or use prompts.strategy='fixed'.")
        width = learnable_width(backbone, self.T_n, f"The learnable prompts ({self.checkpoint or 'random init'})", fix)
        if self.T_n is None:
            self._init_random(width)
        device = backbone.device
        if self.T_n.device != device:
            self.to(device)
        return self

    def tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current ``(T_n, T_a)`` parameters."""
        if self.T_n is None or self.T_a is None:
            raise ConfigError("The learnable prompts are not bound to a backbone yet (call bind(backbone)).")
        return self.T_n, self.T_a

    def prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        """``(T_n, T_a)`` once bound (or loaded from a checkpoint), ``()`` before."""
        return () if self.T_n is None or self.T_a is None else (self.T_n, self.T_a)

    def checkpoint_metadata(self) -> dict[str, str]:
        return {"prompt_list": self.prompt_list, "n_tokens": str(self.n_tokens), "class_word": self.class_word}

    def token_tensors(self) -> dict[str, torch.Tensor]:
        t_n, t_a = self.tokens()
        return {"T_n": t_n, "T_a": t_a}

    def initialize(self, seed: int) -> None:
        """Redraw ``T_n`` / ``T_a`` from N(0, init_std²) with ``seed`` (once the width is known)."""
        self.seed = int(seed)
        if self.T_n is not None:
            device = self.T_n.device
            self._init_random(int(self.T_n.shape[1]))
            self.to(device)
            self.checkpoint = None

    def load(self, checkpoint: str | Path) -> None:
        """Replace the tokens with those of a prompt checkpoint (same shape)."""
        t_n, t_a, self.metadata = load_prompt_checkpoint(checkpoint)
        if self.T_n is not None and t_n.shape != self.T_n.shape:
            raise CheckpointError(
                f"Prompt checkpoint {checkpoint} holds {tuple(t_n.shape)} tokens; these prompts are {tuple(self.T_n.shape)}."
            )
        device = self.T_n.device if self.T_n is not None else torch.device("cpu")
        self._set(t_n.to(device), t_a.to(device))
        self.checkpoint = str(checkpoint)

    def save_tokens(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write the tokens to a zsad ``.safetensors`` prompt checkpoint."""
        t_n, t_a = self.tokens()
        meta = {"format": "zsad-prompts", **self.checkpoint_metadata(), **(metadata or {})}
        return save_prompt_checkpoint(path, t_n, t_a, meta)

    save = save_tokens

    def local_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        self.bind(backbone)
        t_n, t_a = self.tokens()
        word = normalize_class_name(self.class_word)
        return encode_prompt_pair(backbone, self.prompt_list, word, t_n, t_a).unsqueeze(0)

    def global_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return self.local_prototypes(backbone, class_names).expand(len(class_names), -1, -1)


def learnable_from_config(cfg) -> LearnablePrompts:
    """Registry factory: learnable prompts for both scores from a :class:`~zsad.config.PromptConfig`."""
    return LearnablePrompts(
        cfg.learned_list or cfg.fixed, cfg.n_tokens, class_word=cfg.class_word, checkpoint=cfg.checkpoint, **cfg.options
    )
