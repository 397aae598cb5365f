"""The metadata every exported graph carries: what the graph expects, what it returns, where it came from.

It is one JSON document stored in the model file itself, under the key ``zsad``: in the ONNX ``metadata_props``
(which ONNX Runtime shows as ``custom_metadata_map`` and OpenVINO as ``rt_info["framework"]["zsad"]``), and in the
``rt_info`` of OpenVINO IR files. Readers in any language can use it; for example the input and output
descriptions and the class names in their ``class_index`` order.

``format_version`` changes when the graph's inputs, outputs or the meaning of a field change; a reader refuses
files of a newer version instead of misreading them.

Example:
    >>> from zsad.components import get_recipe
    >>> meta = ExportMetadata.describe(get_recipe("tipsomaly"), ["metal_nut", "screw"], dtype="float32",
    ...                                resample="bilinear", mean=(0, 0, 0), std=(1, 1, 1))
    >>> again = ExportMetadata.from_json(meta.to_json(), source="model.onnx")
    >>> again.class_names, again.score_names, again.image_size
    (('metal_nut', 'screw'), ('S1', 'S2', 'S3', 'S4', 'S5'), 518)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from zsad import __version__
from zsad.config import DetectorConfig, format_validation_error
from zsad.errors import CheckpointError

__all__ = ["FORMAT", "FORMAT_VERSION", "INPUTS", "METADATA_KEY", "OUTPUTS", "ExportMetadata", "ExportPreprocessing"]

#: value of the ``format`` field: marks a file as a zsad export
FORMAT = "zsad.export"
#: the newest format this zsad writes and reads
FORMAT_VERSION = 1
#: the metadata key in the model file
METADATA_KEY = "zsad"

#: graph inputs, in order (``S`` is ``image_size``)
INPUTS = {
    "pixels": "float32 (B, 3, S, S): RGB in [0, 1], resized to S x S as `preprocessing` says; "
    "normalisation is inside the graph",
    "class_index": "int64 (B,): position of each image's class in `class_names`",
}
#: graph outputs, in order
OUTPUTS = {
    "pred_score": "float32 (B,): the recipe's image score (`image_score`); higher = more anomalous",
    "scores": "float32 (B, K): every image score, in the order of `score_names`",
    "anomaly_map": "float32 (B, S, S): smoothed pixel anomaly map at the input size",
}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ExportPreprocessing(_Strict):
    """How images become ``pixels`` (the same pipeline as the PyTorch detector), and the normalisation in the graph."""

    image_size: int
    resample: Literal["bilinear", "bicubic", "nearest"]
    #: ``pil`` resizes 8-bit images with PIL; ``torch`` resizes float images as torch does (PIL float planes here)
    resize_backend: Literal["pil", "torch"] = "pil"
    exif_transpose: bool
    high_bit_depth: Literal["error", "scale", "clip"]
    #: ``(pixels - mean) / std`` is applied inside the graph; ``pixels`` stay in [0, 1]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ExportMetadata(_Strict):
    """Everything needed to run an exported graph and to read its outputs (see the module docstring)."""

    format: Literal["zsad.export"] = FORMAT
    format_version: int = FORMAT_VERSION
    zsad_version: str = __version__
    recipe: DetectorConfig
    class_names: tuple[str, ...]
    score_names: tuple[str, ...]
    image_score: str
    dtype: Literal["float32", "float16"]
    preprocessing: ExportPreprocessing
    inputs: dict[str, str] = INPUTS
    outputs: dict[str, str] = OUTPUTS
    #: library versions the graph was built with (torch, onnx, transformers, ...)
    exported_with: dict[str, str] = {}

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    @classmethod
    def describe(
        cls,
        config: DetectorConfig,
        class_names: Sequence[str],
        *,
        dtype: str,
        resample: str,
        mean: Sequence[float],
        std: Sequence[float],
        exported_with: dict[str, str] | None = None,
    ) -> ExportMetadata:
        """The metadata of a graph built from a detector with ``config`` for ``class_names``."""
        pre = config.preprocess
        return cls(
            recipe=config,
            class_names=tuple(class_names),
            score_names=tuple(config.heads.image_heads),
            image_score=config.heads.image_score,
            dtype=dtype,
            preprocessing=ExportPreprocessing(
                image_size=pre.image_size, resample=resample, resize_backend=pre.resize_backend,
                exif_transpose=pre.exif_transpose,
                high_bit_depth=pre.high_bit_depth, mean=tuple(mean), std=tuple(std),
            ),
            exported_with=exported_with or {},
        )

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | None, *, source: str) -> ExportMetadata:
        """Parse and check the metadata of the model file ``source`` (named in every error)."""
        if not text:
            raise CheckpointError(
                f"{source} is a model file but not one exported by zsad (it has no '{METADATA_KEY}' metadata). "
                "Export a detector with `zsad export --recipe NAME --class-name CLASS --out FILE` or "
                "Detector.export(...), or run other models with their own runtime."
            )
        try:
            doc: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"The '{METADATA_KEY}' metadata of {source} is not valid JSON ({exc}); "
                                  "the file is damaged: export it again.") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError(
                f"{source} has '{METADATA_KEY}' metadata that does not describe a zsad export (format is "
                f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}, expected {FORMAT!r})."
            )
        version = doc.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"{source} has an invalid format_version {version!r}; export it again.")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} was exported by zsad {doc.get('zsad_version', '?')} in format version {version}; this zsad "
                f"({__version__}) reads format versions up to {FORMAT_VERSION}. Upgrade zsad (pip install -U zsad) or "
                "export the model again with this version."
            )
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise CheckpointError(
                format_validation_error(exc, f"the '{METADATA_KEY}' metadata of {source}")
                + ". The file is damaged or was written by another zsad version: export it again."
            ) from None
