"""The few-shot protocol of an evaluation: K normal references per class drawn with each seed, and the mean over
the seeds.

``evaluate(..., shots=K, seeds=[s1, s2, ...])`` (``zsad evaluate --shots K --seed s1 s2 ...``) follows the
protocol of the few-shot tables of zero-shot papers (WinCLIP+, APRIL-GAN, AnomalyCLIP): for each seed and each
class, K normal images of the class are drawn from the dataset's **train** split
(:func:`zsad.data.draw_references`: ``numpy.random.default_rng([seed, crc32(class)])``, so a class's draw depends
only on the seed and the class), added as the class's normal references
(:meth:`Detector.add_references <zsad.detector.Detector.add_references>`), the class's **test** images are scored,
and the references are removed again. Every seed is a complete evaluation (its own folder ``seed_<s>/`` with the
per-class results, ``scores.csv``, maps and overlays); the reported numbers are

* per class: the mean over the seeds of each metric;
* ``Mean``: the mean over the classes of those (a metric n/a for a class never enters it, as zero-shot);
* per seed: that seed's per-class metrics and mean over classes, and the standard deviation over the seeds of the
  mean over classes (``ddof=1``).

Example (no model: two seeds of one class, combined):
    >>> from pathlib import Path
    >>> from zsad.evaluation.results import ClassEvaluation, DatasetEvaluation
    >>> def seed(auroc):
    ...     ce = ClassEvaluation("nut", {"image_auroc": auroc}, {}, {"total": 2}, references=["nut/train/good/0.png"])
    ...     return DatasetEvaluation.from_classes("toy", Path("d"), Path("o"), {"nut": ce}, [], {})
    >>> both = combine_seeds({0: seed(0.8), 1: seed(0.9)}, [], {}, Path("o"))
    >>> round(both.mean["image_auroc"], 6), round(both.std["image_auroc"], 6), both.references[1]
    (0.85, 0.070711, {'nut': ['nut/train/good/0.png']})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsad.evaluation.results import ClassEvaluation, DatasetEvaluation
from zsad.evaluation.scorer import relpath
from zsad.evaluation.tables import METRIC_KEYS

if TYPE_CHECKING:  # pragma: no cover
    from zsad.data import AnomalyDataset, Sample

__all__ = ["DRAW_RULE", "combine_seeds", "draw_all", "reference_paths"]

DRAW_RULE = ("zsad.data.draw_references: K distinct normal images of the class's train split, "
             "numpy.random.default_rng([seed, zlib.crc32(class key)]).choice without replacement, in file order")
"""How the references are drawn (recorded in the manifest)."""

Draws = dict[int, dict[str, list["Sample"]]]
"""``{seed: {class: [reference samples]}}``."""


def draw_all(ds: AnomalyDataset, shots: int, seeds: Sequence[int], classes: Sequence[str]) -> Draws:
    """The references of every seed and class (before anything is scored, so that a dataset without a train
    split, or a class with too few normal train images, stops the run at once).

    Raises:
        DatasetError: no train split, or fewer than ``shots`` normal train images for a class (named, with the
            counts).
    """
    from zsad.data import draw_references

    return {seed: draw_references(ds, shots, seed, classes) for seed in seeds}


def reference_paths(draws: Draws, root: Path) -> dict[int, dict[str, list[str]]]:
    """``{seed: {class: [path relative to the dataset folder]}}``: what the manifest and fingerprint record."""
    return {seed: {c: [relpath(s.img_path, root) for s in samples] for c, samples in by_class.items()}
            for seed, by_class in draws.items()}


def _mean_over_seeds(per_seed: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    from zsad.metrics import mean_over_classes

    mean, _ = mean_over_classes(dict(enumerate(per_seed)))
    return {k: mean.get(k, math.nan) for k in keys}


def _std(values: Sequence[float]) -> float:
    arr = np.asarray(values, np.float64)
    return float(np.std(arr, ddof=1)) if arr.size > 1 and np.isfinite(arr).all() else math.nan


def combine_seeds(per_seed: Mapping[int, DatasetEvaluation], heads: Sequence[str], settings: dict[str, Any],
                  out: Path) -> DatasetEvaluation:
    """The few-shot result of a dataset: per class the mean over the seeds, the mean over classes of those, and
    the per-seed evaluations (:attr:`DatasetEvaluation.seeds`) with the standard deviation of their means."""
    first = next(iter(per_seed.values()))
    classes: dict[str, ClassEvaluation] = {}
    for c, ce0 in first.classes.items():
        ces = [ev.classes[c] for ev in per_seed.values()]
        notes: list[str] = []
        for ce in ces:
            notes += [n for n in ce.notes if n not in notes]
        classes[c] = ClassEvaluation(
            name=c,
            metrics=_mean_over_seeds([ce.metrics for ce in ces], METRIC_KEYS),
            image_scores={h: _mean_over_seeds([ce.image_scores.get(h, {}) for ce in ces], list(ce0.image_scores[h]))
                          for h in ce0.image_scores},
            images=dict(ce0.images),
            notes=notes,
            saved={k: all(ce.saved.get(k, False) for ce in ces) for k in ce0.saved},
            resumed=all(ce.resumed for ce in ces),
        )
    report = DatasetEvaluation.from_classes(first.name, first.path, out, classes, heads, settings, first.notes)
    report.seeds = dict(per_seed)
    report.std = {k: _std([ev.mean.get(k, math.nan) for ev in per_seed.values()]) for k in METRIC_KEYS}
    return report
