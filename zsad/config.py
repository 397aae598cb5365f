"""Configuration documents: a detector (a *recipe*) is backbone + prompts + heads + preprocessing.

Configs are frozen pydantic models that reject unknown keys; validation errors name the exact field. Device and
dtype are runtime arguments of :class:`~zsad.detector.Detector`, not configuration.

Example:
    >>> cfg = DetectorConfig(backbone={"name": "tips", "checkpoint": "tips-v1-l14-hr"})
    >>> cfg.preprocess.image_size, cfg.heads.image_score, cfg.prompts.strategy
    (518, 'S5', 'decoupled')
    >>> cfg2 = cfg.with_overrides(image_size=336, sigma=2)
    >>> cfg2.preprocess.image_size, cfg2.heads.sigma
    (336, 2.0)
    >>> DetectorConfig.model_validate_json(cfg2.model_dump_json()) == cfg2
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zsad.errors import ConfigError

__all__ = [
    "BackboneConfig",
    "PromptConfig",
    "HeadConfig",
    "PreprocessConfig",
    "TrainingConfig",
    "DetectorConfig",
    "OVERRIDE_ALIASES",
    "format_validation_error",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class BackboneConfig(_Frozen):
    """Which backbone, from which weights, with which options."""

    name: str = Field("tips", description="Registered backbone name (see `zsad.list_backbones()`).")
    checkpoint: str | None = Field(
        None, description="Weights: a folder, a known checkpoint name (`zsad weights list`) or a hub id/tag."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of the factory.")


class PromptConfig(_Frozen):
    """How text prototypes are made."""

    strategy: str = Field("decoupled", description="Registered prompt strategy: fixed, learnable, decoupled, ...")
    fixed: str = Field("industrial", description="Prompt list of the fixed (image-score) prompts.")
    learned_list: str | None = Field(None, description="Prompt list of the learned ensemble (default: `fixed`).")
    checkpoint: str | None = Field(None, description="Learned prompt tokens: built-in name or file.")
    n_tokens: int = Field(8, ge=1, le=64, description="Learnable tokens per state.")
    class_word: str = Field("object", description="Class word of the class-agnostic learned sentences.")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of the factory.")


class HeadConfig(_Frozen):
    """Image-score and pixel-map heads, the memory of normal references, and how similarities are scaled."""

    image_heads: tuple[str, ...] = Field(("S1", "S2", "S3", "S4", "S5"), description="Image scores to compute.")
    image_score: str = Field("S5", description="The image score reported as `pred_score`.")
    pixel: str = Field("pixel_map", description="Registered pixel head.")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the pixel map, in input pixels.")
    truncate: float = Field(4.0, gt=0, description="Gaussian kernel radius in sigmas.")
    memory: str = Field("patch_memory", description="Registered memory of normal references (few-shot).")
    temperature: float | None = Field(
        None, gt=0, description="Fixed softmax temperature of every image-text similarity (WinCLIP, AnomalyCLIP: "
        "0.07); null = the backbone's own similarity."
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Extra keyword arguments of the head factories, by head name (e.g. "
        '`{"winclip_map": {"scales": [2, 3]}}`).',
    )

    @model_validator(mode="after")
    def _score_is_computed(self) -> "HeadConfig":
        if self.image_score not in self.image_heads:
            raise ValueError(
                f"image_score {self.image_score!r} is not among image_heads {list(self.image_heads)}; add it there."
            )
        used = {*self.image_heads, self.pixel, self.memory}
        unused = sorted(set(self.options) - used)
        if unused:
            raise ValueError(
                f"options are given for {unused}, which are not among the heads of this config {sorted(used)}; "
                "key options by the name of an image head, the pixel head or the memory."
            )
        return self


class PreprocessConfig(_Frozen):
    """Input preprocessing (defaults reproduce the official Tipsomaly pipeline)."""

    image_size: int = Field(518, gt=0, description="Square model input size (a multiple of the patch size).")
    resample: Literal["bilinear", "bicubic", "nearest"] | None = Field(
        None, description="PIL resize filter; None = the backbone's (bilinear for TIPS)."
    )
    resize_backend: Literal["pil", "torch"] = Field(
        "pil",
        description="'pil': PIL resize of the 8-bit image (official Tipsomaly); 'torch': float32 torch resize with "
        "antialias, no rounding or clamping (torchvision on tensors, as anomalib).",
    )
    exif_transpose: bool = Field(False, description="Apply EXIF orientation before resizing (official: no).")
    rgb_conversion: Literal["before_resize", "after_resize"] = Field(
        "before_resize",
        description="Convert images to RGB before the resize (official Tipsomaly) or after it, resizing in the "
        "file's own mode (official AnomalyCLIP / torchvision: 'P' images resized with nearest neighbours).",
    )
    high_bit_depth: Literal["error", "scale", "clip"] = Field(
        "error",
        description="16-bit/float images: refuse ('error'), scale to 8 bit ('scale'), or clip at 255 like PIL's "
        "convert('RGB') in the official pipeline ('clip').",
    )


class TrainingConfig(_Frozen):
    """How the recipe's prompts are learned by default (``zsad train``; arguments of ``train_prompts`` override it)."""

    epochs: int = Field(2, ge=1, description="Epochs (Tipsomaly: 2; AnomalyCLIP: 15).")
    batch_size: int = Field(8, ge=1, description="Images per optimiser step (official: 8).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (official: 1e-3).")
    shuffle: bool = Field(
        False, description="A new seeded order every epoch (AnomalyCLIP's shuffling loader) or the dataset order "
        "(Tipsomaly at HEAD)."
    )


class DetectorConfig(_Frozen):
    """A complete detector description; a named recipe is one of these saved as JSON."""

    name: str = Field("custom", description="Recipe name.")
    description: str = Field("", description="One line shown by `zsad recipes`.")
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    heads: HeadConfig = Field(default_factory=HeadConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    batch_size: int = Field(8, ge=1, description="Images per forward pass.")
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v:
            raise ValueError("name must be non-empty")
        return v

    # -- persistence ---------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the config as JSON (atomically)."""
        from zsad._files import write_text

        return write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "DetectorConfig":
        """Read a JSON config; errors name the file and the offending field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist.") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid JSON: {exc}.") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "DetectorConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source)) from None

    def with_overrides(self, **overrides: Any) -> "DetectorConfig":
        """A copy with fields replaced; keys are flat aliases (``image_size``) or dotted paths (``heads.sigma``).

        Shallower paths apply first, so ``{"backbone.options": {...}, "dpam_start": 2}`` keeps the ``dpam_start``
        (``backbone.options.dpam_start``) whatever the order of the keys.
        """
        data = self.model_dump()
        depth = lambda item: OVERRIDE_ALIASES.get(item[0], item[0]).count(".")  # noqa: E731
        for key, value in sorted(overrides.items(), key=depth):
            path = OVERRIDE_ALIASES.get(key, key).split(".")
            node = data
            for depth, part in enumerate(path[:-1]):
                if part not in node and "options" in path[:depth]:  # e.g. heads.options.<head>.<name>
                    node[part] = {}
                if not isinstance(node.get(part), dict):
                    raise ConfigError(_unknown_override(key))
                node = node[part]
            if path[-1] not in node and "options" not in path[:-1]:
                raise ConfigError(_unknown_override(key))
            node[path[-1]] = value
        return DetectorConfig.from_dict(data, source="overrides")


#: flat override names accepted by ``Detector.from_recipe(**overrides)`` and ``--set key=value``
OVERRIDE_ALIASES = {
    "backbone": "backbone.name",
    "backbone_checkpoint": "backbone.checkpoint",
    "prompt_strategy": "prompts.strategy",
    "fixed_prompts": "prompts.fixed",
    "learned_prompts": "prompts.learned_list",
    "prompt_checkpoint": "prompts.checkpoint",
    "n_tokens": "prompts.n_tokens",
    "class_word": "prompts.class_word",
    "image_heads": "heads.image_heads",
    "image_score": "heads.image_score",
    "pixel_head": "heads.pixel",
    "sigma": "heads.sigma",
    "truncate": "heads.truncate",
    "memory": "heads.memory",
    "temperature": "heads.temperature",
    "head_options": "heads.options",
    "resize_backend": "preprocess.resize_backend",
    "image_size": "preprocess.image_size",
    "resample": "preprocess.resample",
    "exif_transpose": "preprocess.exif_transpose",
    "rgb_conversion": "preprocess.rgb_conversion",
    "feature_layers": "heads.options.pixel_map.layers",
    "dpam_start": "backbone.options.dpam_start",
    "high_bit_depth": "preprocess.high_bit_depth",
}


def _unknown_override(key: str) -> str:
    import difflib

    names = sorted(set(OVERRIDE_ALIASES) | {"name", "description", "batch_size"})
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"Unknown recipe override {key!r}.{hint} Use one of {', '.join(names)}, a dotted path such as "
        "'heads.sigma', or 'backbone.options.<name>' / 'prompts.options.<name>' / 'heads.options.<head>.<name>'."
    )


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One readable message per invalid field: ``source: field.path: problem (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"{loc}: {err['msg']}{got}")
    return f"Invalid configuration in {source}: " + "; ".join(lines)
