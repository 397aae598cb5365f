"""Contract checks of backbones, and building registered backbones with tiny random weights."""

from __future__ import annotations

from typing import Any

import torch

from zsad.testing._common import _ATOL, _TEXTS, _check_normalised, _diff, _expect, _fail

#: factory options building each built-in backbone with tiny random weights (no download)
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "tips": {"checkpoint": None, "random_config": "tiny"},
    "open_clip": {"checkpoint": None, "random_config": "tiny"},
    "siglip2": {"checkpoint": None, "random_config": "tiny"},
}

#: test ids -> (registered name, options): every built-in backbone and its notable variants
TINY_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tips": ("tips", TINY_OPTIONS["tips"]),
    "tips-value": ("tips", {**TINY_OPTIONS["tips"], "dense_readout": "value"}),
    "open_clip": ("open_clip", TINY_OPTIONS["open_clip"]),
    "open_clip-anomalyclip": ("open_clip", {**TINY_OPTIONS["open_clip"], "dpam_start": 2, "global_ln_post": False,
                                            "pos_interpolation": "bilinear"}),
    "siglip2": ("siglip2", TINY_OPTIONS["siglip2"]),
    "siglip2-naflex": ("siglip2", {"checkpoint": None, "random_config": "tiny-naflex"}),
}


# ------------------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------------------
def tiny_options(name: str) -> dict[str, Any]:
    """Options building the registered backbone *name* with tiny random weights.

    Built-ins come from :data:`TINY_OPTIONS`; a plugin factory declares them as its ``zsad_tiny_options``
    attribute (e.g. ``create_my_backbone.zsad_tiny_options = {"width": 8}``).

    Example:
        >>> tiny_options("open_clip")
        {'checkpoint': None, 'random_config': 'tiny'}
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
    _check_fixed_temperature(bb, name, f2.patches, t1)
    _check_raw_texts(bb, name, t1)
    # -- optional capabilities
    _check_capabilities(bb, name, pixels, f2)
    # -- learnable prompts
    if bb.supports_learnable_prompts:
        _check_prefix(bb, name)
    if bb.supports_deep_prompts:
        _check_deep_prompts(bb, name)
    # -- bfloat16 weights
    if check_bfloat16:
        _check_bfloat16(bb, name, pixels)
    return bb


def _check_fixed_temperature(bb, name: str, patches: torch.Tensor, texts: torch.Tensor) -> None:
    expected = torch.softmax(patches @ texts.t() / 0.07, dim=-1)
    got = bb.probabilities(patches, texts.unsqueeze(0), temperature=0.07)
    _expect(_diff(got, expected) <= 1e-4, f"{name}.probabilities(..., temperature=0.07) is not softmax(cos / 0.07) "
            "(a fixed temperature replaces the model's similarity; see Backbone.logits).")


def _check_raw_texts(bb, name: str, normalised: torch.Tensor) -> None:
    with torch.no_grad():
        raw = bb.encode_text(_TEXTS, normalize=False)
    _expect(isinstance(raw, torch.Tensor) and raw.dtype == torch.float32 and tuple(raw.shape) == tuple(normalised.shape),
            f"{name}.encode_text(..., normalize=False) returned {getattr(raw, 'shape', type(raw).__name__)} "
            f"{getattr(raw, 'dtype', '')}; expected float32 {tuple(normalised.shape)}.")
    direction = torch.nn.functional.normalize(raw, dim=-1)
    _expect(_diff(direction, normalised) <= 1e-4, f"{name}.encode_text(..., normalize=False) does not point where the "
            "normalised embeddings point: text_features must return the raw embeddings the base class normalises.")


def _check_capabilities(bb, name: str, pixels: torch.Tensor, plain) -> None:
    """Window embeddings, unprojected patches and layers: served when declared, refused otherwise."""
    from zsad.backbones.base import FeatureRequest, sliding_windows
    from zsad.errors import ConfigError

    for attr in ("supports_windows", "supports_unprojected_patches", "supports_deep_prompts"):
        _expect(isinstance(getattr(bb, attr), bool), f"{name}.{attr} must be a bool, got {getattr(bb, attr)!r}.")
    _expect(isinstance(bb.vision_layers, int) and bb.vision_layers >= 0,
            f"{name}.vision_layers must be an int >= 0, got {bb.vision_layers!r}.")
    rows, cols = plain.grid
    scales = tuple(sorted({min(rows, cols), min(2, rows, cols)}))
    wanted = FeatureRequest(
        window_scales=scales if bb.supports_windows else (),
        layers=(1, bb.vision_layers) if bb.vision_layers else (),
        unprojected_patches=bb.supports_unprojected_patches,
    )
    for refused in (FeatureRequest(window_scales=(1,)), FeatureRequest(unprojected_patches=True),
                    FeatureRequest(layers=(bb.vision_layers + 1,))):
        if refused.window_scales and bb.supports_windows or refused.unprojected_patches and bb.supports_unprojected_patches:
            continue
        try:
            bb.encode_image(pixels[:1], refused)
        except ConfigError:
            continue
        _fail(f"{name}.encode_image accepted {refused}, which it does not declare; Backbone.check_request must refuse it.")
    if not wanted:
        return
    with torch.no_grad():
        f = bb.encode_image(pixels, wanted)
        f_one = bb.encode_image(pixels[1:], wanted)
    label = f"{name}.encode_image(pixels, {wanted})"
    _expect(_diff(f.patches, plain.patches) <= 1e-4, f"{label}: the patches change when more features are requested.")
    for scale in wanted.window_scales:
        w = f.windows.get(scale)
        count = sliding_windows(plain.grid, scale).shape[0]
        _expect(w is not None and tuple(w.shape) == (2, count, bb.embed_dim),
                f"{label}.windows[{scale}] is {None if w is None else tuple(w.shape)}, expected (2, {count}, {bb.embed_dim}).")
        _check_normalised(w, f"{label}.windows[{scale}]", bb.embed_dim)
        _expect(_diff(f_one.windows[scale][0], w[1]) <= 1e-4, f"{label}.windows depend on the other images in the batch.")
    if bb.supports_windows and rows == cols:
        full = f.windows[rows][:, 0]  # one window covering the whole grid = the whole image
        _expect(_diff(full, plain.globals["object"]) <= 1e-4, f"{label}: the window covering the whole grid differs "
                "from the global embedding; a window must be pooled and projected like the whole image.")
    if wanted.unprojected_patches:
        u = f.unprojected_patches
        _expect(u is not None and u.ndim == 3 and tuple(u.shape[:2]) == tuple(plain.patches.shape[:2]),
                f"{label}.unprojected_patches is {None if u is None else tuple(u.shape)}, expected (2, N, width).")
        _check_normalised(u, f"{label}.unprojected_patches")
    for layer in wanted.layers:
        x = f.layers.get(layer)
        _expect(x is not None and tuple(x.shape) == tuple(plain.patches.shape),
                f"{label}.layers[{layer}] is {None if x is None else tuple(x.shape)}, expected {tuple(plain.patches.shape)}.")
        _check_normalised(x, f"{label}.layers[{layer}]", bb.embed_dim)


def _check_deep_prompts(bb, name: str) -> None:
    from zsad.errors import ConfigError

    _expect(isinstance(bb.text_layers, int) and bb.text_layers >= 2,
            f"{name}.supports_deep_prompts is True but text_layers={bb.text_layers!r}; declare the number of text "
            "blocks (deep prompts go into blocks 1..text_layers-1).")
    gen = torch.Generator().manual_seed(5)
    deep = [(0.02 * torch.randn(2, bb.prompt_width, generator=gen)).requires_grad_(True)
            for _ in range(bb.text_layers - 1)]
    flags = [p.requires_grad for p in bb.parameters()]
    bb.requires_grad_(False)
    try:
        out = bb.encode_text(_TEXTS, deep=deep)
        _expect(out.requires_grad, f"{name}.encode_text(..., deep=[d]): no gradient reaches the deep prompt.")
        out.sum().backward()
        for i, d in enumerate(deep):
            _expect(d.grad is not None and float(d.grad.abs().max()) > 0,
                    f"{name}.encode_text(..., deep=[...]): deep prompt {i} (text block {i + 1}) gets a zero gradient.")
    finally:
        for p, flag in zip(bb.parameters(), flags):
            p.requires_grad_(flag)
    with torch.no_grad():
        plain = bb.encode_text(_TEXTS)
        moved = bb.encode_text(_TEXTS, deep=[d.detach() for d in deep])
    _expect(_diff(plain, moved) > 1e-6, f"{name}.encode_text ignores deep prompts: with and without them it agrees.")
    try:
        bb.encode_text(_TEXTS, deep=[d.detach() for d in deep] * 2)
    except ConfigError:
        pass
    else:
        _fail(f"{name}.encode_text accepted {2 * len(deep)} deep prompts for a text tower of {bb.text_layers} blocks; "
              "more than text_layers - 1 must raise zsad.errors.ConfigError.")


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

