"""Contract checks of prompt strategies and prompt training."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from zsad.testing._common import _check_normalised, _expect
from zsad.testing.backbones import _as_backbone, tiny_backbone  # noqa: F401 (doctests)

#: options fitting each built-in prompt strategy to the tiny backbones (whose text towers have 2 blocks)
TINY_PROMPT_OPTIONS: dict[str, dict[str, Any]] = {"object_agnostic": {"depth": 2, "deep_tokens": 2}}


def tiny_prompts(name: str, n_tokens: int = 4):
    """Build the registered prompt strategy *name* from random tokens sized for the tiny backbones.

    Built-ins take :data:`TINY_PROMPT_OPTIONS`; a plugin factory may declare its own as a ``zsad_tiny_options``
    attribute (``prompts.options``).

    Example:
        >>> [tuple(t.shape) for t in tiny_prompts("object_agnostic").bind(tiny_backbone("open_clip")).deep_prompt_tokens()]
        [(2, 32)]
    """
    from zsad.components import PROMPTS, create_prompts
    from zsad.config import PromptConfig

    options = TINY_PROMPT_OPTIONS.get(name)
    if options is None:
        options = getattr(PROMPTS.get(name), "zsad_tiny_options", None) or {}
    return create_prompts(name, PromptConfig(strategy=name, checkpoint=None, n_tokens=n_tokens, options=dict(options)))


# ------------------------------------------------------------------------------------------------------------
# prompt strategies
# ------------------------------------------------------------------------------------------------------------
def check_prompt_strategy(strategy: Any, backbone: Any, class_names: Sequence[str] = ("metal_nut", "pipe fryum")) -> None:
    """Check a prompt strategy against the :class:`~zsad.prompts.base.PromptStrategy` contract on *backbone*.

    Checks prototype shapes ``(C, 2, D)`` (``(1, 2, D)`` when ``class_agnostic_local``), normalisation and finite
    values, ``.to()``, hashable and stable cache tokens that change when learnable tokens change in place, and
    gradients from the prototypes to every learnable parameter. ``strategy`` may be a registered name.

    Example:
        >>> from zsad.prompts.fixed import FixedPrompts
        >>> check_prompt_strategy(FixedPrompts("industrial"), tiny_backbone("tips"))
    """
    from zsad.prompts.base import PromptStrategy

    if isinstance(strategy, str):
        from zsad.components import create_prompts

        strategy = create_prompts(strategy)
    backbone = _as_backbone(backbone)
    name = type(strategy).__name__
    _expect(isinstance(strategy, PromptStrategy),
            f"{name} does not subclass zsad.prompts.base.PromptStrategy (an nn.Module moved with the detector).")
    bound = strategy.bind(backbone)
    _expect(bound is strategy, f"{name}.bind(backbone) returned {type(bound).__name__}, not the strategy itself.")
    _expect(strategy.to("cpu") is strategy, f"{name}.to('cpu') did not return the strategy itself.")
    _check_token_declarations(strategy, name)
    names = list(class_names)
    d = backbone.embed_dim
    params = list(strategy.learnable_parameters())
    with torch.enable_grad() if params else torch.no_grad():  # one pass serves the shape and gradient checks
        g = strategy.global_prototypes(backbone, names)
        loc = strategy.local_prototypes(backbone, names)
    _expect(tuple(g.shape) == (len(names), 2, d),
            f"{name}.global_prototypes({len(names)} classes) has shape {tuple(g.shape)}, expected ({len(names)}, 2, {d}).")
    _check_normalised(g.float(), f"{name}.global_prototypes(...)", d)
    rows = 1 if strategy.class_agnostic_local else len(names)
    _expect(tuple(loc.shape) == (rows, 2, d),
            f"{name}.local_prototypes({len(names)} classes) has shape {tuple(loc.shape)}, expected ({rows}, 2, {d}) "
            f"(class_agnostic_local={strategy.class_agnostic_local}).")
    _check_normalised(loc.float(), f"{name}.local_prototypes(...)", d)
    tokens = {}
    for kind in ("global", "local"):
        token = strategy.cache_token(kind)
        _expect(isinstance(token, Hashable), f"{name}.cache_token({kind!r}) is not hashable: {token!r}.")
        hash(token)
        _expect(strategy.cache_token(kind) == token, f"{name}.cache_token({kind!r}) changes between two calls.")
        tokens[kind] = token
    if not params:
        return
    gen = torch.Generator().manual_seed(2)
    loss = (loc * torch.randn(loc.shape, generator=gen)).sum() + (g * torch.randn(g.shape, generator=gen)).sum()
    _expect(loss.requires_grad, f"{name}: the prototypes do not depend on its learnable parameters (no graph).")
    loss.backward()
    for i, p in enumerate(params):
        _expect(p.grad is not None and float(p.grad.abs().max()) > 0,
                f"{name}.learnable_parameters()[{i}] (shape {tuple(p.shape)}) gets no gradient from the prototypes.")
        p.grad = None
    saved = params[0].detach().clone()
    with torch.no_grad():
        params[0].add_(0.01)  # what an optimiser step does
    try:
        changed = [k for k in ("global", "local") if strategy.cache_token(k) != tokens[k]]
    finally:
        with torch.no_grad():
            params[0].copy_(saved)
    _expect(bool(changed), f"{name}.cache_token does not change when a learnable parameter changes in place; the "
            "detector would keep serving stale prototypes after a training step.")


def _check_token_declarations(strategy, name: str) -> None:
    """``prompt_tokens`` / ``deep_prompt_tokens`` are parameters the strategy owns; ``trained`` is a bool; tokens save."""
    import tempfile
    from pathlib import Path

    owned = {id(p) for p in strategy.parameters()}
    for method in ("prompt_tokens", "deep_prompt_tokens"):
        tokens = getattr(strategy, method)()
        _expect(isinstance(tokens, tuple), f"{name}.{method}() must return a tuple of tensors, got {type(tokens).__name__}.")
        for i, t in enumerate(tokens):
            _expect(isinstance(t, torch.nn.Parameter) and id(t) in owned,
                    f"{name}.{method}()[{i}] is not a parameter of the strategy (it would not move with .to() nor "
                    "be found by the trainer).")
    _expect(isinstance(strategy.trained, bool), f"{name}.trained must be a bool, got {strategy.trained!r}.")
    _expect(strategy.has_learnable_tokens == bool(strategy.prompt_tokens() or strategy.deep_prompt_tokens()),
            f"{name}.has_learnable_tokens disagrees with prompt_tokens() / deep_prompt_tokens().")
    if strategy.has_learnable_tokens:
        with tempfile.TemporaryDirectory() as folder:
            path = strategy.save_tokens(Path(folder) / "prompts.safetensors")
            _expect(Path(path).is_file(), f"{name}.save_tokens(path) wrote no file.")


def check_prompt_training(backbone_or_factory: Any, image_size: int | None = None, *, n_tokens: int = 4) -> dict:
    """Check that prompt learning works on a backbone: one :class:`~zsad.training.PromptTrainer` step.

    Builds a detector with decoupled prompts around the backbone (which it freezes and puts in eval mode), takes
    one step on random images with a square anomaly, and checks finite losses, non-zero gradients on both token
    sets and updated tokens. Returns the step's losses.

    Example:
        >>> sorted(check_prompt_training("tips"))
        ['dice_neg', 'dice_pos', 'focal', 'total']
    """
    from zsad.config import DetectorConfig
    from zsad.detector import Detector
    from zsad.training import PromptTrainer

    bb = _as_backbone(backbone_or_factory)
    name = type(bb).__name__
    _expect(bb.supports_learnable_prompts, f"{name} does not take learnable prompts (supports_learnable_prompts).")
    size = int(image_size or bb.default_image_size)
    config = DetectorConfig(
        name="zsad-testing",
        backbone={"name": name},
        prompts={"strategy": "decoupled", "checkpoint": None, "n_tokens": n_tokens},
        preprocess={"image_size": size},
    )
    trainer = PromptTrainer(Detector(config, device="cpu", backbone=bb))
    before = trainer.prompt_tokens()
    masks = torch.zeros(2, size, size)
    masks[0, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    losses = trainer.step(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(4)), masks)
    _expect(all(math.isfinite(v) for v in losses.values()), f"PromptTrainer on {name}: non-finite losses {losses}.")
    for label, grad in zip(("T_n", "T_a"), trainer.last_gradients()):
        _expect(float(grad.abs().max()) > 0, f"PromptTrainer on {name}: the loss gives no gradient on {label}.")
    for label, old, new in zip(("T_n", "T_a"), before, trainer.prompt_tokens()):
        _expect(not torch.equal(old, new), f"PromptTrainer on {name}: one step left {label} unchanged.")
    return losses

