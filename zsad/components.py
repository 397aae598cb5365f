"""The four component registries and their public functions.

=================  ==================  ===================================================================
kind               entry-point group   a registered object is ...
=================  ==================  ===================================================================
backbones          ``zsad.backbones``  a callable ``(checkpoint=None, **options) -> Backbone``
prompts            ``zsad.prompts``    a callable ``(PromptConfig) -> PromptStrategy``
heads              ``zsad.heads``      a callable returning an ``ImageHead`` (no arguments) or a
                                       ``PixelHead`` (``sigma=..., truncate=...``)
recipes            ``zsad.recipes``    a ``DetectorConfig``, a dict of one, a path to its JSON, or a callable
                                       returning one
=================  ==================  ===================================================================

Built-ins are registered by import path, so listing imports no model code (and no torch).

Example:
    >>> "tips" in list_backbones() and "tipsomaly" in list_recipes()
    True
    >>> get_recipe("tipsomaly").heads.image_score
    'S5'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from zsad.errors import ConfigError
from zsad.registry import Registry

__all__ = [
    "BACKBONES",
    "PROMPTS",
    "HEADS",
    "RECIPES",
    "list_backbones",
    "create_backbone",
    "register_backbone",
    "list_prompts",
    "create_prompts",
    "register_prompts",
    "list_heads",
    "create_head",
    "register_head",
    "list_recipes",
    "get_recipe",
    "register_recipe",
    "all_registries",
]


def _callable(obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"expected a callable factory, got {type(obj).__name__}")


def _recipe_like(obj: Any) -> None:
    from zsad.config import DetectorConfig

    if not (isinstance(obj, (DetectorConfig, dict, str, Path)) or callable(obj)):
        raise TypeError(f"expected a DetectorConfig, a dict, a JSON path or a callable, got {type(obj).__name__}")


BACKBONES: Registry[Callable[..., Any]] = Registry("backbones", "zsad.backbones", _callable)
PROMPTS: Registry[Callable[..., Any]] = Registry("prompts", "zsad.prompts", _callable)
HEADS: Registry[Callable[..., Any]] = Registry("heads", "zsad.heads", _callable)
RECIPES: Registry[Any] = Registry("recipes", "zsad.recipes", _recipe_like)

BACKBONES.add_lazy("tips", "zsad.backbones.tips:create_tips", "TIPS v1 / TIPSv2 (Google DeepMind) via transformers.")
BACKBONES.add_lazy("open_clip", "zsad.backbones.openclip:create_open_clip", "CLIP models via open_clip.")
BACKBONES.add_lazy("siglip2", "zsad.backbones.siglip2:create_siglip2", "SigLIP / SigLIP2 via transformers.")

PROMPTS.add_lazy("fixed", "zsad.prompts.fixed:fixed_from_config", "Fixed prompt lists for image and pixel scores.")
PROMPTS.add_lazy("learnable", "zsad.prompts.learnable:learnable_from_config", "Learned prompt tokens for both.")
PROMPTS.add_lazy(
    "decoupled", "zsad.prompts.decoupled:decoupled_from_config", "Fixed prompts for images, learned for pixels."
)
PROMPTS.add_lazy(
    "object_agnostic", "zsad.prompts.object_agnostic:object_agnostic_from_config",
    "AnomalyCLIP: learned normal/abnormal contexts for 'object.' / 'damaged object.' with deep prompts.",
)

for _name, _desc in (
    ("S1", "p_a(g_o, G_f): object-centric global token."),
    ("S2", "p_a(g_s, G_f): spatial global token."),
    ("S3", "max(S1, S2)."),
    ("S4", "mean(S1, S2)."),
    ("S5", "S2 + max patch p_a (Tipsomaly default)."),
):
    HEADS.add_lazy(_name, f"zsad.heads.image:{_name.lower()}", _desc)
HEADS.add_lazy("pixel_map", "zsad.heads.pixel:PixelMapHead", "Upsampled, Gaussian-smoothed patch anomaly map.")
HEADS.add_lazy("winclip", "zsad.heads.winclip:winclip_image", "WinCLIP: p_a of the image embedding.")
HEADS.add_lazy("winclip_map", "zsad.heads.winclip:winclip_map", "WinCLIP: harmonic aggregation of window scores.")
HEADS.add_lazy(
    "anomalyclip", "zsad.heads.anomalyclip:anomalyclip_image",
    "AnomalyCLIP: p_a of the global token; trained with the image cross-entropy.",
)
HEADS.add_lazy("patch_memory", "zsad.heads.memory:patch_memory", "Normal references: nearest reference patch.")
HEADS.add_lazy("winclip_memory", "zsad.heads.winclip:winclip_memory", "WinCLIP+ references: patches and windows.")

_RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
for _path in sorted(_RECIPE_DIR.glob("*.json")):
    RECIPES.add(_path.stem, _path, description=json.loads(_path.read_text()).get("description", ""))


# -- backbones ---------------------------------------------------------------------------------------------------
def list_backbones() -> list[str]:
    """Names of all registered backbones (built-in and plugins, without importing plugins)."""
    return BACKBONES.list()


def create_backbone(name: str, /, checkpoint: str | None = None, **options: Any):
    """Build a registered backbone, e.g. ``create_backbone("tips", checkpoint="tips-v1-l14-hr")``."""
    backbone = BACKBONES.get(name)(checkpoint=checkpoint, **options)
    from zsad.backbones.base import Backbone

    if not isinstance(backbone, Backbone):
        from zsad.errors import PluginError

        raise PluginError(
            f"Backbone factory {name!r} returned {type(backbone).__name__}, not a zsad.backbones.base.Backbone; "
            "check it with zsad.testing.check_backbone."
        )
    return backbone


def register_backbone(name: str | None = None, *, override: bool = False, description: str | None = None):
    """Decorator registering a backbone factory at runtime (plugins use the ``zsad.backbones`` entry point)."""
    return BACKBONES.register(name, override=override, description=description)


# -- prompts -----------------------------------------------------------------------------------------------------
def list_prompts() -> list[str]:
    """Names of all registered prompt strategies."""
    return PROMPTS.list()


def create_prompts(name: str, /, config: Any = None, **fields: Any):
    """Build a prompt strategy from a :class:`~zsad.config.PromptConfig` (or its fields as keywords)."""
    from zsad.config import PromptConfig

    cfg = config if config is not None else PromptConfig(strategy=name, **fields)
    return PROMPTS.get(name)(cfg)


def register_prompts(name: str | None = None, *, override: bool = False, description: str | None = None):
    """Decorator registering a prompt-strategy factory ``(PromptConfig) -> PromptStrategy``."""
    return PROMPTS.register(name, override=override, description=description)


# -- heads -------------------------------------------------------------------------------------------------------
def list_heads() -> list[str]:
    """Names of all registered scoring heads (image scores and pixel heads)."""
    return HEADS.list()


def create_head(name: str, /, **kwargs: Any):
    """Build a registered head, e.g. ``create_head("S5")`` or ``create_head("pixel_map", sigma=4)``."""
    return HEADS.get(name)(**kwargs)


def register_head(name: str | None = None, *, override: bool = False, description: str | None = None):
    """Decorator registering a head factory."""
    return HEADS.register(name, override=override, description=description)


# -- recipes -----------------------------------------------------------------------------------------------------
def list_recipes() -> list[str]:
    """Names of all registered recipes."""
    return RECIPES.list()


def get_recipe(name: str):
    """The :class:`~zsad.config.DetectorConfig` of a registered recipe (or of a JSON file path)."""
    from zsad.config import DetectorConfig

    if name not in RECIPES and Path(name).suffix == ".json" and Path(name).is_file():
        return DetectorConfig.load(name)
    obj = RECIPES.get(name)
    if callable(obj) and not isinstance(obj, (DetectorConfig, dict, Path, str)):
        obj = obj()
    if isinstance(obj, DetectorConfig):
        return obj
    if isinstance(obj, dict):
        return DetectorConfig.from_dict(obj, source=f"recipe {name!r}")
    if isinstance(obj, (str, Path)):
        return DetectorConfig.load(obj)
    raise ConfigError(f"Recipe {name!r} is a {type(obj).__name__}, not a DetectorConfig.")


def register_recipe(config: Any, name: str | None = None, *, override: bool = False) -> str:
    """Register a recipe (a ``DetectorConfig``, dict or JSON path); returns its name."""
    from zsad.config import DetectorConfig

    if isinstance(config, (str, Path)):
        config = DetectorConfig.load(config)
    elif isinstance(config, dict):
        config = DetectorConfig.from_dict(config, source="register_recipe")
    name = name or config.name
    RECIPES.add(name, config, override=override, description=config.description)
    return name


def all_registries() -> list[Registry[Any]]:
    """The four registries, for listings (``zsad plugins``)."""
    return [BACKBONES, PROMPTS, HEADS, RECIPES]
