"""What an evaluation returns: :class:`ClassEvaluation` per class, :class:`DatasetEvaluation` per dataset and the
:class:`EvaluationReport` of one :func:`~zsad.evaluation.evaluate` call (plain data, no model)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
        references: few-shot: the class's normal reference images (paths relative to the dataset folder);
            ``None`` for zero-shot.
    """

    name: str
    metrics: dict[str, float]
    image_scores: dict[str, dict[str, float]]
    images: dict[str, int]
    notes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    saved: dict[str, bool] = field(default_factory=dict)
    resumed: bool = False
    references: list[str] | None = None

    def to_dict(self, fingerprint: str) -> dict[str, Any]:
        doc = {
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
        if self.references is not None:
            doc["references"] = list(self.references)
        return doc

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
            references=None if data.get("references") is None else list(data["references"]),
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
        settings: recipe, image score, protocol, AUPRO mode, resolution, ``undefined``, prompt list (and
            ``shots``, ``seeds`` for a few-shot run).
        seeds: few-shot runs: seed -> that seed's evaluation (its classes hold the per-image ``rows`` and the
            ``references`` used); ``classes``, ``mean`` and ``counts`` are then the mean over the seeds of each
            class's metrics, and the mean over classes of those. Empty for zero-shot.
        std: few-shot runs: metric -> standard deviation over the seeds of the mean over classes (``ddof=1``; NaN
            for one seed).
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
    seeds: dict[int, DatasetEvaluation] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_classes(cls, name: str, path: Path, out: Path, classes: dict[str, ClassEvaluation],
                     heads: Sequence[str], settings: dict[str, Any], notes: Sequence[str] = ()) -> DatasetEvaluation:
        """The evaluation of a dataset from its classes: means over the classes where each metric is defined."""
        from zsad.metrics import mean_over_classes

        mean, counts = mean_over_classes({c: ce.metrics for c, ce in classes.items()})
        image_scores_mean = {
            h: mean_over_classes({c: ce.image_scores.get(h, {}) for c, ce in classes.items()})[0] for h in heads
        }
        return cls(name, path, out, classes, {k: mean.get(k, math.nan) for k in METRIC_KEYS},
                   {k: counts.get(k, 0) for k in METRIC_KEYS}, image_scores_mean, settings, notes=list(notes))

    @property
    def few_shot(self) -> bool:
        """True for a few-shot run (per-seed results in :attr:`seeds`)."""
        return bool(self.seeds)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """``{class: {metric: value}}`` (fractions, NaN = n/a; few-shot: the mean over the seeds)."""
        return {c: ce.metrics for c, ce in self.classes.items()}

    @property
    def references(self) -> dict[int, dict[str, list[str]]]:
        """Few-shot: ``{seed: {class: [reference paths relative to the dataset folder]}}`` (empty for zero-shot)."""
        return {s: {c: list(ce.references or []) for c, ce in ev.classes.items()} for s, ev in self.seeds.items()}

    def table(self, fmt: str = "text") -> str:
        """The table x100 with 2 decimals: ``fmt="text"`` (terminal) or ``"markdown"``.

        Few-shot: the classes and ``Mean`` rows are means over the seeds, followed by each seed's mean over
        classes and their standard deviation.
        """
        rows = [[c, *(self.classes[c].metrics.get(k, math.nan) for k in METRIC_KEYS)] for c in self.classes]
        rows.append(["Mean", *(self.mean.get(k, math.nan) for k in METRIC_KEYS)])
        for seed, ev in self.seeds.items():
            rows.append([f"Mean (seed {seed})", *(ev.mean.get(k, math.nan) for k in METRIC_KEYS)])
        if len(self.seeds) > 1:
            rows.append(["Std over seeds", *(self.std.get(k, math.nan) for k in METRIC_KEYS)])
        headers = ["class", *(HEADERS[k] for k in METRIC_KEYS)]
        n = len(self.classes)
        if any(self.counts.get(k, 0) != n for k in METRIC_KEYS):
            rows.append(["classes in mean", *(str(self.counts.get(k, 0)) for k in METRIC_KEYS)])
        return format_table(headers, rows, fmt)

    def to_dict(self) -> dict[str, Any]:
        doc = {
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
        if self.few_shot:
            doc["std"] = jsonable(self.std)
            doc["per_seed"] = {
                str(seed): {
                    "classes": {c: jsonable(ce.metrics) for c, ce in ev.classes.items()},
                    "mean": jsonable(ev.mean),
                    "counts": dict(ev.counts),
                    "image_scores": {c: jsonable(ce.image_scores) for c, ce in ev.classes.items()},
                    "image_scores_mean": jsonable(ev.image_scores_mean),
                    "scores": f"{ev.out.name}/scores.csv",
                }
                for seed, ev in self.seeds.items()
            }
            doc["references"] = {str(seed): refs for seed, refs in self.references.items()}
        return doc


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
