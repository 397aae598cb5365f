"""What the server serves: any object with the :class:`Predictor` contract, and how ``zsad serve`` builds one.

A :class:`~zsad.detector.Detector` is a predictor; so is an exported model (ONNX Runtime / OpenVINO) loaded by
:mod:`zsad.export`, which runs without torch and returns the same :class:`~zsad.results.AnomalyResult`. The
server only ever calls ``predict`` on a list of decoded images with one class name per image, and reads
``config`` to describe the model on ``/healthz``. :func:`zsad.testing.check_predictor` checks the contract.

Example (a tiny random model):
    >>> spec = ModelSpec(recipe="tipsomaly", device="cpu", overrides={"backbone_checkpoint": None,
    ...     "prompt_strategy": "fixed", "prompt_checkpoint": None, "image_size": 56,
    ...     "backbone.options": {"random_config": {}}})
    >>> predictor = spec.load()
    >>> isinstance(predictor, Predictor)
    True
    >>> info = ModelInfo.of(predictor)
    >>> info.recipe, info.image_size, info.image_score
    ('tipsomaly', 56, 'S5')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from zsad.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.results import AnomalyResult

__all__ = ["ModelInfo", "ModelSpec", "Predictor"]


@runtime_checkable
class Predictor(Protocol):
    """The serving contract: the :meth:`zsad.Detector.predict` signature and the recipe it runs.

    ``predict(images, class_name=[...], map_size="original", batch_size=n, progress=False)`` with a list of
    ``n`` RGB-decodable ``PIL.Image`` s and one class name per image returns ``n`` results in order, each with
    ``scores`` (``pred_score == scores[config.heads.image_score]``) and a float32 ``anomaly_map`` at the image's
    size. It raises a :class:`~zsad.errors.ZsadError` for a bad input or class name (the server answers 422 for
    that request alone). It is called from one thread at a time.
    """

    config: DetectorConfig

    def predict(
        self,
        inputs: Any,
        class_name: str | Sequence[str] = "object",
        *,
        map_size: Literal["original", "input"] = "original",
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> AnomalyResult | list[AnomalyResult]: ...


@dataclass(frozen=True)
class ModelInfo:
    """What ``/healthz`` tells clients about the served model."""

    recipe: str
    image_size: int
    image_score: str
    predictor: str

    @classmethod
    def of(cls, predictor: Predictor) -> ModelInfo:
        c = predictor.config
        return cls(c.name, c.preprocess.image_size, c.heads.image_score, type(predictor).__name__)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelSpec:
    """How to build the served predictor: a recipe with overrides, or an exported model file.

    Args:
        recipe: recipe name or JSON file (ignored when ``model`` is given).
        overrides: recipe field overrides (``--set key=value``).
        model: an exported model file (``zsad export``); served through :mod:`zsad.export`, without torch.
        runtime: the runtime of an exported model (``onnxruntime``, ``openvino``; default: chosen by the export).
        device, dtype: where and in which precision a recipe's backbone runs.
        runtime_options: a recipe's runtime options (``compile``, ``tf32``, ``pipeline``:
            :class:`~zsad.runtime.RuntimeOptions` or its fields as a dict; ``zsad serve --compile --no-tf32
            --preprocess device``).
    """

    recipe: str = "tipsomaly"
    overrides: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    runtime: str | None = None
    device: str | None = None
    dtype: str | None = None
    runtime_options: Any = None

    def load(self) -> Predictor:
        """Build the predictor (slow: loads weights); raises :class:`~zsad.errors.ZsadError` with a fix."""
        if self.model is None:
            if self.runtime is not None:
                raise ConfigError("runtime= applies to exported models only; pass model=FILE (--model) too.")
            from zsad.detector import Detector
            from zsad.runtime import RuntimeOptions

            speed = RuntimeOptions.coerce(self.runtime_options).detector_kwargs()
            return Detector.from_recipe(self.recipe, device=self.device, dtype=self.dtype, **speed, **self.overrides)
        return self._load_export()

    def _load_export(self) -> Predictor:
        if self.device is not None or self.dtype is not None:
            raise ConfigError(
                "device/dtype (--device, --dtype) apply to recipes; an exported model runs on its runtime (--runtime)."
            )
        if self.runtime_options is not None:
            raise ConfigError("Runtime options (--compile, --no-tf32, --preprocess) apply to recipes; an exported "
                              "model runs on its runtime (--runtime) and decodes with the exact preprocessing.")
        if self.overrides:
            raise ConfigError(
                f"--set {', '.join(self.overrides)} cannot change an exported model ({self.model}); the recipe is "
                "baked into the export: export again with the overrides instead."
            )
        path = Path(self.model)  # type: ignore[arg-type]
        if not path.exists():
            raise ConfigError(f"Exported model {path} does not exist; pass the file written by the exporter.")
        from zsad.export.runtime import ExportedDetector  # no torch: an exported model runs on its runtime

        return ExportedDetector.load(path, self.runtime)
