"""The backbone contract every vision-language backbone implements.

A backbone turns a batch of preprocessed images into **global tokens by role** and **patch tokens** on a grid,
all in the joint image-text space, and encodes texts (optionally with learnable prefix embeddings injected the way
its text tower needs). It declares its preprocessing and its similarity. Everything above the backbone (prompts,
heads, training, evaluation) only talks to this contract.

Roles: TIPS has two global tokens, ``"object"`` (1st CLS, g_o) and ``"spatial"`` (2nd CLS, g_s). Single-token
backbones (CLIP, SigLIP2) return the same tensor under both roles.

**What a backbone implements** (a plugin author's checklist; :func:`zsad.testing.check_backbone` checks it all):

* class attributes ``embed_dim``, ``patch_size``, ``default_image_size``, ``preprocessing``, ``similarity``
  (and ``temperature`` for softmax backbones, or an override of :meth:`Backbone.scale_similarities`);
* :meth:`Backbone.image_features` ``(pixels, request) -> ImageFeatures`` with raw (not yet normalised) tensors;
* :meth:`Backbone.text_features` ``(texts, prefix=None) -> (T, D)`` raw text embeddings.

**What the base class does for it:** :meth:`Backbone.encode_image` and :meth:`Backbone.encode_text` check the
inputs (image sizes, what was requested, prompt-token widths) and return fp32, L2-normalised features
(``encode_text(..., normalize=False)`` keeps the raw embeddings, e.g. to average them before normalising);
:meth:`Backbone.probabilities` applies the declared similarity, or a fixed temperature a method asks for.

**Optional capabilities** (declared, defaulting to off; a :class:`FeatureRequest` asks for them):

* ``supports_windows``: window embeddings, each ``s x s`` window of the patch grid run through the image tower as
  its own sequence ``[class token, its s² patch tokens]`` (the tokens keep the position embeddings of their place
  in the full grid) and pooled like the whole image (WinCLIP); windows in :func:`sliding_windows` order;
* ``supports_unprojected_patches``: the patch tokens after the tower's final norm, before the projection into the
  joint space (their own width);
* ``vision_layers > 0``: patch tokens after chosen blocks (1-based), each through the final norm and projection
  (AnomalyCLIP's feature layers);
* ``supports_learnable_prompts`` / ``prompt_width``: ``prefix`` tokens for learnable prompts;
* ``supports_deep_prompts`` / ``text_layers``: learnable tokens inside the text layers (MaPLe / AnomalyCLIP):
  :meth:`Backbone.text_features` then takes ``deep``, one ``(n, prompt_width)`` tensor per text block from the
  second on: ``deep[j]`` replaces the ``n`` tokens right after the start-of-text token at the input of block
  ``j + 1`` (block 0 sees the embedded sequence with its ``prefix``), so at most ``text_layers - 1`` of them.

Method-specific variants of a tower (another attention on chosen blocks, a global token without the final norm,
another interpolation of the position embeddings) are **factory options** of that backbone
(``backbone.options``), so a model built without them is unchanged and the contract above stays the same.

Example (a toy backbone that satisfies the contract; :mod:`zsad.testing` checks real ones):
    >>> import torch
    >>> class Toy(Backbone):
    ...     embed_dim, patch_size, default_image_size, temperature = 4, 14, 28, 0.07
    ...     def image_features(self, pixels, request):
    ...         b = pixels.shape[0]
    ...         return ImageFeatures({"object": torch.ones(b, 4), "spatial": torch.ones(b, 4)},
    ...                              torch.ones(b, 4, 4), (2, 2))
    ...     def text_features(self, texts, prefix=None):
    ...         return torch.ones(len(texts), 4)
    >>> feats = Toy().encode_image(torch.zeros(1, 3, 28, 28))
    >>> feats.patches.shape, feats.grid, round(float(feats.patches[0, 0].norm()), 4)
    (torch.Size([1, 4, 4]), (2, 2), 1.0)
    >>> sliding_windows((3, 3), 2).tolist()
    [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, Literal, Sequence

import torch
from torch import nn

from zsad.errors import ConfigError

__all__ = [
    "Backbone",
    "FeatureRequest",
    "ImageFeatures",
    "Preprocessing",
    "GLOBAL_ROLES",
    "l2_normalize",
    "sliding_windows",
    "check_patch_multiple",
]

GLOBAL_ROLES = ("object", "spatial")


def l2_normalize(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Cast to fp32 and divide by ``max(||x||, eps)`` along the last axis (the official TIPS normalisation)."""
    return torch.nn.functional.normalize(x.float(), dim=-1, eps=eps)


def sliding_windows(grid: tuple[int, int], scale: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Patch indices of every ``scale x scale`` window of a ``(rows, cols)`` grid at stride 1: ``(W, scale²)``.

    Windows are ordered row-major by their top-left patch, and the patches of a window row-major (the order of
    ``torch.nn.functional.unfold`` on the grid of patch indices); patch ``j`` is row ``j // cols``, column
    ``j % cols``.
    """
    rows, cols = int(grid[0]), int(grid[1])
    if scale < 1 or scale > min(rows, cols):
        raise ConfigError(f"A window scale of {scale} does not fit the {rows}x{cols} patch grid; use 1..{min(rows, cols)}.")
    index = torch.arange(rows * cols, device=device).reshape(1, 1, rows, cols).float()
    windows = torch.nn.functional.unfold(index, kernel_size=scale, stride=1)  # (1, scale², W)
    return windows[0].t().round().long().contiguous()


def check_patch_multiple(size: int, patch_size: int, owner: str) -> None:
    """Raise :class:`~zsad.errors.ConfigError` unless ``size`` is a positive multiple of ``patch_size``.

    Example:
        >>> check_patch_multiple(518, 14, "backbone TipsBackbone")
        >>> try:
        ...     check_patch_multiple(500, 14, "checkpoint tips-v1-l14-hr")
        ... except ConfigError as e:
        ...     print(str(e).split(";")[0])
        image_size=500 is not a multiple of the patch size 14 of checkpoint tips-v1-l14-hr
    """
    if size <= 0 or size % patch_size:
        lower = max(patch_size, size // patch_size * patch_size)
        raise ConfigError(
            f"image_size={size} is not a multiple of the patch size {patch_size} of {owner}; use e.g. {lower} or "
            f"{lower + patch_size} (--set image_size={lower + patch_size}, or "
            f"Detector.from_recipe(..., image_size={lower + patch_size}))."
        )


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its pixels: square resize, then ``(x/255 - mean) / std``.

    ``resample`` names the filter of the square resize ("bilinear" for TIPS, "bicubic" for CLIP/SigLIP).
    """

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resample: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


@dataclass(frozen=True)
class FeatureRequest:
    """What a head asks the backbone for beyond the global and patch tokens (empty by default).

    Attributes:
        window_scales: window embeddings for these window sizes (in patches), see :func:`sliding_windows`.
        layers: patch tokens after these blocks of the image tower (1-based), in the joint space.
        unprojected_patches: the final patch tokens before the projection into the joint space.

    Example:
        >>> (FeatureRequest(window_scales=(3,)) | FeatureRequest(window_scales=(2,), layers=(4,))).window_scales
        (2, 3)
        >>> bool(FeatureRequest())
        False
    """

    window_scales: tuple[int, ...] = ()
    layers: tuple[int, ...] = ()
    unprojected_patches: bool = False

    def __or__(self, other: "FeatureRequest") -> "FeatureRequest":
        return FeatureRequest(
            tuple(sorted(set(self.window_scales) | set(other.window_scales))),
            tuple(sorted(set(self.layers) | set(other.layers))),
            self.unprojected_patches or other.unprojected_patches,
        )

    def __bool__(self) -> bool:
        return bool(self.window_scales or self.layers or self.unprojected_patches)


@dataclass
class ImageFeatures:
    """Backbone image outputs: fp32, L2-normalised, in the joint space (as :meth:`Backbone.encode_image` returns).

    Attributes:
        globals: role -> ``(B, D)`` global embeddings (roles ``"object"`` and ``"spatial"``).
        patches: ``(B, N, D)`` patch embeddings, row-major over ``grid``.
        grid: ``(rows, cols)`` of the patch grid, ``rows * cols == N``.
        extras: anything else a backbone wants to pass along (not normalised by the base class).
        windows: scale -> ``(B, W, D)`` window embeddings (when requested).
        layers: block (1-based) -> ``(B, N, D)`` patch embeddings after that block (when requested).
        unprojected_patches: ``(B, N, width)`` patch tokens before the projection (when requested).
    """

    globals: dict[str, torch.Tensor]
    patches: torch.Tensor
    grid: tuple[int, int]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    windows: dict[int, torch.Tensor] = field(default_factory=dict)
    layers: dict[int, torch.Tensor] = field(default_factory=dict)
    unprojected_patches: torch.Tensor | None = None

    def normalized(self) -> "ImageFeatures":
        """A copy with every embedding cast to fp32 and L2-normalised (``extras`` unchanged)."""
        done: dict[int, torch.Tensor] = {}  # one tensor serving several roles stays one tensor

        def once(t: torch.Tensor) -> torch.Tensor:
            if id(t) not in done:
                done[id(t)] = l2_normalize(t)
            return done[id(t)]

        return replace(
            self,
            globals={role: once(g) for role, g in self.globals.items()},
            patches=l2_normalize(self.patches),
            windows={s: l2_normalize(w) for s, w in self.windows.items()},
            layers={i: l2_normalize(t) for i, t in self.layers.items()},
            unprojected_patches=None if self.unprojected_patches is None else l2_normalize(self.unprojected_patches),
        )

    @staticmethod
    def concat(parts: Sequence["ImageFeatures"]) -> "ImageFeatures":
        """The features of consecutive sub-batches as one batch (``extras`` of the first part).

        Example:
            >>> f = ImageFeatures({"object": torch.ones(1, 2)}, torch.zeros(1, 4, 2), (2, 2), layers={3: torch.ones(1, 4, 2)})
            >>> g = ImageFeatures.concat([f, f])
            >>> g.patches.shape, g.layers[3].shape, g.globals["object"].shape
            (torch.Size([2, 4, 2]), torch.Size([2, 4, 2]), torch.Size([2, 2]))
        """
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        cat = lambda get: torch.cat([get(p) for p in parts])  # noqa: E731
        return ImageFeatures(
            {role: cat(lambda p, r=role: p.globals[r]) for role in first.globals},
            cat(lambda p: p.patches),
            first.grid,
            first.extras,
            windows={s: cat(lambda p, s=s: p.windows[s]) for s in first.windows},
            layers={i: cat(lambda p, i=i: p.layers[i]) for i in first.layers},
            unprojected_patches=None if first.unprojected_patches is None else cat(lambda p: p.unprojected_patches),
        )

    def rows(self, index: torch.Tensor | slice) -> "ImageFeatures":
        """The features of some images of the batch (``index`` selects along the batch axis; ``extras`` as is)."""
        pick = lambda t: t[index]  # noqa: E731
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extras":
                out[f.name] = value
            elif isinstance(value, torch.Tensor):
                out[f.name] = pick(value)
            elif isinstance(value, dict):
                out[f.name] = {k: pick(v) for k, v in value.items()}
            else:
                out[f.name] = value
        return ImageFeatures(**out)


class Backbone(nn.Module, abc.ABC):
    """Abstract base class of vision-language backbones (see the module docstring for the contract).

    Subclasses set the class attributes and implement :meth:`image_features` and :meth:`text_features`; they may
    override :meth:`scale_similarities` (default: cosine / ``temperature``) and :meth:`check_image_size`.
    """

    embed_dim: int = 0
    patch_size: int = 14
    default_image_size: int = 224
    global_roles: ClassVar[tuple[str, ...]] = GLOBAL_ROLES
    #: whether :meth:`encode_text` accepts ``prefix`` (learnable prompt tokens)
    supports_learnable_prompts: bool = False
    #: width of the learnable prompt tokens this text tower takes (token-embedding width)
    prompt_width: int = 0
    #: whether :meth:`encode_text` accepts ``deep`` (learnable tokens inside the text layers)
    supports_deep_prompts: bool = False
    #: blocks of the text tower (deep prompts fit blocks 1..text_layers-1); 0 when not declared
    text_layers: int = 0
    #: whether :class:`FeatureRequest` ``window_scales`` can be served
    supports_windows: bool = False
    #: whether :class:`FeatureRequest` ``unprojected_patches`` can be served
    supports_unprojected_patches: bool = False
    #: blocks of the image tower :class:`FeatureRequest` ``layers`` may name (1..vision_layers; 0 = none)
    vision_layers: int = 0
    preprocessing: Preprocessing = Preprocessing()
    #: similarity of images and texts: "softmax" (over [normal, abnormal]) or "sigmoid" (each independently)
    similarity: Literal["softmax", "sigmoid"] = "softmax"
    #: the model's own softmax temperature (logits = cosine / temperature); None = plain cosine
    temperature: float | None = None

    # -- what subclasses implement ----------------------------------------------------------------------------
    @abc.abstractmethod
    def image_features(self, pixels: torch.Tensor, request: FeatureRequest) -> ImageFeatures:
        """Raw image features of preprocessed pixels ``(B, 3, H, W)``; :meth:`encode_image` normalises them.

        ``request`` only asks for what the backbone declares it supports (checked before the call).
        """

    @abc.abstractmethod
    def text_features(self, texts: Sequence[str], prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Raw ``(T, D)`` text embeddings (not normalised) in the joint space.

        ``prefix`` (``(P, prompt_width)``, already checked) are learnable prompt embeddings injected into every
        text in the way this text tower needs; gradients must flow back to it. Backbones with
        ``supports_deep_prompts`` also take ``deep``.
        """

    # -- what callers use -------------------------------------------------------------------------------------
    def check_request(self, request: FeatureRequest) -> None:
        """Raise :class:`~zsad.errors.ConfigError` when ``request`` asks for features this backbone cannot give."""
        name = type(self).__name__
        if request.window_scales and not self.supports_windows:
            raise ConfigError(
                f"The backbone {name} cannot compute window embeddings (window_scales={list(request.window_scales)}); "
                "pick a backbone that declares supports_windows, e.g. 'open_clip'."
            )
        if request.unprojected_patches and not self.supports_unprojected_patches:
            raise ConfigError(
                f"The backbone {name} has no patch tokens before a projection (unprojected_patches); pick a backbone "
                "that declares supports_unprojected_patches, e.g. 'open_clip'."
            )
        bad = [i for i in request.layers if not 1 <= int(i) <= self.vision_layers]
        if bad:
            depth = f"blocks 1..{self.vision_layers}" if self.vision_layers else "no intermediate layers"
            raise ConfigError(
                f"Feature layers {bad} are outside the image tower of {name}, which has {depth}; choose layers in "
                "that range (1-based block numbers)."
            )

    def encode_image(self, pixels: torch.Tensor, request: FeatureRequest | None = None) -> ImageFeatures:
        """Encode preprocessed pixels ``(B, 3, H, W)`` into fp32, L2-normalised :class:`ImageFeatures`."""
        request = request if request is not None else FeatureRequest()
        self.check_request(request)
        for side in pixels.shape[-2:]:
            self.check_image_size(int(side))
        return self.image_features(pixels, request).normalized()

    def encode_text(
        self,
        texts: Sequence[str],
        prefix: torch.Tensor | None = None,
        *,
        deep: Sequence[torch.Tensor] | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Encode texts into ``(T, D)`` fp32 embeddings, L2-normalised unless ``normalize=False``.

        ``prefix`` (``(P, prompt_width)``) are learnable prompt tokens, ``deep`` learnable tokens of the first text
        layers (backbones with ``supports_deep_prompts``); both are checked here, with messages naming the widths.
        """
        name = type(self).__name__
        if prefix is not None:
            if not self.supports_learnable_prompts:
                raise ConfigError(
                    f"The text tower of {name} does not take learnable prompt tokens (supports_learnable_prompts is "
                    "False); use prompts.strategy='fixed'."
                )
            if prefix.ndim != 2 or prefix.shape[-1] != self.prompt_width:
                raise ConfigError(
                    f"Learnable prompt tokens have shape {tuple(prefix.shape)} but the text tower of {name} takes "
                    f"(n_tokens, {self.prompt_width}); use prompts trained for this backbone."
                )
        if deep is not None:
            if not self.supports_deep_prompts:
                raise ConfigError(
                    f"The text tower of {name} does not take deep prompts (learnable tokens inside its layers); use a "
                    "backbone that declares supports_deep_prompts."
                )
            if self.text_layers and len(deep) > self.text_layers - 1:
                raise ConfigError(
                    f"{len(deep)} deep prompts do not fit the text tower of {name}: it has {self.text_layers} blocks, "
                    f"so at most {self.text_layers - 1} deep prompts (one per block after the first); use prompts "
                    "made for this text tower."
                )
            for i, t in enumerate(deep):
                if t.ndim != 2 or t.shape[-1] != self.prompt_width:
                    raise ConfigError(
                        f"Deep prompt {i} has shape {tuple(t.shape)} but the text tower of {name} takes "
                        f"(n_tokens, {self.prompt_width}); use prompts trained for this backbone."
                    )
            raw = self.text_features(texts, prefix, deep=list(deep))  # type: ignore[call-arg]
        else:
            raw = self.text_features(texts, prefix)
        return l2_normalize(raw) if normalize else raw.float()

    # -- similarity --------------------------------------------------------------------------------------------
    def scale_similarities(self, cosine: torch.Tensor) -> torch.Tensor:
        """The model's logits from cosine similarities (default: ``cosine / temperature``)."""
        return cosine / self.temperature if self.temperature is not None else cosine

    def logits(
        self, features: torch.Tensor, prototypes: torch.Tensor, *, temperature: float | None = None
    ) -> torch.Tensor:
        """Logits of ``(..., D)`` features against ``(..., K, D)`` prototypes, shape ``(..., K)``.

        ``temperature`` replaces the model's similarity by ``cosine / temperature`` (WinCLIP and AnomalyCLIP use a
        fixed 0.07 instead of the model's learned scale).
        """
        cosine = features.float() @ prototypes.float().transpose(-1, -2)
        return cosine / temperature if temperature is not None else self.scale_similarities(cosine)

    def probabilities(
        self, features: torch.Tensor, prototypes: torch.Tensor, *, temperature: float | None = None
    ) -> torch.Tensor:
        """``[normal, abnormal]`` probabilities of features ``(B, N, D)`` against prototypes ``(B|1, 2, D)``.

        With a fixed ``temperature`` the probabilities are ``softmax(cosine / temperature)`` whatever the model's
        own similarity; otherwise the declared ``similarity`` applies.
        """
        logits = self.logits(features, prototypes, temperature=temperature)
        if temperature is None and self.similarity == "sigmoid":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=-1)

    def check_image_size(self, size: int) -> None:
        """Raise :class:`~zsad.errors.ConfigError` if this backbone cannot take square inputs of ``size``."""
        check_patch_multiple(size, self.patch_size, f"backbone {type(self).__name__}")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")
