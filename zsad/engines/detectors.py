"""Detectors built once per configuration, sharing one backbone when the configurations differ only above it
(e.g. the dataset-specific prompt list of an evaluation over several datasets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.detector import Detector
    from zsad.runtime import RuntimeOptions

__all__ = ["DetectorCache"]


class DetectorCache:
    """``get(config)`` builds a :class:`~zsad.detector.Detector` once per configuration.

    Args:
        device, dtype: as for :class:`~zsad.detector.Detector` (``None``: the given detector's, else the default).
        given: an already built detector to use for its own configuration, and whose backbone is reused for
            configurations with the same backbone section.
        runtime: the detectors' runtime options (:class:`~zsad.runtime.RuntimeOptions`; ``None``: the given
            detector's, else the defaults).
    """

    def __init__(self, device: Any = None, dtype: Any = None, given: Detector | None = None,
                 runtime: RuntimeOptions | None = None):
        self.device = device
        self.dtype = dtype
        self.given = given
        self.runtime = runtime
        self.detectors: dict[str, Detector] = {}
        self.shared_backbone: tuple[Any, Any] | None = None

    def get(self, config: DetectorConfig) -> Detector:
        from zsad.detector import Detector

        key = config.model_dump_json()
        if key in self.detectors:
            return self.detectors[key]
        base = self.given
        backbone = None
        own = base.runtime_options if isinstance(base, Detector) else None  # an exported model has none
        runtime = self.runtime if self.runtime is not None else own
        if base is not None and base.config.backbone == config.backbone:
            if base.config == config and (self.runtime is None or self.runtime == own):
                self.detectors[key] = base
                return base
            backbone = base.backbone
        elif self.shared_backbone is not None and self.shared_backbone[0] == config.backbone:
            backbone = self.shared_backbone[1]
        device = self.device if base is None or self.device is not None else base.device
        dtype = self.dtype if base is None or self.dtype is not None else base.dtype
        det = Detector(config, device=device, dtype=dtype, backbone=backbone,
                       **(runtime.detector_kwargs() if runtime is not None else {}))
        if self.shared_backbone is None:
            self.shared_backbone = (config.backbone, det.backbone)
        self.detectors[key] = det
        return det
