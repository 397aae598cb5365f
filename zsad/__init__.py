"""zsad: zero-shot anomaly detection in images with vision-language models.

The stable surface is small and imported lazily, so ``import zsad`` stays light (it does not import torch)::

    from zsad import Detector
    det = Detector.from_recipe("tipsomaly")
    result = det.predict("part.png", class_name="metal nut")
    result.pred_score, result.anomaly_map.shape

Example:
    >>> import zsad, sys
    >>> "torch" in sys.modules or zsad.__version__ != ""
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zsad._lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Detector": "zsad.detector",
    "DetectorConfig": "zsad.config",
    "AnomalyResult": "zsad.results",
    "ZsadError": "zsad.errors",
    "list_backbones": "zsad.components",
    "create_backbone": "zsad.components",
    "register_backbone": "zsad.components",
    "list_prompts": "zsad.components",
    "create_prompts": "zsad.components",
    "register_prompts": "zsad.components",
    "list_heads": "zsad.components",
    "create_head": "zsad.components",
    "register_head": "zsad.components",
    "list_recipes": "zsad.components",
    "get_recipe": "zsad.components",
    "register_recipe": "zsad.components",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from zsad.components import (
        create_backbone,
        create_head,
        create_prompts,
        get_recipe,
        list_backbones,
        list_heads,
        list_prompts,
        list_recipes,
        register_backbone,
        register_head,
        register_prompts,
        register_recipe,
    )
    from zsad.config import DetectorConfig
    from zsad.detector import Detector
    from zsad.errors import ZsadError
    from zsad.results import AnomalyResult


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, public=__all__)
