"""Public contract checks for backbones, prompt strategies and scoring heads (for plugin authors).

Like scikit-learn's ``check_estimator``: run the checks in your plugin's tests and every broken promise of the
contract fails with an ``AssertionError`` that says which call returned what, and what was expected.

* :func:`check_backbone`: roles, shapes, fp32 dtypes, L2 normalisation, determinism, batch independence,
  ``.to()`` moves (device and bfloat16 weights), gradients reaching learnable prompt tokens, image-size checks;
* :func:`check_prompt_strategy`: prototype shapes and normalisation, cache tokens, gradients to its tokens;
* :func:`check_prompt_training`: one prompt-learning step on the backbone updates the tokens;
* :func:`check_head`: image heads (``(B,)`` scores) and pixel heads (``(B, H, W)`` maps), monotone in p_a;
* :func:`check_export`: a detector on the backbone exports to ONNX and ONNX Runtime / OpenVINO reproduce its
  scores and maps;
* :func:`parametrize_backbones` / :func:`check_all_builtins`: run them over registered components with tiny
  random weights (:data:`TINY_OPTIONS`; a plugin factory can declare its own with a ``zsad_tiny_options``
  attribute).

Example (a plugin's test module)::

    from zsad.testing import check_backbone, check_head, parametrize_backbones

    def test_my_backbone():
        check_backbone(lambda: MyBackbone(width=8))

    @parametrize_backbones(["my_backbone"])
    def test_registered(backbone):
        check_backbone(backbone)

Example (doctest, a tiny random TIPS model):
    >>> bb = check_backbone("tips")
    >>> type(bb).__name__
    'TipsBackbone'
    >>> check_head("S5")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "TINY_OPTIONS",
    "TINY_VARIANTS",
    "check_all_builtins",
    "check_export",
    "check_backbone",
    "check_head",
    "check_prompt_strategy",
    "check_prompt_training",
    "parametrize_backbones",
    "tiny_backbone",
    "tiny_options",
]

#: factory options building each built-in backbone with tiny random weights (no download)
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "tips": {"checkpoint": None, "random_arch": {}},
    "open_clip": {"checkpoint": None, "model_config": "tiny"},
    "siglip2": {"checkpoint": None, "random_config": "tiny"},
}

#: test ids -> (registered name, options): every built-in backbone and its notable variants
TINY_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tips": ("tips", TINY_OPTIONS["tips"]),
    "tips-value": ("tips", {**TINY_OPTIONS["tips"], "dense_readout": "value"}),
    "open_clip": ("open_clip", TINY_OPTIONS["open_clip"]),
    "siglip2": ("siglip2", TINY_OPTIONS["siglip2"]),
    "siglip2-naflex": ("siglip2", {"checkpoint": None, "random_config": "tiny-naflex"}),
}

#: variants with distinct text towers, on which :func:`check_all_builtins` checks the prompt strategies
_PROMPT_VARIANTS = ("tips", "open_clip", "siglip2")
_TEXTS = ["a photo of a flawless metal nut.", "a photo of a damaged object with a scratch."]
_ATOL = 1e-5


def _fail(message: str) -> None:
    raise AssertionError(message)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ------------------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------------------
def tiny_options(name: str) -> dict[str, Any]:
    """Options building the registered backbone *name* with tiny random weights.

    Built-ins come from :data:`TINY_OPTIONS`; a plugin factory declares them as its ``zsad_tiny_options``
    attribute (e.g. ``create_my_backbone.zsad_tiny_options = {"width": 8}``).

    Example:
        >>> tiny_options("open_clip")
        {'checkpoint': None, 'model_config': 'tiny'}
    """
    if name in TINY_OPTIONS:
        return dict(TINY_OPTIONS[name])
    from zsad.components import BACKBONES

    options = getattr(BACKBONES.get(name), "zsad_tiny_options", None)
    if options is None:
        _fail(
            f"Backbone {name!r} declares no tiny test configuration: give its factory a `zsad_tiny_options` dict "
            "attribute (factory keyword arguments building small random weights), or pass a built backbone."
        )
    return dict(options)


def tiny_backbone(name: str, **options: Any):
    """Build the registered backbone *name* with tiny random weights (see :func:`tiny_options`).

    Example:
        >>> tiny_backbone("siglip2", random_config="tiny-naflex").naflex
        True
    """
    from zsad.components import create_backbone

    return create_backbone(name, **{**tiny_options(name), **options})


def _as_backbone(backbone_or_factory: Any):
    from zsad.backbones.base import Backbone

    obj = backbone_or_factory
    if isinstance(obj, str):
        obj = tiny_backbone(obj)
    elif not isinstance(obj, Backbone) and callable(obj):
        obj = obj()
    if not isinstance(obj, Backbone):
        _fail(
            f"check_backbone got a {type(obj).__name__}; a backbone must subclass zsad.backbones.base.Backbone "
            "(pass a backbone, a zero-argument factory, or a registered name)."
        )
    return obj


# ------------------------------------------------------------------------------------------------------------
# backbones
# ------------------------------------------------------------------------------------------------------------
def _check_normalised(t: torch.Tensor, what: str, dim: int | None = None) -> None:
    _expect(isinstance(t, torch.Tensor), f"{what} is a {type(t).__name__}, not a torch.Tensor.")
    _expect(
        t.dtype == torch.float32,
        f"{what} has dtype {t.dtype}; the contract requires float32 (cast with zsad.backbones.base.l2_normalize).",
    )
    if dim is not None:
        _expect(t.shape[-1] == dim, f"{what} has width {t.shape[-1]}, but the backbone declares embed_dim={dim}.")
    _expect(bool(torch.isfinite(t).all()), f"{what} holds non-finite values (nan or inf).")
    norms = t.detach().norm(dim=-1)
    worst = float((norms - 1).abs().max()) if norms.numel() else 0.0
    _expect(worst < 1e-4, f"{what} is not L2-normalised along the last axis (a norm is off from 1 by {worst:.3g}).")


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two tensors (0 for empty ones)."""
    return float((a.detach().float() - b.detach().float()).abs().max()) if a.numel() else 0.0


def _check_features(bb, f, batch: int, size: int, label: str) -> None:
    from zsad.backbones.base import ImageFeatures

    _expect(isinstance(f, ImageFeatures), f"{label} returned {type(f).__name__}, not zsad ImageFeatures.")
    for role in ("object", "spatial"):
        _expect(role in f.globals, f"{label}.globals lacks the role {role!r} (has {sorted(f.globals)}); "
                "single-token backbones return the same tensor under both roles.")
        g = f.globals[role]
        _expect(tuple(g.shape) == (batch, bb.embed_dim),
                f"{label}.globals[{role!r}] has shape {tuple(g.shape)}, expected ({batch}, {bb.embed_dim}).")
        _check_normalised(g, f"{label}.globals[{role!r}]", bb.embed_dim)
    rows, cols = f.grid
    _expect(f.patches.ndim == 3 and f.patches.shape[0] == batch,
            f"{label}.patches has shape {tuple(f.patches.shape)}, expected ({batch}, N, {bb.embed_dim}).")
    _expect(rows * cols == f.patches.shape[1],
            f"{label}.grid={f.grid} does not hold the {f.patches.shape[1]} patches ({rows}x{cols}={rows * cols}).")
    _expect(rows == cols, f"{label}.grid={f.grid} is not square for a square {size}x{size} input.")
    _check_normalised(f.patches, f"{label}.patches", bb.embed_dim)


def check_backbone(backbone_or_factory: Any, image_size: int | None = None, *, check_bfloat16: bool = True):
    """Check a backbone against the :class:`~zsad.backbones.base.Backbone` contract; return it.

    Args:
        backbone_or_factory: a backbone, a zero-argument factory, or a registered name (built with
            :func:`tiny_backbone`).
        image_size: square input size to test (default: the backbone's ``default_image_size``).
        check_bfloat16: also check that the outputs stay fp32 with bfloat16 weights (the detector's ``dtype``);
            the weights are restored exactly afterwards.

    Raises:
        AssertionError: naming the call, what it returned and what the contract expects.

    Example:
        >>> check_backbone("open_clip").similarity
        'softmax'
    """
    from zsad.backbones.base import Preprocessing
    from zsad.errors import ConfigError

    bb = _as_backbone(backbone_or_factory)
    name = type(bb).__name__
    # -- declarations
    for attr in ("embed_dim", "patch_size", "default_image_size"):
        value = getattr(bb, attr, None)
        _expect(isinstance(value, int) and value > 0, f"{name}.{attr} must be a positive int, got {value!r}.")
    _expect(bb.similarity in ("softmax", "sigmoid"),
            f"{name}.similarity must be 'softmax' or 'sigmoid', got {bb.similarity!r}.")
    pre = bb.preprocessing
    _expect(isinstance(pre, Preprocessing), f"{name}.preprocessing is a {type(pre).__name__}, not a Preprocessing.")
    _expect(len(pre.mean) == 3 and len(pre.std) == 3 and all(s > 0 for s in pre.std),
            f"{name}.preprocessing needs 3 means and 3 positive stds, got mean={pre.mean} std={pre.std}.")
    _expect(pre.resample in ("bilinear", "bicubic", "nearest"),
            f"{name}.preprocessing.resample must be bilinear, bicubic or nearest, got {pre.resample!r}.")
    # -- image sizes
    size = int(image_size or bb.default_image_size)
    try:
        bb.check_image_size(size)
    except ConfigError as exc:
        _fail(f"{name}.check_image_size({size}) rejected its own test size: {exc}")
    for bad in (0, size + 1) if bb.patch_size > 1 else (0,):
        try:
            bb.check_image_size(bad)
        except ValueError:
            continue
        _fail(f"{name}.check_image_size({bad}) did not raise; sizes the backbone cannot take must raise "
              "zsad.errors.ConfigError with the nearest valid sizes.")
    # -- device move
    moved = bb.to("cpu")
    _expect(moved is bb, f"{name}.to('cpu') returned {type(moved).__name__}, not the backbone itself.")
    _expect(bb.device.type == "cpu", f"{name}.device is {bb.device} after .to('cpu').")
    bb.eval()
    # -- images
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, size, size, generator=gen)
    with torch.inference_mode():
        f1 = bb.encode_image(pixels)
    _check_features(bb, f1, 2, size, f"{name}.encode_image(2x3x{size}x{size}) under torch.inference_mode")
    with torch.no_grad():
        f2 = bb.encode_image(pixels)
        f_one = bb.encode_image(pixels[1:])
    _check_features(bb, f2, 2, size, f"{name}.encode_image(2x3x{size}x{size})")
    diff = max([_diff(f1.patches, f2.patches)] + [_diff(f1.globals[r], f2.globals[r]) for r in f1.globals])
    _expect(diff <= _ATOL, f"{name}.encode_image is not deterministic: two calls on the same pixels differ by {diff:.3g}.")
    _expect(f_one.grid == f2.grid, f"{name}.encode_image grid changes with the batch size: {f_one.grid} vs {f2.grid}.")
    diff = max([_diff(f_one.patches[0], f2.patches[1])]
               + [_diff(f_one.globals[r][0], f2.globals[r][1]) for r in ("object", "spatial")])
    _expect(diff <= 1e-4, f"{name}.encode_image of an image depends on the other images in its batch "
            f"(batch of 2 vs alone differ by {diff:.3g}).")
    # -- texts
    with torch.no_grad():
        t1, t2 = bb.encode_text(_TEXTS), bb.encode_text(_TEXTS)
        t_one = bb.encode_text(_TEXTS[1:])
    _expect(tuple(t1.shape) == (2, bb.embed_dim),
            f"{name}.encode_text(2 texts) has shape {tuple(t1.shape)}, expected (2, {bb.embed_dim}).")
    _check_normalised(t1, f"{name}.encode_text(2 texts)", bb.embed_dim)
    _expect(_diff(t1, t2) <= _ATOL, f"{name}.encode_text is not deterministic.")
    _expect(_diff(t_one[0], t1[1]) <= 1e-4,
            f"{name}.encode_text of a text depends on the other texts in its batch.")
    # -- similarity
    probs = bb.probabilities(f2.patches, t1.unsqueeze(0))
    n = f2.patches.shape[1]
    _expect(tuple(probs.shape) == (2, n, 2),
            f"{name}.probabilities(patches (2,{n},D), prototypes (1,2,D)) has shape {tuple(probs.shape)}, "
            f"expected (2, {n}, 2).")
    _expect(bool(((probs >= 0) & (probs <= 1)).all()), f"{name}.probabilities returned values outside [0, 1].")
    if bb.similarity == "softmax":
        _expect(_diff(probs.sum(-1), torch.ones_like(probs[..., 0])) <= 1e-4,
                f"{name}.probabilities does not sum to 1 over [normal, abnormal] although similarity='softmax'.")
    # -- learnable prompts
    if bb.supports_learnable_prompts:
        _check_prefix(bb, name)
    # -- bfloat16 weights
    if check_bfloat16:
        _check_bfloat16(bb, name, pixels)
    return bb


def _check_prefix(bb, name: str) -> None:
    width = bb.prompt_width
    _expect(isinstance(width, int) and width > 0,
            f"{name}.supports_learnable_prompts is True but prompt_width={width!r}; declare the token width.")
    gen = torch.Generator().manual_seed(1)
    prefix = (0.02 * torch.randn(4, width, generator=gen)).requires_grad_(True)
    flags = [p.requires_grad for p in bb.parameters()]
    bb.requires_grad_(False)  # frozen, as in prompt training: the gradient must still reach the prefix
    try:
        out = bb.encode_text(_TEXTS, prefix=prefix)
        _expect(out.requires_grad, f"{name}.encode_text(..., prefix=p): no gradient reaches p (the output has no "
                "graph back to it; was p detached or ignored?).")
        (out * torch.randn(out.shape, generator=gen)).sum().backward()
    finally:
        for p, flag in zip(bb.parameters(), flags):
            p.requires_grad_(flag)
    _expect(tuple(out.shape) == (2, bb.embed_dim),
            f"{name}.encode_text(2 texts, prefix=(4,{width})) has shape {tuple(out.shape)}, expected (2, {bb.embed_dim}).")
    _check_normalised(out, f"{name}.encode_text(..., prefix=...)", bb.embed_dim)
    grad = prefix.grad
    _expect(grad is not None, f"{name}.encode_text(..., prefix=p): no gradient reaches p (it was detached).")
    _expect(bool(torch.isfinite(grad).all()), f"{name}.encode_text(..., prefix=p): the gradient on p is not finite.")
    _expect(float(grad.abs().max()) > 0, f"{name}.encode_text(..., prefix=p): the gradient on p is zero everywhere.")
    with torch.no_grad():
        plain = bb.encode_text(_TEXTS)
    _expect(_diff(out, plain) > 1e-6, f"{name}.encode_text ignores prefix: with and without it the outputs agree.")
    wrong = torch.zeros(2, width + 1)
    try:
        bb.encode_text(_TEXTS, prefix=wrong)
    except ValueError:
        pass
    else:
        _fail(f"{name}.encode_text accepted prefix tokens of width {width + 1} although prompt_width={width}; "
              "raise zsad.errors.ConfigError for prompts trained for another text tower.")


def _check_bfloat16(bb, name: str, pixels: torch.Tensor) -> None:
    saved = {k: v.detach().clone() for k, v in bb.state_dict(keep_vars=True).items()}
    try:
        bb.to(dtype=torch.bfloat16)
        with torch.inference_mode():
            f = bb.encode_image(pixels)
            t = bb.encode_text(_TEXTS)
        for role, g in f.globals.items():
            _expect(g.dtype == torch.float32, f"{name}.encode_image with bfloat16 weights returns globals[{role!r}] in "
                    f"{g.dtype}; outputs must be float32 whatever the weights (Detector(dtype='bfloat16')).")
        _expect(f.patches.dtype == torch.float32,
                f"{name}.encode_image with bfloat16 weights returns patches in {f.patches.dtype}, not float32.")
        _expect(t.dtype == torch.float32,
                f"{name}.encode_text with bfloat16 weights returns {t.dtype}, not float32.")
    finally:
        bb.to(dtype=torch.float32)
        with torch.no_grad():
            for key, value in bb.state_dict(keep_vars=True).items():
                if key in saved:
                    value.copy_(saved[key])


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
    if hasattr(strategy, "bind"):
        strategy.bind(backbone)
    _expect(strategy.to("cpu") is strategy, f"{name}.to('cpu') did not return the strategy itself.")
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


# ------------------------------------------------------------------------------------------------------------
# heads
# ------------------------------------------------------------------------------------------------------------
def _score_inputs(p_abnormal: torch.Tensor | float, batch: int = 3, grid: tuple[int, int] = (3, 4), gen=None):
    from zsad.heads.base import ScoreInputs

    n = grid[0] * grid[1]
    if isinstance(p_abnormal, float):
        pa_global = torch.full((batch, 1), p_abnormal)
        pa_patch = torch.full((batch, n, 1), p_abnormal)
    else:
        pa_global = torch.rand(batch, 1, generator=gen)
        pa_patch = torch.rand(batch, n, 1, generator=gen)
    g = torch.cat([1 - pa_global, pa_global], dim=-1)
    return ScoreInputs({"object": g, "spatial": g.flip(0).contiguous()}, torch.cat([1 - pa_patch, pa_patch], -1), grid)


def check_head(head: Any) -> None:
    """Check an image head (``ScoreInputs -> (B,)``) or a pixel head (``(B, N, 2), grid, size -> (B, H, W)``).

    ``head`` is a head, a zero-argument factory, or a registered name. Checks shapes, finite floating outputs,
    determinism, batch independence and that uniformly more abnormal inputs never score lower.

    Example:
        >>> check_head("pixel_map")
    """
    from zsad.heads.base import ImageHead, PixelHead

    if isinstance(head, str):
        from zsad.components import create_head

        head = create_head(head)
    elif not isinstance(head, torch.nn.Module) and callable(head):
        head = head()
    name = type(head).__name__
    gen = torch.Generator().manual_seed(3)
    if isinstance(head, ImageHead):
        x = _score_inputs(torch.empty(0), gen=gen)
        out = head(x)
        _expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (3,),
                f"{name}(ScoreInputs of 3 images) returned {getattr(out, 'shape', type(out).__name__)}, expected (3,).")
        _expect(out.is_floating_point() and bool(torch.isfinite(out).all()),
                f"{name} returned non-float or non-finite scores: {out}.")
        _expect(_diff(head(x), out) <= _ATOL, f"{name} is not deterministic.")
        from zsad.heads.base import ScoreInputs

        one = ScoreInputs({r: v[1:2] for r, v in x.global_probs.items()}, x.patch_probs[1:2], x.grid)
        _expect(_diff(head(one)[0], out[1]) <= 1e-5, f"{name}: an image's score depends on the other images.")
        low, high = head(_score_inputs(0.1)), head(_score_inputs(0.9))
        _expect(bool((high >= low).all()), f"{name} scores uniformly abnormal inputs (p_a=0.9) below uniformly normal "
                f"ones (p_a=0.1): {high.tolist()} < {low.tolist()}; higher must mean more anomalous.")
    elif isinstance(head, PixelHead):
        x = _score_inputs(torch.empty(0), gen=gen)
        size = (30, 44)
        out = head(x.patch_probs, x.grid, size)
        _expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (3, *size),
                f"{name}(patch_probs (3,12,2), grid (3,4), size {size}) returned "
                f"{getattr(out, 'shape', type(out).__name__)}, expected (3, {size[0]}, {size[1]}).")
        _expect(out.is_floating_point() and bool(torch.isfinite(out).all()), f"{name} returned non-finite maps.")
        _expect(_diff(head(x.patch_probs, x.grid, size), out) <= _ATOL, f"{name} is not deterministic.")
        _expect(_diff(head(x.patch_probs[1:2], x.grid, size)[0], out[1]) <= 1e-5,
                f"{name}: an image's map depends on the other images in the batch.")
        low = head(_score_inputs(0.1).patch_probs, x.grid, size)
        high = head(_score_inputs(0.9).patch_probs, x.grid, size)
        _expect(bool((high >= low - 1e-6).all()), f"{name} maps uniformly abnormal patches below uniformly normal ones.")
    else:
        _fail(f"{name} is neither a zsad.heads.base.ImageHead nor a PixelHead; subclass one of them.")


# ------------------------------------------------------------------------------------------------------------
# registries
# ------------------------------------------------------------------------------------------------------------
def parametrize_backbones(names: Iterable[str] | None = None, argname: str = "backbone"):
    """A ``pytest.mark.parametrize`` over tiny random backbones, each passed as a zero-argument factory.

    ``names`` are registered backbone names (plugins declare tiny options with ``zsad_tiny_options``); default:
    every built-in variant of :data:`TINY_VARIANTS`. Models are built inside the test, not at collection.

    Example:
        >>> mark = parametrize_backbones(["tips"])
        >>> mark.args[0], len(mark.args[1])
        ('backbone', 1)
    """
    import functools

    import pytest

    if names is None:
        params = [pytest.param(functools.partial(_build, name, options), id=test_id)
                  for test_id, (name, options) in TINY_VARIANTS.items()]
    else:  # options are looked up when the test runs: collecting imports no plugin
        params = [pytest.param(functools.partial(tiny_backbone, name), id=name) for name in names]
    return pytest.mark.parametrize(argname, params)


def _build(name: str, options: dict[str, Any]):
    from zsad.components import create_backbone

    return create_backbone(name, **options)


def _builtin_names(registry) -> list[str]:
    return [info.name for info in registry.status() if info.source == "builtin"]


def check_all_builtins(
    *, backbones: bool = True, prompts: bool = True, heads: bool = True, report: Callable[[str], None] | None = None
) -> list[str]:
    """Run the checks over every built-in backbone variant (tiny random weights), prompt strategy and head.

    Prompt strategies are checked on each distinct text tower (learnable ones where the backbone takes prompts).
    Returns the list of ``"kind:name"`` checked; the first failure raises ``AssertionError`` prefixed with it.

    Example:
        >>> "heads:S5" in check_all_builtins(backbones=False, prompts=False)
        True
    """
    from zsad.components import HEADS, PROMPTS, create_prompts
    from zsad.config import PromptConfig

    done: list[str] = []

    def run(label: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None
        done.append(label)
        if report is not None:
            report(label)
        return result

    built = {}
    if backbones or prompts:
        for test_id, (name, options) in TINY_VARIANTS.items():
            if backbones or test_id in _PROMPT_VARIANTS:
                bb = built[test_id] = _build(name, options)
                if backbones:
                    run(f"backbones:{test_id}", lambda bb=bb: check_backbone(bb))
    if prompts:
        for strategy in _builtin_names(PROMPTS):
            for test_id in _PROMPT_VARIANTS:
                bb = built[test_id]
                made = create_prompts(strategy, PromptConfig(strategy=strategy, checkpoint=None, n_tokens=4))
                if hasattr(made, "bind") and not bb.supports_learnable_prompts:
                    continue  # learned tokens need a text tower that takes them
                run(f"prompts:{strategy}@{test_id}", lambda made=made, bb=bb: check_prompt_strategy(made, bb))
    if heads:
        for head in _builtin_names(HEADS):
            run(f"heads:{head}", lambda head=head: check_head(head))
    return done


# ------------------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------------------
def check_export(
    backbone_or_factory: Any,
    image_size: int | None = None,
    *,
    runtimes: Sequence[str] | None = None,
    atol: float = 1e-4,
) -> dict[str, float]:
    """Export a detector on the backbone and check that each runtime predicts what PyTorch predicts.

    The detector uses fixed prompts, the five image scores and the smoothed pixel map; it is exported to ONNX for
    two classes, and every runtime in ``runtimes`` (default: the installed ones of ``onnxruntime`` and
    ``openvino``) predicts three images of other sizes than the model input. Scores and maps (at the images' own
    sizes) must agree with :meth:`zsad.Detector.predict` within ``atol``. Returns runtime -> max deviation.

    Example:
        >>> deviation = check_export("tips", runtimes=["onnxruntime"])
        >>> list(deviation), deviation["onnxruntime"] < 1e-4
        (['onnxruntime'], True)
    """
    import tempfile
    from pathlib import Path

    import numpy as np

    from zsad.config import DetectorConfig
    from zsad.detector import Detector
    from zsad.export.runners import available_runtimes
    from zsad.export.runtime import ExportedDetector

    bb = _as_backbone(backbone_or_factory)
    size = image_size or bb.default_image_size
    config = DetectorConfig(name="check_export", backbone={"name": type(bb).__name__},
                            prompts={"strategy": "fixed", "checkpoint": None}, preprocess={"image_size": size})
    det = Detector(config, device="cpu", backbone=bb)
    runtimes = list(runtimes) if runtimes is not None else available_runtimes()
    _expect(bool(runtimes), "check_export needs onnxruntime or openvino: pip install 'zsad[onnxruntime]'")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((size // 2 + 3, size + 5, 3), (size + 9, size, 3),
                                                                         (size - 1, size // 3 + 2, 3))]
    names = ["metal_nut", "screw", "metal_nut"]
    expected = det.predict(images, class_name=names)
    deviation: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.onnx"
        det.export(path, ["metal_nut", "screw"], verify=False)
        for runtime in runtimes:
            got = ExportedDetector.load(path, runtime).predict(images, class_name=names)
            worst = 0.0
            for i, (a, b) in enumerate(zip(expected, got)):
                _expect(a.anomaly_map.shape == b.anomaly_map.shape and a.scores.keys() == b.scores.keys(),
                        f"{runtime}: image {i} gives a map of {b.anomaly_map.shape} and scores {sorted(b.scores)}; "
                        f"PyTorch gives {a.anomaly_map.shape} and {sorted(a.scores)}.")
                worst = max(worst, float(np.abs(a.anomaly_map - b.anomaly_map).max()),
                            *(abs(a.scores[k] - b.scores[k]) for k in a.scores))
            _expect(worst <= atol, f"{runtime} deviates from PyTorch by {worst:.3g} (> {atol:g}) on the exported "
                                   f"{type(bb).__name__} detector: a component traces differently than it runs.")
            deviation[runtime] = worst
    return deviation
