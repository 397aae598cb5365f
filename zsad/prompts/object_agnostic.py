"""Object-agnostic learnable prompts with deep prompts (AnomalyCLIP, Zhou et al., ICLR 2024).

Two learned contexts of ``n_ctx`` tokens, ``ctx_pos`` (normal) and ``ctx_neg`` (abnormal), are placed after the
start-of-text token of the sentences ``"object."`` and ``"damaged object."`` (prompt list ``anomalyclip``; the
class word is the fixed ``class_word``, never the class name), and ``depth - 1`` deep prompts of ``t_n_ctx``
tokens replace the first ``t_n_ctx`` tokens after the start-of-text token at the input of text blocks
``1 .. depth - 1`` (``Backbone.encode_text(..., prefix=ctx, deep=[...])``). The two text embeddings, normalised,
are the ``[normal, abnormal]`` prototypes of every class, for the image score and the pixel map alike.

Official detail kept for parity: the deep prompts enter the text tower **cast to float16** (the official
``.half()``; they act rounded to float16, and each sentence's gradient is rounded to float16 on its way back).
``deep_precision="float32"`` drops the rounding.

The design (``n_ctx``, ``depth``, ``t_n_ctx``) comes from the checkpoint's shapes when there is one; otherwise
from ``prompts.n_tokens`` and the ``depth`` / ``deep_tokens`` options (official defaults 12, 9, 4), initialised
N(0, 0.02²) like the official prompt learner.

Example (a tiny random CLIP):
    >>> from zsad.testing import tiny_backbone
    >>> bb = tiny_backbone("open_clip")
    >>> p = ObjectAgnosticPrompts(n_ctx=4, depth=2, deep_tokens=2).bind(bb)
    >>> p.local_prototypes(bb, ["screw"]).shape, [tuple(t.shape) for t in p.deep_prompt_tokens()]
    (torch.Size([1, 2, 32]), [(2, 32)])
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

from zsad.errors import ConfigError
from zsad.prompts.base import PromptStrategy, ensemble_prototype, learnable_width
from zsad.prompts.checkpoint import AnomalyClipTokens, load_anomalyclip_checkpoint, save_anomalyclip_checkpoint
from zsad.prompts.templates import get_prompt_list, normalize_class_name

__all__ = ["ObjectAgnosticPrompts", "object_agnostic_from_config"]


class ObjectAgnosticPrompts(PromptStrategy):
    """AnomalyCLIP's learnable prompts (see the module docstring).

    Args:
        n_ctx: context tokens per sentence (random initialisation only).
        depth: 1 + the number of deep prompts (random initialisation only; 1 = no deep prompts).
        deep_tokens: tokens per deep prompt, ``t_n_ctx`` (random initialisation only).
        checkpoint: an AnomalyCLIP prompt learner: official ``.pth``, zsad ``.safetensors`` or a built-in name
            (``anomalyclip-visa``, ``anomalyclip-mvtec``); its shapes set the design.
        prompt_list: the sentences after the contexts (``anomalyclip``: ``"{}."`` / ``"damaged {}."``).
        class_word: the word put into the sentences (``object``).
        deep_precision: ``"float16"`` (official rounding of the deep prompts) or ``"float32"``.
        init_std: standard deviation of the random initialisation.
        seed: seed of the random initialisation.
    """

    class_agnostic_local = True
    shared_prototypes = True

    def __init__(
        self,
        n_ctx: int = 12,
        depth: int = 9,
        deep_tokens: int = 4,
        checkpoint: str | Path | None = None,
        prompt_list: str = "anomalyclip",
        class_word: str = "object",
        deep_precision: Literal["float16", "float32"] = "float16",
        init_std: float = 0.02,
        seed: int = 111,
    ) -> None:
        super().__init__()
        for name, value, low in (("n_tokens (n_ctx)", n_ctx, 1), ("depth", depth, 1), ("deep_tokens", deep_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"prompts {name} must be a whole number >= {low}, got {value!r}.")
        if deep_precision not in ("float16", "float32"):
            raise ConfigError(f"prompts.options.deep_precision must be 'float16' or 'float32', got {deep_precision!r}.")
        get_prompt_list(prompt_list)
        self.prompt_list, self.class_word, self.deep_precision = prompt_list, class_word, deep_precision
        self.design = {"n_ctx": n_ctx, "depth": depth, "t_n_ctx": deep_tokens}
        self.init_std, self.seed = float(init_std), int(seed)
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.metadata: dict[str, str] = {}
        self.ctx_pos: nn.Parameter | None = None
        self.ctx_neg: nn.Parameter | None = None
        self.deep = nn.ParameterList()
        if checkpoint is not None:
            tokens = load_anomalyclip_checkpoint(checkpoint)
            self.metadata = tokens.meta
            self._set(tokens)

    # -- tokens ----------------------------------------------------------------------------------------------------
    def _set(self, tokens: AnomalyClipTokens) -> None:
        with torch.inference_mode(False):  # trainable even when built inside an inference_mode block
            self.ctx_pos = nn.Parameter(tokens.ctx_pos.detach().clone().float())
            self.ctx_neg = nn.Parameter(tokens.ctx_neg.detach().clone().float())
            self.deep = nn.ParameterList([nn.Parameter(t.detach().clone().float()) for t in tokens.deep])
        self.design = tokens.design if tokens.deep else {**tokens.design, "t_n_ctx": self.design["t_n_ctx"]}
        self.invalidate()

    def _random(self, width: int) -> AnomalyClipTokens:
        gen = torch.Generator().manual_seed(self.seed)
        draw = lambda n: torch.randn(n, width, generator=gen) * self.init_std  # noqa: E731
        n, depth, t = self.design["n_ctx"], self.design["depth"], self.design["t_n_ctx"]
        return AnomalyClipTokens(draw(n), draw(n), tuple(draw(t) for _ in range(depth - 1)))

    def initialize(self, seed: int) -> None:
        """Redraw every token from N(0, init_std²) with ``seed`` (once the width is known)."""
        self.seed = int(seed)
        if self.ctx_pos is not None:
            device = self.ctx_pos.device
            self._set(self._random(int(self.ctx_pos.shape[1])))
            self.to(device)
            self.checkpoint = None

    def bind(self, backbone) -> "ObjectAgnosticPrompts":
        """Check (or create) the tokens for *backbone*'s text tower; widths that do not fit are refused."""
        name = type(backbone).__name__
        fix = ("use prompts trained for this backbone (the released anomalyclip-visa / anomalyclip-mvtec fit "
               "ViT-L-14-336:openai, 768 wide) or train new ones with `zsad train --recipe anomalyclip`.")
        width = learnable_width(backbone, self.ctx_pos, f"The AnomalyCLIP prompts ({self.checkpoint or 'random init'})",
                                fix)
        if self.ctx_pos is None:
            self._set(self._random(width))
        if len(self.deep) and not backbone.supports_deep_prompts:
            raise ConfigError(
                f"The AnomalyCLIP prompts have {len(self.deep)} deep prompts but the text tower of {name} does not take "
                "deep prompts (supports_deep_prompts is False); use a backbone that does, e.g. 'open_clip'."
            )
        if backbone.text_layers and len(self.deep) > backbone.text_layers - 1:
            raise ConfigError(
                f"The AnomalyCLIP prompts ({self.checkpoint or 'random init'}) have depth {len(self.deep) + 1} "
                f"({len(self.deep)} deep prompts) but the text tower of {name} has {backbone.text_layers} blocks, so "
                f"at most depth {backbone.text_layers}; set prompts.options.depth <= {backbone.text_layers} or use "
                "prompts made for this text tower."
            )
        if self.ctx_pos.device != backbone.device:
            self.to(backbone.device)
        return self

    def prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        """``(ctx_pos, ctx_neg)``: the normal and abnormal contexts, ``(n_ctx, width)`` each (once bound)."""
        return () if self.ctx_pos is None or self.ctx_neg is None else (self.ctx_pos, self.ctx_neg)

    def deep_prompt_tokens(self) -> tuple[torch.Tensor, ...]:
        """The deep prompts of text blocks ``1 .. depth - 1``, ``(t_n_ctx, width)`` each."""
        return tuple(self.deep)

    @property
    def trained(self) -> bool:
        """True when the tokens come from a checkpoint (or training), False for a random initialisation."""
        return self.checkpoint is not None

    def mark_trained(self, source: str = "<trained in memory>") -> None:
        self.checkpoint = source

    def _tokens(self) -> AnomalyClipTokens:
        if self.ctx_pos is None or self.ctx_neg is None:
            raise ConfigError("The AnomalyCLIP prompts are not bound to a backbone yet (call bind(backbone)).")
        return AnomalyClipTokens(self.ctx_pos, self.ctx_neg, tuple(self.deep))

    def token_tensors(self) -> dict[str, torch.Tensor]:
        return self._tokens().tensors()

    def checkpoint_metadata(self) -> dict[str, str]:
        return {"method": "anomalyclip", "prompt_list": self.prompt_list, "class_word": self.class_word,
                "deep_precision": self.deep_precision, **{k: str(v) for k, v in self.design.items()}}

    def save_tokens(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write the contexts and deep prompts to a zsad ``.safetensors`` prompt checkpoint."""
        return save_anomalyclip_checkpoint(path, self._tokens(), {**self.checkpoint_metadata(), **(metadata or {})})

    # -- prototypes ------------------------------------------------------------------------------------------------
    def _deep_inputs(self) -> list[torch.Tensor] | None:
        """The deep prompts as the text tower gets them, cast anew for every call (see the module docstring)."""
        if not len(self.deep):
            return None
        return [t.half() if self.deep_precision == "float16" else t for t in self.deep]

    def _state(self, backbone, sentences: Sequence[str], context: torch.Tensor) -> torch.Tensor:
        embeddings = torch.cat([backbone.encode_text([s], prefix=context, deep=self._deep_inputs()) for s in sentences])
        return embeddings[0] if len(sentences) == 1 else ensemble_prototype(embeddings)

    def local_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        self.bind(backbone)
        tokens = self._tokens()
        normal, abnormal = get_prompt_list(self.prompt_list).sentences(normalize_class_name(self.class_word))
        pair = [self._state(backbone, normal, tokens.ctx_pos), self._state(backbone, abnormal, tokens.ctx_neg)]
        return torch.stack(pair).unsqueeze(0)

    def global_prototypes(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        return self.local_prototypes(backbone, class_names).expand(len(class_names), -1, -1)


def object_agnostic_from_config(cfg) -> ObjectAgnosticPrompts:
    """Registry factory: AnomalyCLIP prompts from a :class:`~zsad.config.PromptConfig`.

    Uses ``n_tokens`` (n_ctx), ``checkpoint``, ``learned_list`` (default ``anomalyclip``), ``class_word`` and the
    ``options`` ``depth``, ``deep_tokens``, ``deep_precision``, ``init_std``, ``seed``.
    """
    return ObjectAgnosticPrompts(
        cfg.n_tokens, checkpoint=cfg.checkpoint, prompt_list=cfg.learned_list or "anomalyclip",
        class_word=cfg.class_word, **cfg.options,
    )
