"""What an evaluation returns: :class:`ClassEvaluation` per class, :class:`DatasetEvaluation` per dataset and the
:class:`EvaluationReport` of one :func:`~zsad.evaluation.evaluate` call (plain data, no model)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsad.errors import ConfigError
from zsad.evaluation.tables import HEADERS, METRIC_KEYS, format_table
from zsad.runs import jsonable

__all__ = ["FORMAT_VERSION", "ClassEvaluation", "DatasetEvaluation", "EvaluationReport"]

FORMAT_VERSION = 1
"""Version of the files an evaluation writes (``metrics.json``, ``classes/<c>.json``, ``manifest.json``)."""


def _floats(d: Mapping[str, Any]) -> dict[str, float]:
    return {k: (math.nan if v is None else float(v)) for k, v in d.items()}


@dataclass
class ClassEvaluation:
    """The evaluation of one class (what ``classes/<class>.json`` holds).

    Attributes:
        name: the class key of the dataset description.
        metrics: :data:`METRIC_KEYS` -> fraction (NaN = n/a).
        image_scores: image metrics of every computed image score (``{"S1": {"image_auroc": ...}, ...}``).
        images: ``{"total", "normal", "anomalous", "with_mask"}`` counts.
        notes: why a metric is n/a, warnings raised while evaluating (masks resized, grey masks, ...).
        rows: one ``scores.csv`` row per image.
        saved: which optional outputs were written (``{"maps": bool, "overlays": bool}``).
        resumed: True when loaded from a previous run instead of computed.
    """

    name: str
    metrics: dict[str, float]
    image_scores: dict[str, dict[str, float]]
    images: dict[str, int]
    notes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    saved: dict[str, bool] = field(default_factory=dict)
    resumed: bool = False

    def to_dict(self, fingerprint: str) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "class": self.name,
            "fingerprint_sha256": fingerprint,
            "metrics": jsonable(self.metrics),
            "image_scores": jsonable(self.image_scores),
            "images": self.images,
            "notes": self.notes,
            "saved": self.saved,
            "scores": jsonable(self.rows),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassEvaluation:
        return cls(
            name=data["class"],
            metrics=_floats(data["metrics"]),
            image_scores={k: _floats(v) for k, v in data.get("image_scores", {}).items()},
            images=dict(data.get("images", {})),
            notes=list(data.get("notes", [])),
            rows=list(data.get("scores", [])),
            saved=dict(data.get("saved", {})),
            resumed=True,
        )


@dataclass
class DatasetEvaluation:
    """Per-class and mean metrics of one dataset (what ``metrics.json`` holds).

    Attributes:
        name: the dataset name (folder name or ``dataset_name=``).
        path: the dataset description or folder that was read.
        out: the folder the outputs were written to.
        classes: class -> :class:`ClassEvaluation`, in dataset order.
        mean: :data:`METRIC_KEYS` -> mean over the classes where the metric is defined (NaN if none).
        counts: metric -> number of classes that entered the mean.
        settings: recipe, image score, protocol, AUPRO mode, resolution, ``undefined``, prompt list.
    """

    name: str
    path: Path
    out: Path
    classes: dict[str, ClassEvaluation]
    mean: dict[str, float]
    counts: dict[str, int]
    image_scores_mean: dict[str, dict[str, float]]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """``{class: {metric: value}}`` (fractions, NaN = n/a)."""
        return {c: ce.metrics for c, ce in self.classes.items()}

    def table(self, fmt: str = "text") -> str:
        """The table x100 with 2 decimals: ``fmt="text"`` (terminal) or ``"markdown"``."""
        rows = [[c, *(self.classes[c].metrics.get(k, math.nan) for k in METRIC_KEYS)] for c in self.classes]
        rows.append(["Mean", *(self.mean.get(k, math.nan) for k in METRIC_KEYS)])
        headers = ["class", *(HEADERS[k] for k in METRIC_KEYS)]
        n = len(self.classes)
        if any(self.counts.get(k, 0) != n for k in METRIC_KEYS):
            rows.append(["classes in mean", *(str(self.counts.get(k, 0)) for k in METRIC_KEYS)])
        return format_table(headers, rows, fmt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "dataset": self.name,
            "path": str(self.path),
            **self.settings,
            "metrics": list(METRIC_KEYS),
            "classes": {c: jsonable(ce.metrics) for c, ce in self.classes.items()},
            "mean": jsonable(self.mean),
            "counts": dict(self.counts),
            "n_classes": len(self.classes),
            "image_scores": {c: jsonable(ce.image_scores) for c, ce in self.classes.items()},
            "image_scores_mean": jsonable(self.image_scores_mean),
            "images": {c: ce.images for c, ce in self.classes.items()},
            "notes": {"dataset": self.notes, **{c: ce.notes for c, ce in self.classes.items() if ce.notes}},
        }


@dataclass
class EvaluationReport:
    """What :func:`~zsad.evaluation.evaluate` returns: one :class:`DatasetEvaluation` per dataset, and where the
    files are.

    For a single dataset, ``classes``, ``mean`` and ``counts`` are that dataset's.
    """

    out: Path
    datasets: dict[str, DatasetEvaluation]

    def _single(self) -> DatasetEvaluation:
        if len(self.datasets) != 1:
            raise ConfigError(
                f"This report holds {len(self.datasets)} datasets ({', '.join(self.datasets)}); "
                "use report.datasets[name].mean (or .classes, .counts)."
            )
        return next(iter(self.datasets.values()))

    @property
    def classes(self) -> dict[str, dict[str, float]]:
        """``{class: {metric: value}}`` of the (single) dataset."""
        return self._single().metrics

    @property
    def mean(self) -> dict[str, float]:
        """Mean over classes of the (single) dataset."""
        return self._single().mean

    @property
    def counts(self) -> dict[str, int]:
        """Classes that entered each mean, for the (single) dataset."""
        return self._single().counts

    def table(self, fmt: str = "text") -> str:
        """The per-class table of one dataset, or one row (the mean) per dataset for several."""
        if len(self.datasets) == 1:
            return self._single().table(fmt)
        rows = [[name, *(d.mean.get(k, math.nan) for k in METRIC_KEYS)] for name, d in self.datasets.items()]
        return format_table(["dataset", *(HEADERS[k] for k in METRIC_KEYS)], rows, fmt)

    def __str__(self) -> str:
        return self.table()
